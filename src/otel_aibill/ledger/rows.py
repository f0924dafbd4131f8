"""Conversion between ``PricedUsage`` and ``usage`` table rows, with validation (pure).

A row that cannot be stored faithfully raises ``InvalidRowError``, naming the span, so the whole
batch is refused rather than stored half-right.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from otel_aibill.ledger import money
from otel_aibill.ledger.base import LedgerRow
from otel_aibill.ledger.schema import RESPONSE_BUCKET_NS
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

INT64_MAX = 2**63 - 1

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)
_OPTIONAL_TEXT = ("request_model", "response_model", "service_tier", "response_id", "server_address")

INSERT_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time_ns",
    "end_time_ns",
    "provider",
    "model",
    "operation",
    *TOKEN_FIELDS,
    *_OPTIONAL_TEXT,
    "scope_name",
    "convention",
    "customer",
    "status",
    "cost",
    "billed",
    "currency",
    "price_version",
    "price_key",
    "markup_rule",
    "unpriced_reason",
    "cost_hi",
    "cost_lo",
    "billed_hi",
    "billed_lo",
    "ingested_at_ns",
    "resp_bucket",
    "duplicate_of",
)
DUPLICATE_OF = INSERT_COLUMNS.index("duplicate_of")
SELECT_COLUMNS = ("seq", *INSERT_COLUMNS[: INSERT_COLUMNS.index("cost_hi")], "ingested_at_ns", "export_batch")


class InvalidRowError(ValueError):
    """A usage row the ledger refuses to store; the batch it came in is rolled back."""


def _fail(usage: UsageRecord, message: str) -> InvalidRowError:
    return InvalidRowError(f"cannot store usage of span {usage.trace_id}/{usage.span_id}: {message}")


_STATUS = {PriceStatus.PRICED: "priced", PriceStatus.UNPRICED: "unpriced"}
_INT = frozenset({int})
_STR = frozenset({str})


def to_params(priced: PricedUsage, ingested_at_ns: int) -> list[Any]:
    """The INSERT parameters (in ``INSERT_COLUMNS`` order) for one row; ``duplicate_of`` is None.

    Written for speed (it runs for every row on the append path): checks are done on whole
    tuples, and the detailed message is only worked out once something is wrong.
    """
    u = priced.usage
    texts = (u.trace_id, u.span_id, u.provider, u.model, u.operation)
    ints = (
        u.start_time_ns,
        u.end_time_ns,
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.cache_write_5m_tokens,
        u.cache_write_1h_tokens,
        u.reasoning_tokens,
        u.input_audio_tokens,
        u.output_audio_tokens,
    )
    if set(map(type, texts)) != _STR or "" in texts:
        raise _fail(u, _first_bad_text(u))
    if set(map(type, ints)) != _INT or min(ints) < 0 or max(ints) > INT64_MAX:
        raise _fail(u, _first_bad_int(u))
    status = _STATUS.get(priced.status)
    if status is None:
        raise _fail(u, f"status must be a PriceStatus, got {priced.status!r}")
    try:
        cost = money.to_text(priced.cost, "cost")
        billed = money.to_text(priced.billed, "billed")
    except (TypeError, ValueError) as exc:
        raise _fail(u, str(exc)) from exc
    if cost is None:
        if status == "priced":
            raise _fail(u, "a priced row needs a cost")
        if billed is not None:
            raise _fail(u, "an unpriced row has no billed amount")
        cost_hi = cost_lo = None
    else:
        if status == "unpriced":
            raise _fail(u, "an unpriced row has no cost")
        cost_hi, cost_lo = money.split(priced.cost)  # type: ignore[arg-type]
    billed_hi, billed_lo = (None, None) if billed is None else money.split(priced.billed)  # type: ignore[arg-type]
    return [
        u.trace_id,
        u.span_id,
        u.parent_span_id,
        *ints[:2],
        u.provider,
        u.model,
        u.operation,
        *ints[2:],
        u.request_model,
        u.response_model,
        u.service_tier,
        u.response_id,
        u.server_address,
        u.scope_name,
        u.convention,
        u.customer,
        status,
        cost,
        billed,
        priced.currency,
        priced.price_version,
        priced.price_key,
        priced.markup_rule,
        priced.unpriced_reason,
        cost_hi,
        cost_lo,
        billed_hi,
        billed_lo,
        ingested_at_ns,
        None if u.response_id is None else u.start_time_ns // RESPONSE_BUCKET_NS,
        None,
    ]


def _first_bad_text(u: UsageRecord) -> str:
    for name in ("trace_id", "span_id", "provider", "model", "operation"):
        value = getattr(u, name)
        if type(value) is not str or not value:
            return f"{name} must be a non-empty string, got {value!r}"
    raise AssertionError("no bad text field")


def _first_bad_int(u: UsageRecord) -> str:
    for name in ("start_time_ns", "end_time_ns", *TOKEN_FIELDS):
        value = getattr(u, name)
        if type(value) is not int or not 0 <= value <= INT64_MAX:
            return f"{name} must be an integer in [0, 2^63), got {value!r}"
    raise AssertionError("no bad integer field")


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def from_row(row: Sequence[Any]) -> LedgerRow:
    """A ``LedgerRow`` from a row selected as ``SELECT_COLUMNS``."""
    (seq, trace_id, span_id, parent, start, end, provider, model, operation) = row[:9]
    tokens = dict(zip(TOKEN_FIELDS, row[9 : 9 + len(TOKEN_FIELDS)], strict=True))
    (request_model, response_model, service_tier, response_id, server_address, scope_name, convention,
     customer, status, cost, billed, currency, price_version, price_key, markup_rule, unpriced_reason,
     ingested_at_ns, export_batch) = row[9 + len(TOKEN_FIELDS) :]  # fmt: skip
    usage = UsageRecord(
        trace_id=trace_id,
        span_id=span_id,
        start_time_ns=start,
        end_time_ns=end,
        provider=provider,
        model=model,
        operation=operation,
        request_model=request_model,
        response_model=response_model,
        service_tier=service_tier,
        response_id=response_id,
        server_address=server_address,
        scope_name=scope_name,
        convention=convention,
        customer=customer,
        parent_span_id=parent,
        **tokens,
    )
    priced = PricedUsage(
        usage=usage,
        status=PriceStatus(status),
        cost=_decimal(cost),
        billed=_decimal(billed),
        currency=currency,
        price_version=price_version,
        price_key=price_key,
        markup_rule=markup_rule,
        unpriced_reason=unpriced_reason,
    )
    ingested_at = ns_to_datetime(ingested_at_ns)
    return LedgerRow(seq=seq, priced=priced, ingested_at=ingested_at, export_batch=export_batch)


def ns_to_datetime(ns: int) -> datetime:
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=rest // 1000)


def datetime_to_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
