"""``PostgresLedger``: the ``Ledger`` protocol on PostgreSQL, for several writers on one database.

Each method is one transaction on a pooled connection (``database.py``); appends are bulk loads
(``append.py``); every rule that two processes could race on is settled by the database itself:
unique keys (redelivery, trace customers), advisory locks (sibling spans), row locks with
guards re-read after waiting (attribution, export batches). See ``schema.py`` for the keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime

from otel_aibill.db import postgres as db_postgres
from otel_aibill.ledger.base import (
    AppendBatch,
    AppendResult,
    Attribution,
    Customer,
    LedgerRow,
    UsageQuery,
    UsageSummary,
)
from otel_aibill.ledger.checks import check_batch_id, check_customer_id, checked_attributions, unique_seqs
from otel_aibill.ledger.postgres import attribution, export, queries, trace_customers
from otel_aibill.ledger.postgres.append import STAGE_TABLE, Appender
from otel_aibill.ledger.postgres.database import Connection, Database
from otel_aibill.ledger.schema import LEDGER
from otel_aibill.ledger.summary import group_expressions
from otel_aibill.ledger.url import PostgresOptions, parse_postgres_url


def _prepare(conn: Connection) -> None:
    # The ledger's statements are short and run thousands of times: compiling them (which the
    # planner's cost estimates for a large batch trigger) costs far more than it saves.
    conn.execute("SET jit = off")
    conn.execute(STAGE_TABLE)


class PostgresLedger:
    """``Ledger`` on a PostgreSQL database, its tables in ``options.schema`` (created if missing)."""

    def __init__(self, options: PostgresOptions | str) -> None:
        self.options = parse_postgres_url(options) if isinstance(options, str) else options
        self._db = Database(self.options, _prepare)
        conn = self._db.connect()
        try:
            db_postgres.migrate(conn, LEDGER, self.options.schema, where=self.options.display)
        finally:
            conn.close()
        self._db.open()
        self._appender = Appender(self._db)

    def append(self, batch: AppendBatch) -> AppendResult:
        return self._appender.append(batch)

    def trace_customers(self, trace_ids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(trace_ids))
        return self._db.run(lambda conn: trace_customers.known(conn, ids), transaction=False)

    def expire_trace_customers(self, seen_before_ns: int) -> int:
        return self._db.run(lambda conn: trace_customers.expire(conn, seen_before_ns))

    def pending_attribution(
        self,
        trace_ids: Iterable[str] | None = None,
        *,
        started_before_ns: int | None = None,
        limit: int = 10_000,
    ) -> list[LedgerRow]:
        ids = None if trace_ids is None else list(trace_ids)
        return self._db.run(
            lambda conn: queries.pending_attribution(conn, ids, started_before_ns, limit), transaction=False
        )

    def set_attribution(self, updates: Sequence[Attribution]) -> int:
        checked = checked_attributions(updates)
        if not checked:
            return 0
        return self._db.run(lambda conn: attribution.set_attribution(conn, checked))

    def usage_summary(self, query: UsageQuery) -> list[UsageSummary]:
        group_expressions(query.by)  # refuse unknown fields before touching the database
        return self._db.run(lambda conn: queries.usage_summary(conn, query), transaction=False)

    def rows(
        self,
        *,
        trace_id: str | None = None,
        customer: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[LedgerRow]:
        return self._db.run(
            lambda conn: queries.rows(
                conn, trace_id=trace_id, customer=customer, since=since, until=until, limit=limit
            ),
            transaction=False,
        )

    def batch_rows(self, batch_id: str) -> list[LedgerRow]:
        return self._db.run(lambda conn: queries.batch_rows(conn, batch_id), transaction=False)

    def not_billable_counts(self) -> dict[str, int]:
        return self._db.run(queries.not_billable_counts, transaction=False)

    def set_customer(self, customer_id: str, stripe_customer_id: str | None, name: str | None = None) -> None:
        check_customer_id(customer_id)
        self._db.run(
            lambda conn: conn.execute(
                "INSERT INTO customers (customer_id, stripe_customer_id, name, updated_at_ns)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (customer_id) DO UPDATE SET"
                " stripe_customer_id = excluded.stripe_customer_id, name = excluded.name,"
                " updated_at_ns = excluded.updated_at_ns",
                (customer_id, stripe_customer_id, name, time.time_ns()),
            )
        )

    def customers(self) -> list[Customer]:
        return self._db.run(queries.customers, transaction=False)

    def exportable(self, limit: int = 10_000) -> list[LedgerRow]:
        return self._db.run(lambda conn: queries.exportable(conn, limit), transaction=False)

    def assign_export_batch(self, seqs: Sequence[int], batch_id: str) -> None:
        check_batch_id(batch_id)
        wanted = unique_seqs(seqs)
        self._db.run(lambda conn: export.assign(conn, wanted, batch_id))

    def wait_for_rollup(self, timeout: float | None = None) -> bool:
        """Always current: summaries read the rows (there is no background work on PostgreSQL)."""
        return True

    def schema_version(self) -> int:
        schema = self.options.schema
        return self._db.run(
            lambda conn: db_postgres.version_of(conn.cursor(), schema, LEDGER), transaction=False
        )

    def close(self) -> None:
        self._db.close()
