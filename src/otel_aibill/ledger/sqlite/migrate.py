"""The ledger schema (``ledger/schema.py``) applied to a SQLite database."""

from __future__ import annotations

import sqlite3

from otel_aibill.db import sqlite as db_sqlite
from otel_aibill.ledger.schema import LEDGER
from otel_aibill.ledger.sqlite import rollup


def migrate(conn: sqlite3.Connection, *, target: int | None = None, where: str = "the database") -> int:
    """Bring the ledger schema to ``target`` (default: latest) in one transaction; returns the version."""
    rollup.register_functions(conn)  # migration 5 computes units in SQL
    return db_sqlite.migrate(conn, LEDGER, target=target, where=where)


def schema_version(conn: sqlite3.Connection) -> int:
    return db_sqlite.version_of(conn, LEDGER)
