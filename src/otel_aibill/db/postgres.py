"""Apply a component's migrations to a PostgreSQL schema, in one transaction, under a lock.

Several processes may open one database at the same moment (``serve --workers N``, a second
instance, a CLI command). A transaction-scoped advisory lock keyed by schema and component makes
them migrate one after the other: the first applies the pending steps, the others wait, then
find nothing to do. The lock goes with the transaction, so a process killed mid-migration
leaves neither a lock nor a half-applied version behind.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import sql

from otel_aibill.db.migration import Component, apply_pending


def _lock_key(schema: str, component: Component) -> str:
    return f"otel_aibill.migrate:{schema}.{component.version_table}"


def version_of(cur: psycopg.Cursor[tuple[object, ...]], schema: str, component: Component) -> int:
    """The component's schema version in ``schema`` (0 when it has none yet)."""
    found = cur.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (schema, component.version_table),
    ).fetchone()
    if found is None:
        return 0
    row = cur.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(component.version_table)
        )
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def migrate(
    conn: psycopg.Connection[tuple[object, ...]],
    component: Component,
    schema: str,
    *,
    target: int | None = None,
    where: str = "the database",
) -> int:
    """Bring ``component`` in ``schema`` (created if missing) to ``target`` (default: latest).

    The steps run unqualified with ``search_path`` set to ``schema`` for the transaction. A
    failing step rolls everything back; a database newer than the code is left untouched.
    """
    ident = sql.Identifier(schema)
    table = sql.Identifier(schema, component.version_table)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_lock_key(schema, component),))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at_ns bigint NOT NULL)"
            ).format(table)
        )
        insert = sql.SQL("INSERT INTO {} (version, name, applied_at_ns) VALUES (%s, %s, %s)").format(table)
        current = apply_pending(
            component,
            version_of(cur, schema, component),
            lambda migration: migration.postgres,
            lambda step: cur.execute(step.encode()) if isinstance(step, str) else step(cur),
            lambda migration: cur.execute(insert, (migration.version, migration.name, time.time_ns())),
            target=target,
            where=where,
        )
    return current
