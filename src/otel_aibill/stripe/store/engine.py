"""Connections and transactions of the export store, per backend; everything else is shared SQL.

The store's statements are written once, with ``?`` placeholders; the PostgreSQL cursor turns
them into psycopg's ``%s``. Writes are serialized per database on both backends — SQLite by
``BEGIN IMMEDIATE``, PostgreSQL by a transaction-scoped advisory lock — because some of them
read before they write (the remainder carry when a customer is rejected, while the exporter
finalizes a batch), and a lost update there would bill a remainder twice or not at all.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from otel_aibill.db import postgres as db_postgres
from otel_aibill.db import sqlite as db_sqlite
from otel_aibill.errors import LedgerUnavailableError
from otel_aibill.ledger.url import PostgresOptions
from otel_aibill.stripe.store.schema import STORE


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses, with ``?`` placeholders on every backend."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Engine(Protocol):
    where: str

    def match_any(self, column: str, values: Sequence[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``column`` equal to any of ``values``: conditions with their parameters, one per part."""
        ...

    def tx(self) -> Any:
        """A context manager: one write transaction, yielding a ``Cursor``; rolled back on error."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def close(self) -> None: ...


_IN_LIST = 500  # values per IN (...) list on SQLite, well under its parameter limit


def insert_rows(cur: Cursor, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
    """Plain inserts of many rows: ``executemany`` on SQLite, a ``COPY`` on PostgreSQL (an order
    of magnitude less client time a row than psycopg's ``executemany``)."""
    if not rows:
        return
    if isinstance(cur, PgCursor):
        with cur.cur.copy(f"COPY {table} ({columns}) FROM STDIN".encode()) as copy:
            for row in rows:
                copy.write_row(row)
        return
    cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(rows[0]))})", rows)


class SqliteEngine:
    """One connection (the store's writes are few), shared by threads behind a lock."""

    def __init__(self, path: str, busy_timeout_ms: int = 30_000) -> None:
        self.where = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.lock = threading.RLock()
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if path != ":memory:":
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            db_sqlite.migrate(self.conn, STORE, where=path)
        except BaseException:
            self.conn.close()
            raise

    def match_any(self, column: str, values: Sequence[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        for start in range(0, len(values), _IN_LIST):
            part = tuple(values[start : start + _IN_LIST])
            yield f"{column} IN ({', '.join('?' * len(part))})", part

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        with self.lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()


def _dialect(statement: str) -> bytes:
    if "%" in statement:
        raise ValueError(f"export store statements have no literal %: {statement!r}")
    return statement.replace("?", "%s").encode()


class PgCursor:
    """A psycopg cursor taking the store's ``?`` statements."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    @property
    def rowcount(self) -> int:
        return self.cur.rowcount

    def execute(self, sql: str, parameters: Any = (), /) -> PgCursor:
        self.cur.execute(_dialect(sql), parameters or None)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> None:
        params = list(seq_of_parameters)
        if params:
            self.cur.executemany(_dialect(sql), params)

    def fetchone(self) -> Any:
        return self.cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self.cur.fetchall()


@contextmanager
def unavailable_as_retry(where: str) -> Iterator[None]:
    """A database that cannot be reached (or a pool with no connection to give) is the system's
    failure, not the data's: ``LedgerUnavailableError`` (the store is in the ledger's database),
    so callers retry later instead of treating it as a bug."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise LedgerUnavailableError(f"the export store's database {where} is unavailable: {exc}") from exc


def _key(name: str, schema: str) -> str:
    return f"otel_aibill.{name}:{schema}"


class PostgresEngine:
    """A small connection pool on the ledger's schema; reads in autocommit, writes serialized."""

    def __init__(self, options: PostgresOptions, *, connect_timeout: float = 30.0) -> None:
        self.options = options
        self.where = f"{options.display} (schema {options.schema})"
        self.schema = options.schema
        with unavailable_as_retry(self.where), psycopg.connect(options.conninfo, autocommit=True) as conn:
            db_postgres.migrate(conn, STORE, options.schema, where=self.where)
        search_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(options.schema))

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(search_path)

        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            options.conninfo,
            min_size=1,
            max_size=max(2, min(options.pool_max, 4)),
            kwargs={"autocommit": True},
            configure=configure,
            open=False,
        )
        try:
            with unavailable_as_retry(self.where):
                self.pool.open(wait=True, timeout=connect_timeout)
        except BaseException:
            self.pool.close()
            raise

    def match_any(self, column: str, values: Sequence[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        if values:
            yield f"{column} = ANY(?)", (list(values),)

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        with (
            unavailable_as_retry(self.where),
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_key("store", self.schema),)
            )
            yield PgCursor(cur)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with unavailable_as_retry(self.where), self.pool.connection() as conn, conn.cursor() as cur:
            return PgCursor(cur).execute(sql, params).fetchall()

    def close(self) -> None:
        self.pool.close()
