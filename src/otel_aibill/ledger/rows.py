"""Conversion between ``PricedUsage`` and ``usage`` table rows, with validation (pure).

A row that cannot be stored faithfully raises ``InvalidRowError``, naming the span, so the whole
batch is refused rather than stored half-right.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain, repeat, starmap
from operator import attrgetter, itemgetter
from typing import Any, NoReturn

from otel_aibill.errors import BadDataError
from otel_aibill.ledger import money
from otel_aibill.ledger.base import LedgerRow
from otel_aibill.records import attribute_reader
from otel_aibill.usage import TOKEN_FIELDS, PricedUsage, PriceStatus, UsageRecord

INT64_MAX = 2**63 - 1

RESPONSE_BUCKET_NS = 3_600 * 1_000_000_000
"""Width of a response bucket (the start hour): siblings are looked for in the neighbouring ones."""

DIM_COLUMNS = (
    "provider",
    "model",
    "operation",
    "request_model",
    "response_model",
    "service_tier",
    "server_address",
    "scope_name",
    "convention",
    "currency",
    "price_version",
    "price_key",
    "unpriced_reason",
)
"""The columns that take few distinct values: a backend can store each combination once and refer
to it from the row (SQLite's ``dims`` table)."""

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
    "cost_units",
    "billed_units",
    "ingested_at_ns",
    "resp_bucket",
    "duplicate_of",
)
DUPLICATE_OF = INSERT_COLUMNS.index("duplicate_of")
ROW_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time_ns",
    "end_time_ns",
    *TOKEN_FIELDS,
    "response_id",
    "customer",
    "status",
    "cost",
    "billed",
    "markup_rule",
    "cost_units",
    "billed_units",
    "ingested_at_ns",
    "resp_bucket",
    "duplicate_of",
    "dim_id",
)
"""The ``usage_rows`` columns an append fills (``INSERT_COLUMNS`` less ``DIM_COLUMNS``, plus the
row's ``dims`` id)."""
STATEMENT_VALUES = ("ingested_at_ns", "resp_bucket", "status")
"""Columns an insert statement fills itself: the append's time, bound once for all its rows; the
response bucket, worked out from the row's start and response id; the status, from whether the row
has a cost (a priced row has one, an unpriced row none: ``to_params`` refuses anything else)."""
GENERAL_COLUMNS = tuple(c for c in ROW_COLUMNS if c not in STATEMENT_VALUES)
PLAIN_COLUMNS = tuple(c for c in GENERAL_COLUMNS if c != "duplicate_of")
"""What ``extend_params`` binds per row, in order, for a group with sibling duplicates (general)
and one without (plain: ``duplicate_of`` is NULL in every row, which the statement says itself).
Each bound value is work under the GIL (a string costs an allocation and a copy in SQLite), and
the GIL is what the appending thread and the statement thread share."""
_USAGE_FIELD_NAMES = frozenset(UsageRecord.__slots__)
_USAGE_DIMS = tuple(c for c in DIM_COLUMNS if c in _USAGE_FIELD_NAMES)
_PRICED_DIMS = tuple(c for c in DIM_COLUMNS if c not in _USAGE_FIELD_NAMES)
assert (*_USAGE_DIMS, *_PRICED_DIMS) == DIM_COLUMNS  # so a key is the usage part, then the priced part
_DIM_KEYS = attribute_reader(*(f"usage.{c}" for c in _USAGE_DIMS), *_PRICED_DIMS)


def dim_keys(rows: Sequence[PricedUsage]) -> list[tuple[Any, ...]]:
    """The ``DIM_COLUMNS`` values of each row (which ``dims`` row it refers to)."""
    return _DIM_KEYS(rows)


SELECT_COLUMNS = (
    "seq",
    *INSERT_COLUMNS[: INSERT_COLUMNS.index("cost_units")],
    "ingested_at_ns",
    "export_batch",
)


class InvalidRowError(BadDataError):
    """A usage row the ledger refuses to store; the batch it came in is rolled back."""


def _fail(usage: UsageRecord, message: str) -> InvalidRowError:
    return InvalidRowError(f"cannot store usage of span {usage.trace_id}/{usage.span_id}: {message}")


