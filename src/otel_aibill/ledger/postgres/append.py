"""Appends as bulk loads: binary ``COPY`` into a staging table, then one ``INSERT ... SELECT``.

Per row, Python reads the record's fields into a tuple (one generated reader over the batch)
and adds the row's ``dims`` id and ``duplicate_of``; psycopg's C code encodes the tuple for the
binary COPY. The other checks are SQL's: the staging table's constraints refuse empty ids,
negative counts, amounts that are not finite and a status that does not match the amounts; the
binary encoders refuse values of the wrong type. Only when something is refused does Python
look at the rows again (``rows.to_params``) to name the bad one, so a refused batch reads as it
does on SQLite.

The insert from the staging table goes in key order, so two processes appending overlapping
batches take the key's index entries in one order (no deadlock), and ``ON CONFLICT DO NOTHING``
makes redelivered spans no-ops; what it inserted comes back as two counts (billed, duplicates).

Which rows are sibling duplicates is decided by ``siblings.py`` from the stored rows that share
a response id with the batch. Before that lookup the batch takes the advisory locks of its
traces' buckets (in order: batches cannot deadlock), so of two processes appending siblings of
one call at once the second waits for the first to commit, then sees its row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import add, attrgetter, is_
from typing import Any, cast

from otel_aibill.ledger.base import AppendBatch, AppendResult
from otel_aibill.ledger.checks import checked_counts, checked_trace_customers, not_billable_totals, utc_day
from otel_aibill.ledger.postgres import trace_customers
from otel_aibill.ledger.postgres.database import Connection, Database, DataRefused
from otel_aibill.ledger.postgres.schema import LOCK_CLASS
from otel_aibill.ledger.postgres.supersede import supersede
from otel_aibill.ledger.rows import (
    DIM_COLUMNS,
    RESPONSE_BUCKET_NS,
    InvalidRowError,
    check_dims,
    diagnose,
    dim_keys,
    refuse_unhashable,
    to_params,
)
from otel_aibill.ledger.siblings import Responses, StoredResponse, sibling_duplicates, unique_spans
from otel_aibill.records import attribute_reader
from otel_aibill.usage import TOKEN_FIELDS, PricedUsage, PriceStatus

STAGE = "aibill_stage"
_USAGE_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time_ns",
    "end_time_ns",
    *TOKEN_FIELDS,
    "response_id",
    "customer",
)
_PRICED_COLUMNS = ("cost", "billed", "markup_rule")
_STAGE_COLUMNS = (*_USAGE_COLUMNS, *_PRICED_COLUMNS, "dim_id", "duplicate_of")
_STAGE_TYPES = (
    *("text", "text", "text", "int8", "int8"),
    *("int8",) * len(TOKEN_FIELDS),
    *("text", "text", "numeric", "numeric", "text", "int4", "text"),
)
assert len(_STAGE_TYPES) == len(_STAGE_COLUMNS)
_NON_NEGATIVE = ("start_time_ns", "end_time_ns", *TOKEN_FIELDS)
STAGE_TABLE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ("
    " trace_id text COLLATE \"C\" NOT NULL CHECK (trace_id <> ''),"
    " span_id text COLLATE \"C\" NOT NULL CHECK (span_id <> ''),"
    ' parent_span_id text COLLATE "C",'
    + ",".join(f" {c} bigint NOT NULL CHECK ({c} >= 0)" for c in _NON_NEGATIVE)
    + ', response_id text COLLATE "C", customer text COLLATE "C" CHECK (customer <> \'\'),'
    " cost numeric CHECK (cost - cost = 0), billed numeric CHECK (billed - billed = 0),"
    ' markup_rule text, dim_id integer NOT NULL, duplicate_of text COLLATE "C",'
    " CHECK (cost IS NOT NULL OR billed IS NULL)"
    ") ON COMMIT DELETE ROWS"
)
"""The staging table, one per connection (created when the pool opens it). ``cost - cost = 0``
is false for NaN and the infinities, on any PostgreSQL version. There is no status column: a
row is priced exactly when it has a cost (``_check_statuses``), so the insert derives it."""
_COPY = f"COPY {STAGE} ({', '.join(_STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_ROW_COLUMNS = (
    "seq",
    *_STAGE_COLUMNS[:-2],
    "status",
    "ingested_at_ns",
    "resp_bucket",
    "duplicate_of",
    "dim_id",
)
_INSERT = (
    f"WITH stored AS (INSERT INTO usage_rows ({', '.join(_ROW_COLUMNS)})"
    f" SELECT seq, {', '.join(_STAGE_COLUMNS[:-2])},"
    " CASE WHEN cost IS NULL THEN 'unpriced' ELSE 'priced' END, %s::bigint,"
    f" CASE WHEN response_id IS NOT NULL THEN start_time_ns / {RESPONSE_BUCKET_NS} END,"
    f" duplicate_of, dim_id FROM (SELECT nextval('usage_seq') AS seq, * FROM {STAGE} OFFSET 0) AS s"
    " ORDER BY start_time_ns, trace_id, span_id ON CONFLICT DO NOTHING RETURNING duplicate_of)"
    " SELECT count(*), count(duplicate_of) FROM stored"
)
"""``seq`` is drawn in batch order (the staging table is read in the order it was written), then
the rows are inserted in key order."""
LOCK_BUCKETS = 128
"""Advisory locks that serialize sibling checks, by trace (a hash of the trace id picks one)."""
_LOCK = (
    "SELECT count(pg_advisory_xact_lock(%s, b)) FROM (SELECT DISTINCT hashtext(t) & "
    f"{LOCK_BUCKETS - 1} AS b FROM unnest(%s::text[]) AS t ORDER BY b OFFSET 0) AS buckets"
)
_STORED_RESPONSES = (
    "SELECT u.* FROM unnest(%s::text[]) AS r(response_id) CROSS JOIN LATERAL"
    " (SELECT seq, resp_bucket, dim_id, response_id, trace_id, span_id, start_time_ns, duplicate_of"
    " FROM usage_rows WHERE response_id = r.response_id AND resp_bucket = ANY(%s::int8[]) OFFSET 0) AS u"
)
"""One probe of ``usage_response`` per response id of the batch: the cost follows the batch, not
the rows stored in its hours (the ``OFFSET 0`` keeps the planner from turning the probes into a
scan of whole buckets, which it prefers while the table is small or has no statistics). Rows come
with their ``dims`` id; the provider is looked up from it (``Appender._providers``)."""
_FIELDS = attribute_reader(*(f"usage.{c}" for c in _USAGE_COLUMNS), *_PRICED_COLUMNS)
_STATUS = attrgetter("status")
_COST = attrgetter("cost")
_REQUIRED_DIMS = frozenset(("provider", "model", "operation", "scope_name", "convention", "currency"))


class Appender:
    """Appends batches to one PostgreSQL ledger; remembers the ``dims`` ids it has seen."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._dims: dict[tuple[Any, ...], int] = {}
        self._providers: dict[int, str] = {}  # dims id -> provider, for sibling lookups

    def append(self, batch: AppendBatch) -> AppendResult:
        now = time.time_ns()
        rows, responses, repeated = unique_spans(list(batch.rows), now)
        customers = checked_trace_customers(batch.trace_customers)
        not_billable = checked_counts(batch.not_billable)
        if not rows and not customers and not not_billable and not batch.superseded:
            return AppendResult(duplicate_spans=repeated)
        _check_statuses(rows, now)
        dim_ids = self._dim_ids(rows, now)
        records = _FIELDS(rows)
        superseded = list(batch.superseded)
        for record in superseded:
            to_params(record, now)  # the checks of an insert
        superseded_dims = self._dim_ids(superseded, now)

        def work(conn: Connection) -> AppendResult:
            marks: Iterable[str | None] = self._sibling_marks(conn, responses, len(rows))
            with conn.cursor().copy(_COPY) as copy:
                copy.set_types(_STAGE_TYPES)
                write = copy.write_row
                for record in map(add, records, zip(dim_ids, marks, strict=True)):
                    write(record)
            row = conn.execute(_INSERT, (now,)).fetchone()
            stored, duplicates = (int(row[0]), int(row[1])) if row else (0, 0)
            replaced = supersede(conn, superseded, superseded_dims)
            result = AppendResult(
                inserted=stored - duplicates,
                duplicate_spans=repeated + len(rows) - stored,
                duplicate_responses=duplicates,
                new_trace_customers=trace_customers.add(conn, customers, now),
                superseded=len(replaced.replace),
                superseded_exported=len(replaced.exported),
                superseded_other_customer=tuple(replaced.other_customer),
            )
            _count_not_billable(conn, now, not_billable, result)  # last: its rows are shared
            return result

        try:
            return self._db.run(work)
        except InvalidRowError:
            raise
        except DataRefused as exc:
            raise _refuse(rows, now, exc) from exc
        except (TypeError, ValueError, OverflowError) as exc:  # an encoder refused a value
            raise _refuse(rows, now, exc) from exc

    def _dim_ids(self, rows: Sequence[PricedUsage], now: int) -> list[int]:
        """The ``dims`` id of each row: a dict lookup a row; new combinations are stored first, in
        a transaction of their own (an unused combination left by a failed append is harmless)."""
        keys = dim_keys(rows)
        try:
            found = list(map(self._dims.get, keys))
        except TypeError:  # an unhashable value
            refuse_unhashable(rows, now)
        if None not in found:
            return cast(list[int], found)
        missing: dict[tuple[Any, ...], PricedUsage] = {}
        for row, key, known in zip(rows, keys, found, strict=True):
            if known is None and key not in missing:
                check_dims(row, key, now)
                _check_dim_values(row, key)
                missing[key] = row
        try:
            self._dims.update(self._db.run(lambda conn: _store_dims(conn, list(missing))))
        except (DataRefused, ValueError) as exc:
            raise _refuse(rows, now, exc) from exc
        return [self._dims[key] for key in keys]

    def _sibling_marks(self, conn: Connection, responses: Responses | None, n: int) -> list[str | None]:
        """``duplicate_of`` for each of the ``n`` rows (``siblings.sibling_duplicates``), after
        taking the advisory locks of the traces of the rows that carry a response id."""
        if responses is not None:
            conn.execute(_LOCK, (LOCK_CLASS, sorted({f[2] for f in responses.fields})))

        def lookup(buckets: list[int], response_ids: list[str]) -> Iterable[StoredResponse]:
            found = conn.execute(_STORED_RESPONSES, (response_ids, buckets)).fetchall()
            unknown = {row[2] for row in found} - self._providers.keys()
            if unknown:
                self._providers.update(
                    conn.execute("SELECT id, provider FROM dims WHERE id = ANY(%s::int[])", (list(unknown),))
                )
            providers = self._providers
            return [(r[0], r[1], providers[r[2]], *r[3:]) for r in found]

        return sibling_duplicates(responses, n, lookup)[0]


