"""Which stored rows a ``superseded`` record may replace, the same on every backend (no SQL).

A later span of a call stored earlier brought better information (``samecall.py``); the record
names the stored row by its span (start time, trace id, span id). It replaces that row's usage,
cost and bill when the row is billed (not a sibling duplicate) and not yet exported; a row
attributed to another customer than the record names is left alone and reported, for the caller
to bill for that customer and supersede again. A pending row takes the record's customer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from otel_aibill.usage import PricedUsage

SpanKey = tuple[int, str, str]
"""(start time, trace id, span id): the unique key of a stored row."""


@dataclass(slots=True, frozen=True)
class StoredRow:
    seq: int
    customer: str | None
    duplicate_of: str | None
    export_batch: str | None


@dataclass(slots=True)
class Plan:
    """What a backend does with a batch's ``superseded`` records."""

    replace: list[tuple[PricedUsage, int]] = field(default_factory=list)  # record, seq of its row
    exported: list[PricedUsage] = field(default_factory=list)
    other_customer: list[tuple[PricedUsage, str]] = field(default_factory=list)


def span_key(row: PricedUsage) -> SpanKey:
    usage = row.usage
    return (usage.start_time_ns, usage.trace_id, usage.span_id)


def plan(records: Sequence[PricedUsage], stored: Mapping[SpanKey, StoredRow]) -> Plan:
    """Sort ``records`` by what may be done with them, given the rows ``stored`` under their keys
    (a record without a stored row, or whose row is a sibling duplicate, changes nothing)."""
    out = Plan()
    seen: set[int] = set()
    for record in records:
        row = stored.get(span_key(record))
        if row is None or row.duplicate_of is not None:
            continue
        if row.export_batch is not None:
            out.exported.append(record)
        elif row.customer is not None and row.customer != record.usage.customer:
            out.other_customer.append((record, row.customer))
        elif row.seq not in seen:  # the last word on a row is the first record for it
            seen.add(row.seq)
            out.replace.append((record, row.seq))
    return out
