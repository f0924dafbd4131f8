"""One exporter at a time per database.

Two exporters on one store (``serve`` and a manual ``stripe export``, or several ``serve``
instances on one PostgreSQL database) would otherwise read the same ledger rows between
checking and staging them, and finalize each other's half-staged batches.

On SQLite the lease is a row with an owner and an expiry, renewed as a run goes; a holder known
dead (``gone(owner)``: a crashed process on this host) need not be waited for. On PostgreSQL it
is a session advisory lock on a connection held for the lease: the server releases it when the
holder's connection ends, however the process died, so there is nothing to expire.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

from otel_aibill.stripe.store.engine import PostgresEngine, SqliteEngine, unavailable_as_retry

Gone = Callable[[str], bool]


class TableLease:
    """The lease as a row of ``stripe_lease`` (SQLite)."""

    def __init__(self, engine: SqliteEngine) -> None:
        self.engine = engine

    def acquire(self, owner: str, now: int, ttl: int, gone: Gone) -> int | None:
        with self.engine.tx() as cur:
            found = cur.execute("SELECT owner, expires_at FROM stripe_lease WHERE name = 'export'").fetchone()
            if found is not None and found[0] != owner and found[1] > now and not gone(found[0]):
                return None
            cur.execute(
                "INSERT INTO stripe_lease (name, owner, expires_at) VALUES ('export', ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
                (owner, now + ttl),
            )
            return now + ttl

    def release(self, owner: str) -> None:
        with self.engine.tx() as cur:
            cur.execute("DELETE FROM stripe_lease WHERE name = 'export' AND owner = ?", (owner,))

    def close(self) -> None:
        pass


class AdvisoryLease:
    """The lease as a session advisory lock (PostgreSQL); ``ttl`` only paces the renewals."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine
        self.key = f"otel_aibill.export:{engine.schema}"
        self._lock = threading.Lock()
        self._owner: str | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self, owner: str, now: int, ttl: int, gone: Gone) -> int | None:
        with self._lock:
            if self._owner is not None:
                if self._owner != owner:
                    return None
                if self._alive():
                    return now + ttl
                self._drop()
                return None  # the connection (and with it the lock) was lost: maybe taken since
            with unavailable_as_retry(self.engine.where):
                conn = psycopg.connect(self.engine.options.conninfo, autocommit=True)
            try:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self.key,)
                ).fetchone()
            except BaseException:
                conn.close()
                raise
            if not (row and row[0]):
                conn.close()
                return None
            self._owner, self._conn = owner, conn
            return now + ttl

    def _alive(self) -> bool:
        assert self._conn is not None
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def _drop(self) -> None:
        conn, self._conn, self._owner = self._conn, None, None
        if conn is not None:
            conn.close()  # ends the session: the server releases the lock

    def release(self, owner: str) -> None:
        with self._lock:
            if self._owner == owner:
                self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()