_STATUS = {PriceStatus.PRICED: "priced", PriceStatus.UNPRICED: "unpriced"}
_USAGE_FIELDS = attrgetter(*INSERT_COLUMNS[: INSERT_COLUMNS.index("status")])
_PRICED_FIELDS = attrgetter(
    "status", "cost", "billed", "currency", "price_version", "price_key", "markup_rule", "unpriced_reason"
)
_REQUIRED_TEXTS = itemgetter(0, 1, 5, 6, 7)  # trace_id, span_id, provider, model, operation
_INTS = itemgetter(3, 4, *range(8, 8 + len(TOKEN_FIELDS)))  # start, end, tokens
_NON_NEGATIVE = struct.Struct(f"{2 + len(TOKEN_FIELDS)}Q").pack  # int (or __index__) in [0, 2^64)
_INT64 = struct.Struct(f"{2 + len(TOKEN_FIELDS)}q").pack  # int in [-2^63, 2^63)
_JOIN = "".join  # TypeError unless every item is a str
_CUSTOMER = INSERT_COLUMNS.index("customer")
_RESPONSE_ID = INSERT_COLUMNS.index("response_id")
_START = INSERT_COLUMNS.index("start_time_ns")
_UNITS = money.units
_NOT_FINITE = frozenset("Ny")  # str() of NaN, sNaN, Infinity end with these; finite ones with a digit
_ROW_FIELDS = attribute_reader(*(f"usage.{c}" for c in ROW_COLUMNS[: ROW_COLUMNS.index("status")]))
_ROW_IDS = itemgetter(0, 1)  # trace_id, span_id
_ROW_INTS = itemgetter(3, 4, *range(5, 5 + len(TOKEN_FIELDS)))  # start, end, tokens
_ROW_CUSTOMER = itemgetter(ROW_COLUMNS.index("customer"))
_OWN_OF_PARAMS = itemgetter(*(INSERT_COLUMNS.index(c) for c in PLAIN_COLUMNS[:-1]))  # up to dim_id
assert PLAIN_COLUMNS[:-1] == GENERAL_COLUMNS[:-2]  # then the general ones add duplicate_of
_PRICED = PriceStatus.PRICED


def to_params(priced: PricedUsage, ingested_at_ns: int) -> tuple[Any, ...]:
    """The INSERT parameters (in ``INSERT_COLUMNS`` order) for one row; ``duplicate_of`` is None.

    This runs for every appended row, so each check is one C-level call over a whole group of
    fields (texts joined, integers packed as int64 and uint64); the message naming the bad field is
    only worked out once something is wrong. Producers already validate fields, these checks keep
    junk (floats, NaN, strings for numbers, out-of-range counts) from being stored if one does not.
    """
    usage = priced.usage
    fields = _USAGE_FIELDS(usage)
    texts = _REQUIRED_TEXTS(fields)
    ints = _INTS(fields)
    try:
        _JOIN(texts)
        _NON_NEGATIVE(*ints)
        _INT64(*ints)
    except (TypeError, struct.error):
        raise _fail(usage, _first_bad_text(usage) or _first_bad_int(usage)) from None
    if "" in texts or fields[_CUSTOMER] == "":
        raise _fail(usage, _first_bad_text(usage))
    priced_fields = _PRICED_FIELDS(priced)
    status, cost, billed = priced_fields[:3]
    if type(cost) is Decimal and type(billed) is Decimal and status is PriceStatus.PRICED:
        cost_text = str(cost)
        billed_text = str(billed)
        if cost_text[-1] in _NOT_FINITE or billed_text[-1] in _NOT_FINITE:
            raise _fail(usage, _bad_amounts(priced))
        amounts: tuple[str, str | None, str | None] = ("priced", cost_text, billed_text)
        units: tuple[int | None, ...] = (_UNITS(cost_text), _UNITS(billed_text))
    else:
        amounts = _amounts_slow(priced, status)
        units = tuple(None if text is None else _UNITS(text) for text in amounts[1:])
    bucket = None if fields[_RESPONSE_ID] is None else fields[_START] // RESPONSE_BUCKET_NS
    return fields + amounts + priced_fields[3:] + units + (ingested_at_ns, bucket, None)


def extend_params(
    out: list[Any],
    rows: Sequence[PricedUsage],
    ingested_at_ns: int,
    dim_ids: Sequence[int],
    duplicate_of: Sequence[str | None] | None = None,
) -> bool:
    """Add the bound parameters of ``rows`` to ``out``, row after row: the values of
    ``PLAIN_COLUMNS`` if no row has a ``duplicate_of`` (returns True), else of ``GENERAL_COLUMNS``.
    Same values and checks as ``to_params`` for every row, except the ``DIM_COLUMNS``: the caller
    has checked those when it found their ``dims`` id.

    Appends run this for every row, so the checks are made over the whole group of rows at once
    (C-level calls over all their texts and integers) and the common rows, priced with ``Decimal``
    amounts (or a cost and no billed amount yet: pending usage), are converted inline; any other
    row goes through ``to_params``. Integers of 2^63 and more pass here and are refused by SQLite
    when bound (``diagnose`` names them).
    """
    fields = _ROW_FIELDS(rows)
    texts = list(chain.from_iterable(map(_ROW_IDS, fields)))
    try:
        _JOIN(texts)
        all(starmap(_NON_NEGATIVE, map(_ROW_INTS, fields)))
    except (TypeError, struct.error):
        _refuse(rows, ingested_at_ns)
    if "" in texts or "" in map(_ROW_CUSTOMER, fields):
        _refuse(rows, ingested_at_ns)
    plain = duplicate_of is None or duplicate_of.count(None) == len(rows)
    add = out.extend
    units = _UNITS
    duplicates = duplicate_of or repeat(None)
    for f, priced, duplicate, dim_id in zip(fields, rows, duplicates, dim_ids, strict=False):
        cost = priced.cost
        billed = priced.billed
        if (
            priced.status is not _PRICED
            or type(cost) is not Decimal
            or (billed is not None and type(billed) is not Decimal)
        ):
            add(_OWN_OF_PARAMS(to_params(priced, ingested_at_ns)))
            add((dim_id,) if plain else (duplicate, dim_id))
            continue
        cost_text = str(cost)
        billed_text = None if billed is None else str(billed)  # None: pending, no customer yet
        if cost_text[-1] in _NOT_FINITE or (billed_text is not None and billed_text[-1] in _NOT_FINITE):
            raise _fail(priced.usage, _bad_amounts(priced))
        cost_units = units(cost_text)
        billed_units = None if billed_text is None else units(billed_text)
        add(f)
        if plain:
            add((cost_text, billed_text, priced.markup_rule, cost_units, billed_units, dim_id))
        else:
            add((cost_text, billed_text, priced.markup_rule, cost_units, billed_units, duplicate, dim_id))
    return plain


