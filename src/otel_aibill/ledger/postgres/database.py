"""The PostgreSQL connection pool: transactions, retries, and driver errors in the errors.py tree.

Every ledger method runs as one function over one connection in one transaction
(``Database.run``). Failures are sorted once, here:

* the connection is gone, the server is shutting down or out of resources, the pool has no
  connection to give: ``LedgerUnavailableError`` (retry later; nothing was acknowledged);
* a serialization failure or deadlock between concurrent writers: the transaction is run again
  (a few times, then ``LedgerUnavailableError``);
* the data was refused (a constraint, a value PostgreSQL cannot store): ``DataRefused``, which the
  caller turns into an ``InvalidRowError`` naming the row;
* any other database error (a permission, a trigger, a table dropped under the ledger) is the
  system's, not the data's: ``LedgerUnavailableError`` too, so a receiver keeps the spans
  retrying instead of refusing them for good.

The pool checks a connection before lending it (one round trip), so connections broken by a
server restart are replaced instead of failing the next transaction.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from otel_aibill.errors import LedgerUnavailableError
from otel_aibill.ledger.url import PostgresOptions

_log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.Connection[Any]

ATTEMPTS = 5
"""Runs of a transaction that keeps meeting serialization failures or deadlocks."""
CONNECT_TIMEOUT_S = 10.0
"""How long opening the ledger waits for the server (a ``connect_timeout`` in the URL wins)."""
LEND_TIMEOUT_S = 5.0
"""How long a call waits for a pooled connection before it reports the ledger unavailable."""
_CONFLICTS = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
_REFUSED = (psycopg.DataError, psycopg.IntegrityError)


class DataRefused(Exception):
    """PostgreSQL refused the data of a statement (constraint, value out of range, bad text)."""


class Database:
    """A pool of connections to one PostgreSQL database, with the ledger's schema on the search path.

    ``prepare(conn)`` runs once on every new connection (after the search path is set): the
    ledger creates its per-connection staging table there.
    """

    def __init__(self, options: PostgresOptions, prepare: Callable[[Connection], None]) -> None:
        self.options = options
        self._prepare = prepare
        self._pool = ConnectionPool(
            options.conninfo,
            kwargs={"autocommit": True},
            min_size=options.pool_min,
            max_size=options.pool_max,
            open=False,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=LEND_TIMEOUT_S,
            name=f"otel-aibill {options.display}",
        )
        self._closed = False

    def connect(self) -> Connection:
        """A connection of its own (not pooled), for schema work before the pool opens."""
        try:
            timeout: dict[str, Any] = {}
            if "connect_timeout" not in self.options.conninfo:
                timeout["connect_timeout"] = int(CONNECT_TIMEOUT_S)
            conn = psycopg.connect(self.options.conninfo, autocommit=True, **timeout)
        except psycopg.Error as exc:
            raise LedgerUnavailableError(
                f"cannot connect to the PostgreSQL ledger at {self.options.display}: {_first_line(exc)}"
            ) from exc
        return conn

    def open(self) -> None:
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            self._pool.close()
            raise LedgerUnavailableError(
                f"cannot open connections to the PostgreSQL ledger at {self.options.display}"
            ) from exc

    def _configure(self, conn: Connection) -> None:
        conn.execute(f'SET search_path TO "{self.options.schema}"')
        self._prepare(conn)

    def run(self, work: Callable[[Connection], T], *, transaction: bool = True) -> T:
        """``work(conn)`` in one transaction (or, with ``transaction=False``, one statement's
        autocommit), run again on a serialization failure or deadlock."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn:
                    if not transaction:
                        return work(conn)
                    with conn.transaction():
                        return work(conn)
            except _CONFLICTS as exc:
                if attempt == ATTEMPTS:
                    raise LedgerUnavailableError(
                        f"PostgreSQL ledger transaction kept conflicting with others: {_first_line(exc)}"
                    ) from exc
                _log.debug("retrying a ledger transaction after %s", type(exc).__name__)
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
            except _REFUSED as exc:
                raise DataRefused(_first_line(exc)) from exc
            except (psycopg.Error, PoolTimeout) as exc:
                if self._closed:
                    raise RuntimeError("the ledger is closed") from exc
                raise LedgerUnavailableError(
                    f"PostgreSQL ledger at {self.options.display} unavailable: {_first_line(exc)}"
                ) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        self._pool.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
