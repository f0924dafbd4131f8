"""Checks of what a ledger write is given, shared by every backend (pure; no SQL).

Each check runs before the write's transaction opens, so bad input is refused with a clear
error and nothing is written; the usage rows themselves are checked in ``rows.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from otel_aibill.ledger import money
from otel_aibill.ledger.base import Attribution
from otel_aibill.ledger.rows import InvalidRowError
from otel_aibill.usage import NotBillableReason

AttributionParams = tuple[str, str | None, int | None, str | None, str, str]
"""A checked attribution: customer, billed text, billed units, markup rule, trace id, span id."""


def checked_trace_customers(customers: Mapping[str, str]) -> dict[str, str]:
    """``customers`` as a plain dict; refuses an empty or non-string trace id or customer."""
    out = {}
    for trace_id, customer in customers.items():
        if type(trace_id) is not str or not trace_id or type(customer) is not str or not customer:
            raise InvalidRowError(
                f"trace customer {trace_id!r} -> {customer!r}: both must be non-empty strings"
            )
        out[trace_id] = customer
    return out


def checked_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Not-billable counts by reason, zeros left out; refuses a bad reason or count."""
    for reason, n in counts.items():
        if type(reason) is not str or not reason or type(n) is not int or n < 0:
            raise InvalidRowError(
                f"not-billable count {reason!r}: {n!r} must be a reason and a non-negative int"
            )
    return {str(reason): n for reason, n in counts.items() if n}


def not_billable_totals(
    counts: Mapping[str, int], duplicate_spans: int, duplicate_responses: int
) -> dict[str, int]:
    """What an append adds to the not-billable counts: the batch's own (checked) counts and its
    duplicates, under reasons ``duplicate_span`` and ``duplicate_response``; no zeros."""
    total = dict(counts)
    for reason, n in (
        (NotBillableReason.DUPLICATE_SPAN.value, duplicate_spans),
        (NotBillableReason.DUPLICATE_RESPONSE.value, duplicate_responses),
    ):
        if n:
            total[reason] = total.get(reason, 0) + n
    return {reason: n for reason, n in total.items() if n}


def utc_day(ns: int) -> str:
    """The UTC date (ISO) of a time in nanoseconds since the epoch: the not-billable counts' day."""
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).date().isoformat()


def checked_attributions(updates: Sequence[Attribution]) -> list[AttributionParams]:
    """The values each attribution writes; refuses one without a customer or with a bad amount."""
    out = []
    for a in updates:
        if type(a.customer) is not str or not a.customer:
            raise InvalidRowError(
                f"attribution of {a.trace_id}/{a.span_id} needs a customer, got {a.customer!r}"
            )
        billed = money.to_text(a.billed, "billed")
        units = None if billed is None else money.units(billed)
        out.append((a.customer, billed, units, a.markup_rule, a.trace_id, a.span_id))
    return out


def check_customer_id(customer_id: str) -> None:
    if not customer_id:
        raise ValueError("customer_id must not be empty")


def check_batch_id(batch_id: str) -> None:
    if not batch_id:
        raise ValueError("batch_id must not be empty")


def unique_seqs(seqs: Sequence[int]) -> list[int]:
    """The rows an export batch claims, each once, in the order given."""
    return list(dict.fromkeys(seqs))


def refused_export(wanted: Sequence[int], ok: set[int], batch_id: str) -> ValueError | None:
    """The error for rows of ``wanted`` the backend did not find claimable (``ok``), if any."""
    refused = [s for s in wanted if s not in ok]
    if not refused:
        return None
    return ValueError(
        f"cannot assign rows {refused[:10]}{'...' if len(refused) > 10 else ''} to export batch"
        f" {batch_id!r}: missing, not exportable, or in another batch"
    )