def check_dims(priced: PricedUsage, key: tuple[Any, ...], ingested_at_ns: int) -> None:
    """Refuse a row whose provider, model or operation (``dim_keys`` values) ``to_params`` refuses,
    before a ``dims`` row is made of them."""
    if any(type(value) is not str or not value for value in key[:3]):
        to_params(priced, ingested_at_ns)
        raise AssertionError("a bad provider, model or operation passed to_params")


def refuse_unhashable(rows: Sequence[PricedUsage], ingested_at_ns: int) -> NoReturn:
    """Raise the ``InvalidRowError`` of the first row with a ``DIM_COLUMNS`` value that is not a
    plain value (a list, a dict...)."""
    for priced, key in zip(rows, dim_keys(rows), strict=True):
        try:
            hash(key)
        except TypeError:
            to_params(priced, ingested_at_ns)
            bad = next(c for c, v in zip(DIM_COLUMNS, key, strict=True) if v.__hash__ is None)
            raise _fail(priced.usage, f"{bad} must be a string, got {_dim_value(priced, bad)!r}") from None
    raise AssertionError("no row has an unhashable value")


def _dim_value(priced: PricedUsage, column: str) -> Any:
    return getattr(priced.usage if column in _USAGE_FIELD_NAMES else priced, column)


def _refuse(rows: Sequence[PricedUsage], ingested_at_ns: int) -> NoReturn:
    """Raise the ``InvalidRowError`` of the first row that ``to_params`` refuses."""
    for priced in rows:
        to_params(priced, ingested_at_ns)
    raise AssertionError("a group check failed but no row was refused")


def _amounts_slow(priced: PricedUsage, status: Any) -> tuple[str, str | None, str | None]:
    """Status and amount texts of a row that is not the common case (priced, with cost and billed)."""
    u = priced.usage
    text = _STATUS.get(status) if isinstance(status, PriceStatus) else None
    if text is None:
        raise _fail(u, f"status must be a PriceStatus, got {status!r}")
    try:
        cost = money.to_text(priced.cost, "cost")
        billed = money.to_text(priced.billed, "billed")
    except (TypeError, ValueError) as exc:
        raise _fail(u, str(exc)) from exc
    if cost is None:
        if text == "priced":
            raise _fail(u, "a priced row needs a cost")
        if billed is not None:
            raise _fail(u, "an unpriced row has no billed amount")
    elif text == "unpriced":
        raise _fail(u, "an unpriced row has no cost")
    return text, cost, billed


def diagnose(rows: Sequence[PricedUsage], error: Exception) -> Exception:
    """What to raise when SQLite refused a batch that passed ``to_params``: the row's own problem
    (a value the fast checks let through, such as an int subclass or > 2^63) if one is found."""
    for priced in rows:
        problem = _first_bad_text(priced.usage) or _first_bad_int(priced.usage, strict=True)
        if problem:
            return _fail(priced.usage, problem)
    return error


def _bad_amounts(priced: PricedUsage) -> str:
    for what, amount in (("cost", priced.cost), ("billed", priced.billed)):
        try:
            money.to_text(amount, what)
        except (TypeError, ValueError) as exc:
            return str(exc)
    raise AssertionError("no bad amount")


def _first_bad_text(u: UsageRecord) -> str:
    for name in ("trace_id", "span_id", "provider", "model", "operation"):
        value = getattr(u, name)
        if type(value) is not str or not value:
            return f"{name} must be a non-empty string, got {value!r}"
    if u.customer == "":
        return "customer must be None or a non-empty string, got ''"
    return ""


def _first_bad_int(u: UsageRecord, *, strict: bool = False) -> str:
    for name in ("start_time_ns", "end_time_ns", *TOKEN_FIELDS):
        value = getattr(u, name)
        if type(value) is not int or not 0 <= value <= INT64_MAX:
            return f"{name} must be an integer in [0, 2^63), got {value!r}"
    return "" if strict else "a field has a value that cannot be stored"


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
