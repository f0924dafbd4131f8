"""One small connection to the ledger's database, for the stores that live beside the ledger.

The price catalog and the alert outbox are written rarely (an update, an alert) and read at
start-up, so they need neither the ledger's writer thread nor its pools: one connection, a lock,
and SQL written once with ``?`` placeholders that runs on SQLite (the ledger's file) and on
PostgreSQL (the ledger's schema). Tables are created and upgraded through ``otel_aibill.db``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from otel_aibill.db import Component
from otel_aibill.db import postgres as db_postgres
from otel_aibill.db import sqlite as db_sqlite
from otel_aibill.errors import LedgerUnavailableError
from otel_aibill.ledger.url import MEMORY, is_postgres_url, parse_postgres_url, parse_sqlite_url

Backend = Literal["sqlite", "postgres"]


def is_storable(url: str) -> bool:
    """Whether ``url`` names a database these stores can keep data in (not ``:memory:``)."""
    if is_postgres_url(url):
        return True
    try:
        return parse_sqlite_url(url).path != MEMORY
    except ValueError:
        return False


class Database:
    """A connection to ``url`` (``sqlite:///file.db`` or ``postgresql://...?schema=S``)."""

    def __init__(self, url: str, *components: Component) -> None:
        self._lock = threading.RLock()
        self._in_tx = False
        self.backend: Backend
        if is_postgres_url(url):
            import psycopg

            opts = parse_postgres_url(url)
            self.backend = "postgres"
            self.schema = opts.schema
            try:
                self._pg: Any = psycopg.connect(opts.conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                raise LedgerUnavailableError(f"cannot connect to {opts.display}: {exc}") from exc
            self._lite: sqlite3.Connection | None = None
            self._pg.execute(f'SET search_path TO "{self.schema}"')
        else:
            opts_l = parse_sqlite_url(url)
            if opts_l.path == MEMORY:
                raise ValueError("an in-memory ledger keeps no price catalog or alerts; use a file")
            self.backend = "sqlite"
            self.schema = ""
            self._pg = None
            self._lite = sqlite3.connect(
                opts_l.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=opts_l.busy_timeout_ms / 1000,
            )
            self._lite.execute("PRAGMA journal_mode=WAL")
            self._lite.execute(f"PRAGMA synchronous={opts_l.synchronous.upper()}")
        try:
            for component in components:
                self.migrate(component)
        except BaseException:
            self.close()
            raise

    def migrate(self, component: Component) -> int:
        with self._lock:
            if self._lite is not None:
                return db_sqlite.migrate(self._lite, component)
            version = db_postgres.migrate(self._pg, component, self.schema)
            self._pg.execute(f'SET search_path TO "{self.schema}"')
            return version

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Statements in one transaction, holding the write lock from the start (SQLite
        ``BEGIN IMMEDIATE``; on PostgreSQL the caller locks what it must with ``lock``)."""
        with self._lock:
            if self._in_tx:
                yield self
                return
            self._in_tx = True
            try:
                if self._lite is not None:
                    self._lite.execute("BEGIN IMMEDIATE")
                    try:
                        yield self
                    except BaseException:
                        self._lite.execute("ROLLBACK")
                        raise
                    self._lite.execute("COMMIT")
                else:
                    with self._pg.transaction():
                        yield self
            finally:
                self._in_tx = False

    def lock(self, table: str) -> None:
        """Serialise writers of ``table`` until the transaction ends (SQLite's write lock already does)."""
        if self._pg is not None:
            self._pg.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; rows it returns (empty for writes)."""
        with self._lock:
            if self._lite is not None:
                return self._lite.execute(statement, tuple(params)).fetchall()
            cur = self._pg.execute(statement.replace("?", "%s"), tuple(params))
            return list(cur.fetchall()) if cur.description is not None else []

    def close(self) -> None:
        with self._lock:
            if self._lite is not None:
                self._lite.close()
                self._lite = None
            if self._pg is not None:
                self._pg.close()
                self._pg = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
