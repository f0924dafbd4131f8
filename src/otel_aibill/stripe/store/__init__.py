"""The export's own durable state, in its own tables beside the ledger's (same database).

Split by concern: ``batches`` (staged rows, planned meter events, what was sent, membership for
audit), ``carry`` (remainders), ``held`` (rows held back, rejected customers), ``lease`` (one
exporter per database), ``reports`` (webhook errors, dry run), ``schema`` (the migrations),
``engine`` (connections and transactions of SQLite and PostgreSQL). ``ExportStore`` is all of
them on one database, named by the ledger's URL.
"""

from __future__ import annotations

from otel_aibill.db import sqlite as db_sqlite
from otel_aibill.db.postgres import version_of as pg_version_of
from otel_aibill.ledger.url import is_postgres_url, parse_postgres_url, parse_sqlite_url, redact
from otel_aibill.stripe.store.batches import Batches
from otel_aibill.stripe.store.engine import PostgresEngine, SqliteEngine
from otel_aibill.stripe.store.held import Held
from otel_aibill.stripe.store.lease import AdvisoryLease, Gone, TableLease
from otel_aibill.stripe.store.records import HELD_BATCH, HeldRow, StoredEvent, WebhookError
from otel_aibill.stripe.store.reports import Reports
from otel_aibill.stripe.store.schema import STORE

__all__ = ["HELD_BATCH", "ExportStore", "HeldRow", "StoredEvent", "WebhookError", "check_store_url"]


def check_store_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` names a database the store can live in."""
    if is_postgres_url(url):
        parse_postgres_url(url)
    elif url.startswith("sqlite:"):
        parse_sqlite_url(url)
    else:
        raise ValueError(
            f"the Stripe export store needs a sqlite:///path.db or postgresql://... URL, not {redact(url)!r}"
        )


def _no_one_gone(owner: str) -> bool:
    return False


class ExportStore(Batches, Held, Reports):
    """Export batches, events, remainders, held rows, webhook errors and dry-run records, in the
    database at ``url`` (``sqlite:///path.db`` or ``postgresql://...``, the ledger's URL)."""

    def __init__(self, url: str) -> None:
        check_store_url(url)
        if is_postgres_url(url):
            engine = PostgresEngine(parse_postgres_url(url))
            self._db = engine
            self._lease: TableLease | AdvisoryLease = AdvisoryLease(engine)
        else:
            opts = parse_sqlite_url(url)
            lite = SqliteEngine(opts.path, max(opts.busy_timeout_ms, 30_000))
            self._db, self._lease = lite, TableLease(lite)

    def close(self) -> None:
        self._lease.close()
        self._db.close()

    @property
    def schema_version(self) -> int:
        engine = self._db
        if isinstance(engine, SqliteEngine):
            with engine.lock:
                return db_sqlite.version_of(engine.conn, STORE)
        assert isinstance(engine, PostgresEngine)
        with engine.pool.connection() as conn, conn.cursor() as cur:
            return pg_version_of(cur, engine.schema, STORE)

    def acquire_lease(self, owner: str, now: int, ttl: int, gone: Gone = _no_one_gone) -> int | None:
        """Take or renew the export lease; None when another exporter holds it, else its expiry.

        ``gone(owner)`` says a holder is known dead (a crashed process), so a restart need not
        wait for its lease to run out (SQLite; on PostgreSQL the server knows).
        """
        return self._lease.acquire(owner, now, ttl, gone)

    def release_lease(self, owner: str) -> None:
        self._lease.release(owner)