def _check_statuses(rows: Sequence[PricedUsage], now: int) -> None:
    """Refuse a row whose status is not a ``PriceStatus``, or that is priced without a cost or
    unpriced with one (C-level passes over the batch; the row is named only on failure)."""
    statuses = list(map(_STATUS, rows))
    unpriced = list(map(is_, statuses, repeat(PriceStatus.UNPRICED)))
    if statuses.count(PriceStatus.PRICED) + unpriced.count(True) != len(rows) or unpriced != list(
        map(is_, map(_COST, rows), repeat(None))
    ):
        raise _refuse(rows, now, None)


def _check_dim_values(row: PricedUsage, key: tuple[Any, ...]) -> None:
    for column, value in zip(DIM_COLUMNS, key, strict=True):
        if (value is None and column in _REQUIRED_DIMS) or (value is not None and type(value) is not str):
            u = row.usage
            raise InvalidRowError(
                f"cannot store usage of span {u.trace_id}/{u.span_id}: {column} must be a string,"
                f" got {value!r}"
            )


def _store_dims(conn: Connection, keys: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
    texts = [json.dumps(key, ensure_ascii=False) for key in keys]
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO dims (key, {', '.join(DIM_COLUMNS)})"
            f" VALUES (%s, {', '.join(['%s'] * len(DIM_COLUMNS))}) ON CONFLICT (key) DO NOTHING",
            [(text, *key) for text, key in zip(texts, keys, strict=True)],
        )
    ids = dict(conn.execute("SELECT key, id FROM dims WHERE key = ANY(%s::text[])", (texts,)).fetchall())
    return {key: int(ids[text]) for text, key in zip(texts, keys, strict=True)}


