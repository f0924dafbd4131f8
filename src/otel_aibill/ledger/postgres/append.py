"""Appends as bulk loads: binary ``COPY`` into a staging table, then one ``INSERT ... SELECT``.

Per row, Python reads the record's fields into a tuple (one generated reader over the batch)
and adds the row's ``dims`` id; psycopg's C code encodes the tuple for the binary COPY. Every
other check is SQL's: the staging table's constraints refuse empty ids, negative counts,
amounts that are not finite and a status that does not match the amounts, the binary encoders
refuse values of the wrong type. Only when something is refused does Python look at the rows
again (``rows.to_params``) to name the bad one, so a refused batch reads as it does on SQLite.

The insert from the staging table sorts by the dedupe key, so two processes appending
overlapping batches take the key's index entries in one order (no deadlock), and ``ON CONFLICT
DO NOTHING`` makes redelivered spans no-ops. What it inserted comes back as two counts.

Sibling spans (``dedupe.py``): the rows of a batch that carry a response id first lock their
traces' advisory-lock buckets (in order, so batches cannot deadlock), then look up stored
originals, so two processes appending siblings of one call at once bill it once: the second
waits for the first to commit and then sees its row.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import add, itemgetter
from typing import Any, cast

from otel_aibill.ledger.base import AppendBatch, AppendResult
from otel_aibill.ledger.dedupe import Candidate, Original, ResponseKey, find_duplicates
from otel_aibill.ledger.postgres import trace_customers
from otel_aibill.ledger.postgres.database import Connection, Database, DataRefused
from otel_aibill.ledger.postgres.schema import lock_class
from otel_aibill.ledger.rows import (
    InvalidRowError,
    check_dims,
    diagnose,
    dim_keys,
    refuse_unhashable,
    to_params,
)
from otel_aibill.ledger.schema import DIM_COLUMNS, RESPONSE_BUCKET_NS
from otel_aibill.ledger.sqlite import (
    Responses,
    _checked_counts,
    _checked_trace_customers,
    _first_of_each_span,
    _response_keys,
)
from otel_aibill.records import attribute_reader
from otel_aibill.usage import TOKEN_FIELDS, NotBillableReason, PricedUsage

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
_PRICED_COLUMNS = ("status", "cost", "billed", "markup_rule")
_STAGE_COLUMNS = (*_USAGE_COLUMNS, *_PRICED_COLUMNS, "dim_id", "duplicate_of")
_STAGE_TYPES = (
    *("text", "text", "text", "int8", "int8"),
    *("int8",) * len(TOKEN_FIELDS),
    *("text", "text", "text", "numeric", "numeric", "text", "int4", "text"),
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
    " status text NOT NULL CHECK (status IN ('priced', 'unpriced')),"
    " cost numeric CHECK (cost - cost = 0), billed numeric CHECK (billed - billed = 0),"
    ' markup_rule text, dim_id integer NOT NULL, duplicate_of text COLLATE "C",'
    " CHECK ((status = 'priced') = (cost IS NOT NULL)), CHECK (status = 'priced' OR billed IS NULL)"
    ") ON COMMIT DELETE ROWS"
)
"""The staging table, one per connection (created when the pool opens it). ``cost - cost = 0``
is false for NaN and the infinities, on any PostgreSQL version."""
_COPY = f"COPY {STAGE} ({', '.join(_STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_ROW_COLUMNS = ("seq", *_STAGE_COLUMNS[:-2], "ingested_at_ns", "resp_bucket", "duplicate_of", "dim_id")
_INSERT = (
    f"WITH stored AS (INSERT INTO usage_rows ({', '.join(_ROW_COLUMNS)})"
    f" SELECT seq, {', '.join(_STAGE_COLUMNS[:-2])}, %s::bigint,"
    f" CASE WHEN response_id IS NOT NULL THEN start_time_ns / {RESPONSE_BUCKET_NS} END,"
    f" duplicate_of, dim_id FROM (SELECT nextval('usage_seq') AS seq, * FROM {STAGE} OFFSET 0) AS s"
    " ORDER BY start_time_ns, trace_id, span_id ON CONFLICT DO NOTHING RETURNING duplicate_of)"
    " SELECT count(*), count(duplicate_of) FROM stored"
)
"""``seq`` is drawn in batch order (the staging table is read in the order it was written), then
the rows are inserted in key order."""
_LOCK_BUCKETS = 128
"""Advisory locks that serialize sibling checks, by trace (a hash of the id picks one)."""
_LOCK = (
    "SELECT count(pg_advisory_xact_lock(%s, b)) FROM (SELECT DISTINCT hashtext(t) & "
    f"{_LOCK_BUCKETS - 1} AS b FROM unnest(%s::text[]) AS t ORDER BY b OFFSET 0) AS buckets"
)
_STORED_RESPONSES = (
    "SELECT u.seq, u.resp_bucket, d.provider, u.response_id, u.trace_id, u.span_id"
    " FROM unnest(%s::text[], %s::int8[]) AS s(response_id, bucket)"
    " JOIN usage_rows u ON u.response_id = s.response_id"
    " AND u.resp_bucket BETWEEN s.bucket - 1 AND s.bucket + 1"
    " JOIN dims d ON d.id = u.dim_id WHERE u.duplicate_of IS NULL"
)
_FIELDS = attribute_reader(*(f"usage.{c}" for c in _USAGE_COLUMNS), *_PRICED_COLUMNS)
_KEY = itemgetter(0, 1, 2)  # of a Responses field tuple: provider, response id, trace id
_TRACE = itemgetter(2)
_REQUIRED_DIMS = frozenset(("provider", "model", "operation", "scope_name", "convention", "currency"))


class Appender:
    """Appends batches to one PostgreSQL ledger; remembers the ``dims`` ids it has seen."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._dims: dict[tuple[Any, ...], int] = {}

    def append(self, batch: AppendBatch) -> AppendResult:
        now = time.time_ns()
        rows = list(batch.rows)
        responses = _response_keys(rows, now)
        repeated = 0
        if responses is not None and _repeats_a_span(responses):
            try:
                unique = _first_of_each_span(rows)
            except TypeError:  # an unhashable id: the row's checks name it
                _refuse(rows, now, None)
                raise
            repeated, rows = len(rows) - len(unique), unique
            responses = _response_keys(rows, now)
        customers = _checked_trace_customers(batch.trace_customers)
        not_billable = _checked_counts(batch.not_billable)
        if not rows and not customers and not not_billable:
            return AppendResult(duplicate_spans=repeated)
        dim_ids = self._dim_ids(rows, now)
        records = _FIELDS(rows)

        def work(conn: Connection) -> AppendResult:
            marks = _sibling_marks(conn, responses, len(rows)) if responses is not None else None
            with conn.cursor().copy(_COPY) as copy:
                copy.set_types(_STAGE_TYPES)
                write = copy.write_row
                for record in map(add, records, zip(dim_ids, marks or repeat(None), strict=False)):
                    write(record)
            row = conn.execute(_INSERT, (now,)).fetchone()
            stored, duplicates = (int(row[0]), int(row[1])) if row else (0, 0)
            result = AppendResult(
                inserted=stored - duplicates,
                duplicate_spans=repeated + len(rows) - stored,
                duplicate_responses=duplicates,
                new_trace_customers=trace_customers.add(conn, customers, now),
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


def _repeats_a_span(responses: Responses) -> bool:
    """Whether a span with a response id is in the batch twice (distinct span ids, the rule, are
    the cheap test; equal span ids are then compared with their start and trace)."""
    fields = responses.fields
    return len({f[3] for f in fields}) < len(fields) and len({(f[4], f[2], f[3]) for f in fields}) < len(
        fields
    )


def _sibling_marks(conn: Connection, responses: Responses, n: int) -> list[str | None] | None:
    """``duplicate_of`` for each of the ``n`` rows, or None when no row is a sibling duplicate.

    Takes the advisory locks of the rows' traces first: the lookup then sees every sibling
    stored by a transaction that committed before, and one that has not committed yet waits.
    """
    indexes, fields, buckets = responses
    conn.execute(_LOCK, (lock_class(), sorted(set(map(_TRACE, fields)))))
    keys = list(map(_KEY, fields))
    wanted = set(keys)
    pairs = sorted({(f[1], b) for f, b in zip(fields, buckets, strict=True)})
    stored: dict[ResponseKey, list[Original]] = {}
    for seq, bucket, provider, response_id, trace_id, span_id in conn.execute(
        _STORED_RESPONSES, ([p[0] for p in pairs], [p[1] for p in pairs])
    ):
        key = (provider, response_id, trace_id)
        if key in wanted:
            stored.setdefault(key, []).append(Original((0, seq), bucket, span_id))
    if len(wanted) == len(keys) and not stored:
        return None
    seen_twice = {key for key, count in Counter(keys).items() if count > 1}.union(stored)
    involved = list(compress(range(len(keys)), map(seen_twice.__contains__, keys)))
    candidates = [Candidate(indexes[i], keys[i], buckets[i], fields[i][3]) for i in involved]
    duplicates = find_duplicates(
        candidates, ((key, original) for key, originals in stored.items() for original in originals)
    )
    if not duplicates:
        return None
    marks: list[str | None] = [None] * n
    for index, original in duplicates.items():
        marks[index] = original
    return marks


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
    total = dict(counts)
    for reason, n in (
        (NotBillableReason.DUPLICATE_SPAN.value, result.duplicate_spans),
        (NotBillableReason.DUPLICATE_RESPONSE.value, result.duplicate_responses),
    ):
        if n:
            total[reason] = total.get(reason, 0) + n
    items = sorted((reason, n) for reason, n in total.items() if n)
    if not items:
        return
    day = datetime.fromtimestamp(now // 1_000_000_000, tz=UTC).date().isoformat()
    conn.execute(
        "INSERT INTO not_billable_counts (reason, day, count)"
        " SELECT r, %s, n FROM unnest(%s::text[], %s::int8[]) AS x(r, n)"
        " ON CONFLICT (reason, day) DO UPDATE SET count = not_billable_counts.count + excluded.count",
        (day, [r for r, _ in items], [n for _, n in items]),
    )
