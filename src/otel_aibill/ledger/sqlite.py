"""The SQLite ledger: embedded, WAL, one writer connection, a read connection per thread.

Writes run in ``BEGIN IMMEDIATE`` transactions on the single writer connection, guarded by a
lock (other processes wait on ``busy_timeout``); with WAL, readers in other threads and processes
never block the writer nor see a half-written batch. Schema and key design: ``schema.py``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from functools import lru_cache, partial
from itertools import compress, repeat
from operator import is_not, not_
from typing import Any, cast

from otel_aibill.db import sqlite as db_sqlite
from otel_aibill.ledger import money, rollup
from otel_aibill.ledger.base import (
    AppendBatch,
    AppendResult,
    Attribution,
    Customer,
    LedgerRow,
    UsageQuery,
    UsageSummary,
)
from otel_aibill.ledger.checks import (
    check_batch_id,
    check_customer_id,
    checked_attributions,
    checked_counts,
    checked_trace_customers,
    not_billable_totals,
    refused_export,
    unique_seqs,
    utc_day,
)
from otel_aibill.ledger.folding import FoldWorker
from otel_aibill.ledger.rows import (
    DIM_COLUMNS,
    GENERAL_COLUMNS,
    PLAIN_COLUMNS,
    RESPONSE_BUCKET_NS,
    ROW_COLUMNS,
    SELECT_COLUMNS,
    check_dims,
    datetime_to_ns,
    diagnose,
    dim_keys,
    extend_params,
    from_row,
    refuse_unhashable,
)
from otel_aibill.ledger.schema import LEDGER
from otel_aibill.ledger.siblings import StoredResponse, sibling_duplicates, unique_spans
from otel_aibill.ledger.stepper import Running, Stepper
from otel_aibill.ledger.summary import DAY_NS, PENDING_CUSTOMER, Part, SummaryBuilder, group_expressions, plan
from otel_aibill.ledger.url import SqliteOptions, parse_sqlite_url
from otel_aibill.usage import PricedUsage

_log = logging.getLogger(__name__)

# Binding None makes the sqlite3 module look for an adapter: a failed registry lookup and two
# failed attribute lookups for every NULL parameter, measured at about 3x the cost of binding an
# int (a usage row has several NULLs). With an adapter registered for None the first lookup
# succeeds and the C-level ``{}.get`` returns None, which binds as NULL. The registry is
# process-wide, and this changes what None binds as nowhere: it only makes it cheaper.
_NO_ADAPTERS: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NO_ADAPTERS.get)
_CHUNK = 500  # ids per IN (...) list, well under SQLite's parameter limit
_DIMS = "CROSS JOIN dims ON dims.id = usage_rows.dim_id"
"""``usage_rows`` with their ``dims`` columns (what the ``usage`` view shows); CROSS JOIN keeps
``usage_rows`` the outer loop, so its indexes (and INDEXED BY hints) drive every query."""


def _select(hint: str = "") -> str:
    """SELECT of ``SELECT_COLUMNS`` rows, with an optional index hint on ``usage_rows``."""
    return f"SELECT {', '.join(SELECT_COLUMNS)} FROM usage_rows {hint} {_DIMS}"


_SELECT = _select()
_FIND_DIM = (
    f"SELECT id FROM dims INDEXED BY dims_values WHERE {' AND '.join(f'{c} IS ?' for c in DIM_COLUMNS)}"
)
_ADD_DIM = f"INSERT INTO dims ({', '.join(DIM_COLUMNS)}) VALUES ({', '.join('?' * len(DIM_COLUMNS))})"
_BILLABLE = "duplicate_of IS NULL"
_EXPORTABLE = (
    "export_batch IS NULL AND customer IS NOT NULL AND billed IS NOT NULL"
    " AND status = 'priced' AND duplicate_of IS NULL"
)
_ATTRIBUTABLE = (
    "trace_id = ? AND span_id = ? AND customer IS NULL AND duplicate_of IS NULL"
    " AND (status = 'priced' OR ? IS NULL)"
)
_PAGE_SIZE = 16_384  # new databases only; fewer page writes a commit than 4096 (measured ~+8%)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def migrate(conn: sqlite3.Connection, *, target: int | None = None, where: str = "the database") -> int:
    """Bring the ledger schema to ``target`` (default: latest) in one transaction; returns the version."""
    rollup.register_functions(conn)  # migration 5 computes units in SQL
    return db_sqlite.migrate(conn, LEDGER, target=target, where=where)


def schema_version(conn: sqlite3.Connection) -> int:
    return db_sqlite.version_of(conn, LEDGER)


class SqliteLedger:
    """``Ledger`` on one SQLite file (or ``:memory:``, where reads share the writer connection)."""

    def __init__(self, options: SqliteOptions | str) -> None:
        self.options = parse_sqlite_url(options) if isinstance(options, str) else options
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._writer = self._connect(read_only=False)
        try:
            migrate(self._writer, where=self.options.path)
        except BaseException:
            self._writer.close()
            raise
        self._folder = (
            None
            if self.options.in_memory or not self.options.background_fold
            else FoldWorker(lambda: self._connect(read_only=True), self._write)
        )
        self._stepper = None if self.options.in_memory else Stepper()
        limit = self._writer.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._group = max(_SMALLEST_GROUP, min(_GROUP, (limit - 1) // len(GENERAL_COLUMNS)))
        self._dims: dict[tuple[Any, ...], int] = {}  # dim_keys values -> dims.id (ids never change)

    # -- connections ---------------------------------------------------------------------------

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        opts = self.options
        conn = sqlite3.connect(
            opts.path, isolation_level=None, check_same_thread=False, timeout=opts.busy_timeout_ms / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {int(opts.busy_timeout_ms)}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA cache_size = -{max(opts.cache_size_kib // 4, 2048)}")
            return conn
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # no-op unless the database is still empty
        rollup.register_functions(conn)
        if not opts.in_memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.close()
                raise RuntimeError(f"cannot enable WAL journal mode on {opts.path} (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {opts.synchronous.upper()}")
        conn.execute(f"PRAGMA cache_size = -{int(opts.cache_size_kib)}")
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for the duration of the block."""
        if self.options.in_memory:
            with self._lock:
                self._check_open()
                yield self._writer
            return
        self._check_open()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(read_only=True)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the ledger is closed")

    def close(self) -> None:
        if self._folder is not None:
            self._folder.close()
        if self._stepper is not None:
            self._stepper.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._writer.close()

    def wait_for_rollup(self, timeout: float | None = None) -> bool:
        """Until no background fold is pending (True) or ``timeout`` passed (False). Summaries
        are exact either way; this is for callers that want the rollup current (tests, benchmarks)."""
        return True if self._folder is None else self._folder.wait_idle(timeout)

    def schema_version(self) -> int:
        with self._read() as conn:
            return schema_version(conn)

    # -- writes --------------------------------------------------------------------------------

    def append(self, batch: AppendBatch) -> AppendResult:
        """Store a batch atomically; redelivered spans and sibling duplicates are counted, not billed.

        One bad row refuses the whole batch (nothing of it is stored). Duplicate counts are also
        added to ``not_billable_counts`` (reasons ``duplicate_span`` and ``duplicate_response``),
        so callers should not count them again.
        """
        now = time.time_ns()
        rows, responses, repeated = unique_spans(list(batch.rows), now)
        customers = checked_trace_customers(batch.trace_customers)
        not_billable = checked_counts(batch.not_billable)
        if not rows and not customers and not not_billable:
            return AppendResult(duplicate_spans=repeated)
        taken: list[rollup.Fold] = []
        try:
            with self._write() as conn:
                duplicate_of, marked, already = sibling_duplicates(
                    responses, len(rows), partial(_stored_responses, conn)
                )
                try:
                    changed, new_dims = self._insert(conn, rows, now, duplicate_of)
                except (sqlite3.ProgrammingError, sqlite3.IntegrityError, OverflowError) as exc:
                    raise diagnose(rows, exc) from exc
                result = AppendResult(
                    inserted=changed - (marked - already),
                    duplicate_spans=repeated + len(rows) - changed,
                    duplicate_responses=marked - already,
                    new_trace_customers=self._add_trace_customers(conn, customers, now),
                )
                _count_not_billable(conn, now, not_billable, result)
                fold_due = self._rollup_step(conn, changed, taken)
        finally:
            if taken and self._folder is not None:
                self._folder.taken_done()
        self._dims.update(new_dims)  # committed: from now on these ids exist
        if fold_due and self._folder is not None:
            self._folder.request()
        return result

    def _rollup_step(self, conn: sqlite3.Connection, changed: int, taken: list[rollup.Fold]) -> bool:
        """Write a fold the worker computed meanwhile (noted in ``taken``); fold inline when due
        without a worker. Returns whether the worker should compute a fold."""
        if self._folder is not None and (computed := self._folder.take()) is not None:
            taken.append(computed)
            self._folder.write_fold(conn, computed)
        if not changed:
            return False
        start, last = rollup.tail(conn)
        due = last - start >= rollup.FOLD_EVERY
        if due and (self._folder is None or last - start >= _FOLD_BEHIND * rollup.FOLD_EVERY):
            # no worker, or one starved of CPU (it runs at the lowest priority): fold here, so
            # the tail that summaries read stays short under any load
            rollup.fold_quietly(conn, at_least=rollup.FOLD_EVERY)
        return due

    def _dim_ids(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[PricedUsage],
        now: int,
        new: dict[tuple[Any, ...], int],
        before_lookup: Callable[[], None] = lambda: None,
    ) -> list[int]:
        """The ``dims`` id of each row. Known combinations cost a dict lookup a row; others are
        found or added in ``conn`` (after ``before_lookup``, which frees the connection) and
        noted in ``new``: they join the cache only once the transaction has committed."""
        keys = dim_keys(rows)
        try:
            found = list(map(self._dims.get, keys))
        except TypeError:  # an unhashable value
            refuse_unhashable(rows, now)
        if None not in found:
            return cast(list[int], found)
        before_lookup()
        ids: list[int] = []
        for row, key, known in zip(rows, keys, found, strict=True):
            if known is None:
                known = new.get(key)
                if known is None:
                    check_dims(row, key, now)
                    stored = conn.execute(_FIND_DIM, key).fetchone()
                    known = stored[0] if stored else conn.execute(_ADD_DIM, key).lastrowid
                    new[key] = known = int(known or 0)
            ids.append(known)
        return ids

    def _insert(
        self, conn: sqlite3.Connection, rows: list[PricedUsage], now: int, duplicate_of: list[str | None]
    ) -> tuple[int, dict[tuple[Any, ...], int]]:
        """Insert ``rows`` with multi-row statements (``_insert_sql``); returns the rows stored and
        the ``dims`` combinations added (``_dim_ids``).

        A statement per group of rows opens the table's and indexes' cursors once per group
        instead of once per row, which makes the indexed insert about a quarter cheaper. With
        more than one group and a ``Stepper``, the next group's parameters are built while
        SQLite inserts the previous group (``stepper.py``). Sibling duplicates go last, in groups
        of their own, so every other group binds no ``duplicate_of`` (``extend_params``); their
        place among the batch's rows means nothing (a batch's rows arrive together).
        """
        changed = 0
        new_dims: dict[tuple[Any, ...], int] = {}
        running: list[Running] = []  # the statement the stepper is running, if any
        stepper = self._stepper if len(rows) >= 2 * self._group else None

        def finish() -> None:
            nonlocal changed
            if running:
                changed += running.pop().result()

        try:
            for group, marks in _duplicates_last(rows, duplicate_of, self._group):
                count = len(group)
                ids = self._dim_ids(conn, group, now, new_dims, before_lookup=finish)
                params: list[Any] = [now]
                plain = extend_params(params, group, now, ids, marks)
                finish()
                if count < _SMALLEST_GROUP:  # a few rows left: one statement each
                    width = len(PLAIN_COLUMNS if plain else GENERAL_COLUMNS)
                    each = [[now, *params[i : i + width]] for i in range(1, len(params), width)]
                    changed += conn.executemany(_insert_sql(1, plain), each).rowcount
                elif stepper is not None:
                    running.append(stepper.start(conn, _insert_sql(count, plain), params))
                else:
                    changed += conn.execute(_insert_sql(count, plain), params).rowcount
            finish()
        finally:
            if running:  # stopped by an error here: let the statement end first
                with suppress(BaseException):  # the error that stopped us is the one to raise
                    running.pop().result()
        return changed, new_dims

    @staticmethod
    def _add_trace_customers(
        conn: sqlite3.Connection, customers: Mapping[str, str], now: int
    ) -> tuple[str, ...]:
        """Store the customers of traces not known yet (the first one named wins); returns those.

        Trace ids are random, so adding a batch's few thousand to one large table would touch
        most of its pages, and a commit writes every touched page to the log: the cost of an
        append would grow with the table. New ones go to ``trace_customers_recent`` instead,
        which stays small, and are merged into ``trace_customers`` in key order every
        ``_MERGE_TRACES`` (each page of the large table is then written once per merge).
        """
        if not customers:
            return ()
        trace_ids = list(customers)
        known = _known_trace_customers(conn, trace_ids)
        new = [t for t in trace_ids if t not in known]
        if not new:
            return ()
        conn.executemany(
            "INSERT INTO trace_customers_recent (trace_id, customer, first_seen_ns) VALUES (?, ?, ?)",
            [(t, customers[t], now) for t in new],
        )
        (recent,) = conn.execute("SELECT count(*) FROM trace_customers_recent").fetchone()
        if recent >= _MERGE_TRACES:
            conn.execute(  # the first customer named wins, as everywhere
                "INSERT INTO trace_customers SELECT * FROM trace_customers_recent WHERE true"
                " ORDER BY trace_id ON CONFLICT DO NOTHING"
            )
            conn.execute("DELETE FROM trace_customers_recent")
        return tuple(new)

    def expire_trace_customers(self, seen_before_ns: int) -> int:
        """Forget the customers of traces first stored before ``seen_before_ns`` (both tables).

        Without this the large table only grows, and each merge into it rewrites most of its
        pages once it has more pages than the merge has keys (``bench_trace_merge.py``)."""
        with self._write() as conn:
            expired = 0
            for table in ("trace_customers", "trace_customers_recent"):
                expired += conn.execute(
                    f"DELETE FROM {table} WHERE first_seen_ns < ?", (seen_before_ns,)
                ).rowcount
            return expired

    def set_attribution(self, updates: Sequence[Attribution]) -> int:
        """Attribute pending rows; rows already attributed are left alone (first attribution wins).

        A billed amount is only set on a priced row: an update carrying one for an unpriced row
        does not apply (and is not counted).
        """
        params = [(*p, p[1]) for p in checked_attributions(updates)]  # billed again: ``? IS NULL``
        if not params:
            return 0
        with self._write() as conn:
            folded = rollup.folded_seq(conn)
            moved: list[int] = []
            if folded:  # rows already in the rollup move from the pending group to the customer's
                for p in params:
                    moved += (
                        seq
                        for (seq,) in conn.execute(
                            f"SELECT seq FROM usage_rows INDEXED BY usage_pending_trace WHERE {_ATTRIBUTABLE}"
                            " AND seq <= ?",
                            (*p[4:], folded),
                        )
                    )
            seqs = json.dumps(moved)
            if moved:
                rollup.unfold_rows(conn, seqs)
            changed: int = conn.executemany(
                "UPDATE usage_rows SET customer = ?, billed = ?, billed_units = ?, markup_rule = ?"
                f" WHERE {_ATTRIBUTABLE}",
                params,
            ).rowcount
            if moved:
                rollup.refold_rows(conn, seqs)
            if changed > len(moved):  # tail rows changed too: folds computed before are stale
                rollup.note_tail_change(conn)
            return changed

    def set_customer(self, customer_id: str, stripe_customer_id: str | None, name: str | None = None) -> None:
        check_customer_id(customer_id)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO customers (customer_id, stripe_customer_id, name, updated_at_ns)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (customer_id) DO UPDATE SET stripe_customer_id = excluded.stripe_customer_id,"
                " name = excluded.name, updated_at_ns = excluded.updated_at_ns",
                (customer_id, stripe_customer_id, name, time.time_ns()),
            )

    def assign_export_batch(self, seqs: Sequence[int], batch_id: str) -> None:
        """Claim exportable rows for an export batch; idempotent for the same batch id.

        Raises ``ValueError`` (and changes nothing) if a row does not exist, is not exportable,
        or already belongs to another batch.
        """
        check_batch_id(batch_id)
        wanted = unique_seqs(seqs)
        with self._write() as conn:
            ok: set[int] = set()
            for chunk in _chunks(wanted):
                rows = conn.execute(
                    f"SELECT seq FROM usage_rows WHERE seq IN ({_marks(len(chunk))})"
                    f" AND (export_batch = ? OR ({_EXPORTABLE}))",
                    [*chunk, batch_id],
                )
                ok.update(row[0] for row in rows)
            refused = refused_export(wanted, ok, batch_id)
            if refused is not None:
                raise refused
            for chunk in _chunks(wanted):
                conn.execute(
                    f"UPDATE usage_rows SET export_batch = ? WHERE seq IN ({_marks(len(chunk))})"
                    " AND export_batch IS NULL",
                    [batch_id, *chunk],
                )

    # -- reads ---------------------------------------------------------------------------------

    def trace_customers(self, trace_ids: Iterable[str]) -> dict[str, str]:
        with self._read() as conn:
            return _known_trace_customers(conn, list(dict.fromkeys(trace_ids)))

    def pending_attribution(
        self,
        trace_ids: Iterable[str] | None = None,
        *,
        started_before_ns: int | None = None,
        limit: int = 10_000,
    ) -> list[LedgerRow]:
        """Pending rows (customer unknown), oldest ``seq`` first; sibling duplicates are never pending."""
        where = "customer IS NULL AND duplicate_of IS NULL"
        args: list[Any] = []
        if started_before_ns is not None:
            where += " AND start_time_ns < ?"
            args.append(started_before_ns)
        with self._read() as conn:
            if trace_ids is None:
                rows = conn.execute(
                    f"{_SELECT} WHERE {where} ORDER BY seq LIMIT ?", [*args, limit]
                ).fetchall()
            else:
                rows = []
                for chunk in _chunks(list(dict.fromkeys(trace_ids))):
                    rows += conn.execute(
                        f"{_select('INDEXED BY usage_pending_trace')} WHERE {where}"
                        f" AND trace_id IN ({_marks(len(chunk))}) ORDER BY seq LIMIT ?",
                        [*args, *chunk, limit],
                    ).fetchall()
                rows.sort(key=lambda r: r[0])
                rows = rows[:limit]
        return [from_row(r) for r in rows]

    def usage_summary(self, query: UsageQuery) -> list[UsageSummary]:
        """Exact sums per group: whole days from the rollup, the rest from the rows (``rollup.py``)."""
        group_expressions(query.by)  # refuse unknown fields before touching the database
        since = None if query.since is None else datetime_to_ns(query.since)
        until = None if query.until is None else datetime_to_ns(query.until)
        builder = SummaryBuilder(by=tuple(query.by))
        with self._read() as conn:
            folded = rollup.folded_seq(conn)
            for part in plan(since, until):
                if part.days:
                    self._summarize_rollup(conn, builder, query, part)
                    low = None if part.low is None else part.low * DAY_NS
                    high = None if part.high is None else part.high * DAY_NS
                    self._summarize_rows(conn, builder, query, low, high, after_seq=folded)
                else:
                    self._summarize_rows(conn, builder, query, part.low, part.high, after_seq=None)
        return builder.build()

    @staticmethod
    def _summarize_rollup(
        conn: sqlite3.Connection, builder: SummaryBuilder, query: UsageQuery, part: Part
    ) -> None:
        keys = ", ".join([*group_expressions(query.by, rollup=True), "currency"])
        where, args = "spans != 0", list[Any]()
        if query.customer is not None:
            where += " AND customer = ?"
            args.append(rollup.PENDING_KEY if query.customer == PENDING_CUSTOMER else query.customer)
        if part.low is not None:
            where += " AND day >= ?"
            args.append(part.low)
        if part.high is not None:
            where += " AND day < ?"
            args.append(part.high)
        sums = ", ".join(
            f"group_concat({c}, ' ')" if c.endswith("_extra") else f"sum({c})"
            for c in (*rollup.COUNTS, *rollup.PARTS)
        )
        rows = conn.execute(f"SELECT {keys}, {sums} FROM usage_daily WHERE {where} GROUP BY {keys}", args)
        for row in rows:
            builder.add_rollup(row)

    @staticmethod
    def _summarize_rows(
        conn: sqlite3.Connection,
        builder: SummaryBuilder,
        query: UsageQuery,
        since: int | None,
        until: int | None,
        *,
        after_seq: int | None,
    ) -> None:
        """Aggregate ``usage`` rows in ``[since, until)`` (only those above ``after_seq`` if set)."""
        groups = group_expressions(query.by)
        where, args = _filters(customer=query.customer, since=None, until=None)
        table = f"usage_rows {_DIMS}"
        if after_seq is not None:  # the tail is a rowid range; never scan the time index
            table = f"usage_rows NOT INDEXED {_DIMS}"
            where += " AND seq > ?"
            args.append(after_seq)
        if since is not None:
            where += " AND start_time_ns >= ?"
            args.append(since)
        if until is not None:
            where += " AND start_time_ns < ?"
            args.append(until)
        keys = ", ".join([*groups, "currency"])
        counts = [
            "count(*)",
            "sum(input_tokens)",
            "sum(output_tokens)",
            "sum(cache_read_tokens)",
            "sum(cache_write_tokens)",
            "sum(reasoning_tokens)",
            "sum(status = 'unpriced')",
            "sum(customer IS NULL)",
        ]
        priced = "status = 'priced'"
        parts = [f(col, priced) for col in ("cost", "billed") for f in (money.sum_hi, money.sum_lo)]
        inexact = (
            f"{priced} AND ((cost IS NOT NULL AND cost_units IS NULL)"
            " OR (billed IS NOT NULL AND billed_units IS NULL))"
        )
        rows_table = table.removesuffix(f" {_DIMS}")
        money_in_sql = True
        try:
            aggregate = conn.execute(
                _by_dims_then_keys(query.by, rows_table, where, [*counts, *parts]), args
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "overflow" not in str(exc):
                raise
            money_in_sql = False
            aggregate = conn.execute(_by_dims_then_keys(query.by, rows_table, where, counts), args).fetchall()
        for row in aggregate:
            builder.add_aggregate(row, money_in_sql=money_in_sql)
        if money_in_sql:
            amounts = f"{money.unfit('cost')}, {money.unfit('billed')}"
            extra_where = inexact
        else:
            amounts, extra_where = "cost, billed", "status = 'priced'"
        builder.add_amounts(
            conn.execute(f"SELECT {keys}, {amounts} FROM {table} WHERE {where} AND {extra_where}", args)
        )

    def rows(
        self,
        *,
        trace_id: str | None = None,
        customer: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[LedgerRow]:
        """Billable rows, most recent ``seq`` first. ``customer="(pending)"`` selects pending rows.

        There is no index on ``trace_id`` alone (it would cost a large share of the append rate):
        a trace lookup scans, so narrow it with ``since``/``until`` when the time is known.
        """
        where, args = _filters(customer=customer, since=since, until=until)
        if trace_id is not None:
            where += " AND trace_id = ?"
            args.append(trace_id)
        with self._read() as conn:
            rows = conn.execute(
                f"{_SELECT} WHERE {where} ORDER BY seq DESC LIMIT ?", [*args, limit]
            ).fetchall()
        return [from_row(r) for r in rows]

    def batch_rows(self, batch_id: str) -> list[LedgerRow]:
        """The rows assigned to one export batch, in ``seq`` order (audit: meter event -> spans)."""
        with self._read() as conn:
            rows = conn.execute(f"{_SELECT} WHERE export_batch = ? ORDER BY seq", (batch_id,)).fetchall()
        return [from_row(r) for r in rows]

    def exportable(self, limit: int = 10_000) -> list[LedgerRow]:
        with self._read() as conn:
            rows = conn.execute(
                f"{_select('INDEXED BY usage_exportable')} WHERE {_EXPORTABLE} ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [from_row(r) for r in rows]

    def not_billable_counts(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT reason, sum(count) FROM not_billable_counts GROUP BY reason ORDER BY reason"
            )
            return {reason: int(n) for reason, n in rows}

    def customers(self) -> list[Customer]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT customer_id, stripe_customer_id, name FROM customers ORDER BY customer_id"
            )
            return [Customer(customer_id=c, stripe_customer_id=s, name=n) for c, s, n in rows]


def _filters(
    *, customer: str | None, since: datetime | None, until: datetime | None
) -> tuple[str, list[Any]]:
    where = _BILLABLE
    args: list[Any] = []
    if customer == PENDING_CUSTOMER:
        where += " AND customer IS NULL"
    elif customer is not None:
        where += " AND customer = ?"
        args.append(customer)
    if since is not None:
        where += " AND start_time_ns >= ?"
        args.append(datetime_to_ns(since))
    if until is not None:
        where += " AND start_time_ns < ?"
        args.append(datetime_to_ns(until))
    return where, args


def _known_trace_customers(conn: sqlite3.Connection, trace_ids: list[str]) -> dict[str, str]:
    """The stored customers of ``trace_ids`` (in either trace customer table)."""
    found: dict[str, str] = {}
    for chunk in _chunks(trace_ids):
        marks = _marks(len(chunk))
        rows = conn.execute(
            f"SELECT trace_id, customer FROM trace_customers WHERE trace_id IN ({marks}) UNION ALL"
            f" SELECT trace_id, customer FROM trace_customers_recent WHERE trace_id IN ({marks})",
            [*chunk, *chunk],
        )
        found.update(rows)
    return found


def _stored_responses(
    conn: sqlite3.Connection, buckets: list[int], response_ids: list[str]
) -> Iterator[StoredResponse]:
    """The ``ResponseLookup`` of SQLite (``siblings.sibling_duplicates``).

    Equality probes on ``usage_response``: the WHERE names both index columns with ``=``/``IN``
    and nothing else about them, or the planner turns the lookup into a scan of whole buckets.
    """
    for chunk in _chunks(response_ids):
        yield from conn.execute(
            "SELECT seq, resp_bucket, provider, response_id, trace_id, span_id, start_time_ns,"
            f" duplicate_of FROM usage_rows INDEXED BY usage_response {_DIMS}"
            f" WHERE resp_bucket IN ({_marks(len(buckets))}) AND response_id IN ({_marks(len(chunk))})",
            [*buckets, *chunk],
        )


_FOLD_BEHIND = 4  # tails this many times FOLD_EVERY are folded by the append itself
_MERGE_TRACES = 50_000  # new trace customers kept apart before a merge (``_add_trace_customers``)
_GROUP = 256  # rows per insert statement (fewer if SQLite allows fewer parameters)
_SMALLEST_GROUP = 8  # fewer rows go one statement each, not through a statement of their own


def _groups(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(first row, count) of each insert statement: full groups, then halves down to
    ``_SMALLEST_GROUP``, then the few rows left; so a batch of any size uses a handful of
    statement shapes, each prepared once per connection."""
    first = 0
    while size >= _SMALLEST_GROUP:
        while n - first >= size:
            yield first, size
            first += size
        size //= 2
    if first < n:
        yield first, n - first


def _duplicates_last(
    rows: list[PricedUsage], duplicate_of: list[str | None], size: int
) -> Iterator[tuple[list[PricedUsage], list[str | None] | None]]:
    """The groups of rows to insert (``_groups``) with their ``duplicate_of`` marks (None where
    there are none): first the rows that are not sibling duplicates, in order, then those that are."""
    if duplicate_of.count(None) == len(rows):
        parts: list[tuple[list[PricedUsage], list[str | None] | None]] = [(rows, None)]
    else:
        marked = list(map(is_not, duplicate_of, repeat(None)))
        parts = [
            (list(compress(rows, map(not_, marked))), None),
            (list(compress(rows, marked)), list(compress(duplicate_of, marked))),
        ]
    for part, marks in parts:
        for first, count in _groups(len(part), size):
            yield part[first : first + count], None if marks is None else marks[first : first + count]


@lru_cache(maxsize=32)
def _insert_sql(rows: int, plain: bool) -> str:
    """The insert of ``rows`` rows, each bound as ``PLAIN_COLUMNS`` or ``GENERAL_COLUMNS``
    (``extend_params``), after ``?1``, the append's time: the statement fills in the rest.

    The rows are a ``VALUES`` list of anonymous parameters, selected from as ``column1``...
    so that no parameter is named or used twice: SQLite finds a numbered parameter
    (``?17``) by a linear search of the statement's named ones, so preparing a statement of a few
    thousand of them, each row's used again in its status and bucket, took ~27 ms (a first append
    of ~110 ms), against ~1 ms this way; inserting costs the same."""
    bound = PLAIN_COLUMNS if plain else GENERAL_COLUMNS
    value = {c: f"column{i}" for i, c in enumerate(bound, 1)}
    filled = {
        "duplicate_of": "NULL",
        "status": f"CASE WHEN {value['cost']} IS NULL THEN 'unpriced' ELSE 'priced' END",
        "ingested_at_ns": "?1",
        "resp_bucket": f"CASE WHEN {value['response_id']} IS NULL THEN NULL"
        f" ELSE {value['start_time_ns']} / {RESPONSE_BUCKET_NS} END",
    }
    selected = ", ".join(value.get(c) or filled[c] for c in ROW_COLUMNS)
    row = f"({_marks(len(bound))})"
    return (
        f"INSERT INTO usage_rows ({', '.join(ROW_COLUMNS)}) SELECT {selected}"
        f" FROM (VALUES {', '.join([row] * rows)}) WHERE true ON CONFLICT DO NOTHING"
    )


_DIM_GROUPS = frozenset(("provider", "model", "operation"))


def _by_dims_then_keys(by: Sequence[str], rows_table: str, where: str, sums: list[str]) -> str:
    """``sums`` over ``rows_table`` rows matching ``where``, grouped by ``by`` and currency: first by
    the row columns among them and ``dim_id`` (an integer key to sort), then, over those few
    groups joined with ``dims``, by the keys themselves (joining every row instead costs a
    ``dims`` lookup a row). Columns: the ``by`` values, currency, then ``sums``."""
    row_keys = [(i, name) for i, name in enumerate(by) if name not in _DIM_GROUPS]
    inner_keys = [f"{group_expressions((name,))[0]} AS k{i}" for i, name in row_keys]
    values = [f"{expr} AS v{j}" for j, expr in enumerate(sums)]
    inner = (
        f"SELECT {', '.join([*inner_keys, 'dim_id', *values])} FROM {rows_table} WHERE {where}"
        f" GROUP BY {', '.join([*(f'k{i}' for i, _ in row_keys), 'dim_id'])}"
    )
    outer_keys = [f"dims.{name}" if name in _DIM_GROUPS else f"g.k{i}" for i, name in enumerate(by)]
    outer_keys.append("dims.currency")
    return (
        f"SELECT {', '.join(outer_keys)}, {', '.join(f'sum(g.v{j})' for j in range(len(sums)))}"
        f" FROM ({inner}) AS g CROSS JOIN dims ON dims.id = g.dim_id GROUP BY {', '.join(outer_keys)}"
    )


def _count_not_billable(
    conn: sqlite3.Connection, now: int, counts: Mapping[str, int], result: AppendResult
) -> None:
    """Add the batch's not-billable counts and its duplicates to today's ``not_billable_counts``."""
    total = not_billable_totals(counts, result.duplicate_spans, result.duplicate_responses)
    if total:
        day = utc_day(now)
        conn.executemany(
            "INSERT INTO not_billable_counts (reason, day, count) VALUES (?, ?, ?)"
            " ON CONFLICT (reason, day) DO UPDATE SET count = count + excluded.count",
            [(reason, day, n) for reason, n in total.items()],
        )
