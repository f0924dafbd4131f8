"""Apply a component's migrations to a SQLite database, in one ``BEGIN IMMEDIATE`` transaction.

``BEGIN IMMEDIATE`` takes SQLite's write lock before the version is read, so two processes
opening one file at once migrate it one after the other (the second finds nothing to do).
"""

from __future__ import annotations

import sqlite3
import time

from otel_aibill.db.migration import Component, apply_pending


def version_of(conn: sqlite3.Connection, component: Component) -> int:
    """The component's schema version in this database (0 when it has none yet)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (component.version_table,)
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {component.version_table}").fetchone()
    return int(row[0])


def migrate(
    conn: sqlite3.Connection,
    component: Component,
    *,
    target: int | None = None,
    where: str = "the database",
) -> int:
    """Bring ``component`` to ``target`` (default: latest) in one transaction; returns the version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no transaction open.
    A failing step rolls everything back; a database newer than the code is left untouched.
    """
    table = component.version_table
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ns INTEGER NOT NULL)"
        )
        _widen_version_table(conn, table)
        current = apply_pending(
            component,
            version_of(conn, component),
            lambda migration: migration.sqlite,
            lambda step: conn.execute(step) if isinstance(step, str) else step(conn),
            lambda migration: conn.execute(
                f"INSERT INTO {table} (version, name, applied_at_ns) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time_ns()),
            ),
            target=target,
            where=where,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current


def _widen_version_table(conn: sqlite3.Connection, table: str) -> None:
    """Version tables that held only ``version`` (the export store's, before this runner) get
    the other columns; their rows stay, with an empty name."""
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if "name" not in columns:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN name TEXT NOT NULL DEFAULT ''")
    if "applied_at_ns" not in columns:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN applied_at_ns INTEGER NOT NULL DEFAULT 0")
