"""Exact conversions between span nanoseconds and the datetimes prices are dated with.

Floats are never involved: a span at 23:59:59.9999999 stays on its day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
_US = timedelta(microseconds=1)


def ns_to_datetime(ns: int) -> datetime:
    """UTC datetime of a span timestamp, truncated to the microsecond (price boundaries are coarser)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(at: datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return ((at - EPOCH) // _US) * 1000


def date_start_ns(day: date) -> int:
    """Start of a UTC day, the instant a genai-prices ``start_date`` takes effect."""
    return datetime_to_ns(datetime.combine(day, time(0), UTC))


def time_of_day_us(value: time) -> int:
    """Microseconds into the UTC day of a (possibly offset-aware) time of day; naive is UTC."""
    if value.tzinfo is not None:
        value = datetime.combine(date(1970, 1, 1), value).astimezone(UTC).time()
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