def _refuse(rows: Sequence[PricedUsage], now: int, error: BaseException | None) -> InvalidRowError:
    """The ``InvalidRowError`` naming the first row the checks of ``rows.py`` refuse; else one
    carrying what PostgreSQL or its encoders said about the batch."""
    try:
        for row in rows:
            to_params(row, now)
    except InvalidRowError as exc:
        return exc
    if isinstance(error, Exception):
        found = diagnose(rows, error)
        if isinstance(found, InvalidRowError):
            return found
    return InvalidRowError(f"the ledger refused a batch of {len(rows)} rows: {error}")


def _count_not_billable(conn: Connection, now: int, counts: Mapping[str, int], result: AppendResult) -> None:
    """Add the batch's not-billable counts and its duplicates to today's ``not_billable_counts``,
    in reason order (concurrent appends update these rows: one order, no deadlock)."""
    items = sorted(not_billable_totals(counts, result.duplicate_spans, result.duplicate_responses).items())
    if not items:
        return
    conn.execute(
        "INSERT INTO not_billable_counts (reason, day, count)"
        " SELECT r, %s, n FROM unnest(%s::text[], %s::int8[]) AS x(r, n)"
        " ON CONFLICT (reason, day) DO UPDATE SET count = not_billable_counts.count + excluded.count",
        (utc_day(now), [r for r, _ in items], [n for _, n in items]),
    )
