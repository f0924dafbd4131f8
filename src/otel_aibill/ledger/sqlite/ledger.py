"""``SqliteLedger``: the ``Ledger`` protocol on one SQLite file, embedded, WAL.

A thin facade: input is checked before a transaction opens (``checks.py``, ``rows.py``), sibling
and redelivery decisions are the backend-neutral ``siblings.py``, and each concern's SQL is a
module of this package (``connection``, ``append``, ``siblings``, ``trace_customers``,
``attribution``, ``supersede``, ``summaries``, ``queries``, ``export``, ``customers``,
``not_billable``; the rollup in ``rollup``, ``folding``; schema in ``ledger/schema.py``, applied
by ``migrate``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from functools import partial

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
    unique_seqs,
)
from otel_aibill.ledger.rows import diagnose
from otel_aibill.ledger.siblings import sibling_duplicates, unique_spans
from otel_aibill.ledger.sqlite import attribution, export, not_billable, queries, rollup, summaries
from otel_aibill.ledger.sqlite import customers as customer_table
from otel_aibill.ledger.sqlite import trace_customers as trace_table
from otel_aibill.ledger.sqlite.append import Inserter
from otel_aibill.ledger.sqlite.connection import Connections
from otel_aibill.ledger.sqlite.folding import FoldWorker
from otel_aibill.ledger.sqlite.migrate import migrate, schema_version
from otel_aibill.ledger.sqlite.siblings import stored_responses
from otel_aibill.ledger.sqlite.stepper import Stepper
from otel_aibill.ledger.sqlite.supersede import supersede
from otel_aibill.ledger.summary import group_expressions
from otel_aibill.ledger.url import SqliteOptions, parse_sqlite_url

_FOLD_BEHIND = 4  # tails this many times FOLD_EVERY are folded by the append itself


class SqliteLedger:
    """``Ledger`` on one SQLite file (or ``:memory:``, where reads share the writer connection)."""

    def __init__(self, options: SqliteOptions | str) -> None:
        self.options = parse_sqlite_url(options) if isinstance(options, str) else options
        self._db = Connections(self.options)
        self._writer = self._db.writer
        try:
            migrate(self._writer, where=self.options.path)
        except BaseException:
            self._writer.close()
            raise
        self._folder = (
            None
            if self.options.in_memory or not self.options.background_fold
            else FoldWorker(self._db.reader, self._write)
        )
        self._stepper = None if self.options.in_memory else Stepper()
        self._inserter = Inserter(self._writer, self._stepper)

    # -- connections ---------------------------------------------------------------------------

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """The writer connection in one ``BEGIN IMMEDIATE`` transaction."""
        return self._db.write()

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A consistent snapshot for the duration of the block."""
        return self._db.read()

    def close(self) -> None:
        if self._folder is not None:
            self._folder.close()
        if self._stepper is not None:
            self._stepper.close()
        self._db.close()

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
        customers_of = checked_trace_customers(batch.trace_customers)
        counts = checked_counts(batch.not_billable)
        if not rows and not customers_of and not counts and not batch.superseded:
            return AppendResult(duplicate_spans=repeated)
        taken: list[rollup.Fold] = []
        try:
            with self._write() as conn:
                duplicate_of, marked, already = sibling_duplicates(
                    responses, len(rows), partial(stored_responses, conn)
                )
                try:
                    changed, new_dims = self._inserter.insert(conn, rows, now, duplicate_of)
                except (sqlite3.ProgrammingError, sqlite3.IntegrityError, OverflowError) as exc:
                    raise diagnose(rows, exc) from exc
                replaced = supersede(conn, self._inserter, batch.superseded, now, new_dims)
                result = AppendResult(
                    inserted=changed - (marked - already),
                    duplicate_spans=repeated + len(rows) - changed,
                    duplicate_responses=marked - already,
                    new_trace_customers=trace_table.add(conn, customers_of, now),
                    superseded=len(replaced.replace),
                    superseded_exported=len(replaced.exported),
                    superseded_other_customer=tuple(replaced.other_customer),
                )
                not_billable.add(
                    conn, now, not_billable_totals(counts, result.duplicate_spans, result.duplicate_responses)
                )
                fold_due = self._rollup_step(conn, changed, taken)
        finally:
            if taken and self._folder is not None:
                self._folder.taken_done()
        self._inserter.committed(new_dims)
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

    def expire_trace_customers(self, seen_before_ns: int) -> int:
        """Forget the customers of traces first stored before ``seen_before_ns``; returns how many."""
        with self._write() as conn:
            return trace_table.expire(conn, seen_before_ns)

    def set_attribution(self, updates: Sequence[Attribution]) -> int:
        """Attribute pending rows; rows already attributed are left alone (first attribution wins).

        A billed amount is only set on a priced row: an update carrying one for an unpriced row
        does not apply (and is not counted).
        """
        checked = checked_attributions(updates)
        if not checked:
            return 0
        with self._write() as conn:
            return attribution.set_attribution(conn, checked)

    def set_customer(self, customer_id: str, stripe_customer_id: str | None, name: str | None = None) -> None:
        check_customer_id(customer_id)
        with self._write() as conn:
            customer_table.set_customer(conn, customer_id, stripe_customer_id, name, time.time_ns())

    def assign_export_batch(self, seqs: Sequence[int], batch_id: str) -> None:
        """Claim exportable rows for an export batch; idempotent for the same batch id.

        Raises ``ValueError`` (and changes nothing) if a row does not exist, is not exportable,
        or already belongs to another batch.
        """
        check_batch_id(batch_id)
        wanted = unique_seqs(seqs)
        with self._write() as conn:
            export.assign_export_batch(conn, wanted, batch_id)

    # -- reads ---------------------------------------------------------------------------------

    def trace_customers(self, trace_ids: Iterable[str]) -> dict[str, str]:
        with self._read() as conn:
            return trace_table.known(conn, list(dict.fromkeys(trace_ids)))

    def pending_attribution(
        self,
        trace_ids: Iterable[str] | None = None,
        *,
        started_before_ns: int | None = None,
        limit: int = 10_000,
    ) -> list[LedgerRow]:
        """Pending rows (customer unknown), oldest ``seq`` first; sibling duplicates are never pending."""
        with self._read() as conn:
            return attribution.pending(conn, trace_ids, started_before_ns=started_before_ns, limit=limit)

    def usage_summary(self, query: UsageQuery) -> list[UsageSummary]:
        """Exact sums per group: whole days from the rollup, the rest from the rows (``rollup.py``)."""
        group_expressions(query.by)  # refuse unknown fields before touching the database
        with self._read() as conn:
            return summaries.usage_summary(conn, query)

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

        A trace lookup scans (no index on ``trace_id`` alone): narrow it with ``since``/``until``.
        """
        with self._read() as conn:
            return queries.rows(
                conn, trace_id=trace_id, customer=customer, since=since, until=until, limit=limit
            )

    def batch_rows(self, batch_id: str) -> list[LedgerRow]:
        """The rows assigned to one export batch, in ``seq`` order (audit: meter event -> spans)."""
        with self._read() as conn:
            return queries.batch_rows(conn, batch_id)

    def exportable(self, limit: int = 10_000) -> list[LedgerRow]:
        with self._read() as conn:
            return export.exportable(conn, limit)

    def not_billable_counts(self) -> dict[str, int]:
        with self._read() as conn:
            return not_billable.counts(conn)

    def customers(self) -> list[Customer]:
        with self._read() as conn:
            return customer_table.customers(conn)
