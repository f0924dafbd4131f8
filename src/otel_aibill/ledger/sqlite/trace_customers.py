"""Trace customers on SQLite: a small table of recent ones, merged into the large one in key order.

Trace ids are random, so adding a batch's few thousand to one large table would touch most of its
pages, and a commit writes every touched page to the log: the cost of an append would grow with
the table. New ones go to ``trace_customers_recent`` instead, which stays small, and are merged
into ``trace_customers`` in key order every ``MERGE_TRACES`` (each page of the large table is then
written once per merge). Lookups and "first customer wins" read both tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from otel_aibill.ledger.sqlite.sql import chunks, marks

MERGE_TRACES = 50_000  # new trace customers kept apart before a merge (``add``)
_TABLES = ("trace_customers", "trace_customers_recent")


def known(conn: sqlite3.Connection, trace_ids: list[str]) -> dict[str, str]:
    """The stored customers of ``trace_ids`` (in either trace customer table)."""
    found: dict[str, str] = {}
    for chunk in chunks(trace_ids):
        listed = marks(len(chunk))
        rows = conn.execute(
            f"SELECT trace_id, customer FROM trace_customers WHERE trace_id IN ({listed}) UNION ALL"
            f" SELECT trace_id, customer FROM trace_customers_recent WHERE trace_id IN ({listed})",
            [*chunk, *chunk],
        )
        found.update(rows)
    return found


def add(conn: sqlite3.Connection, customers: Mapping[str, str], now: int) -> tuple[str, ...]:
    """Store the customers of traces not known yet (the first one named wins); returns those."""
    if not customers:
        return ()
    trace_ids = list(customers)
    stored = known(conn, trace_ids)
    new = [t for t in trace_ids if t not in stored]
    if not new:
        return ()
    conn.executemany(
        "INSERT INTO trace_customers_recent (trace_id, customer, first_seen_ns) VALUES (?, ?, ?)",
        [(t, customers[t], now) for t in new],
    )
    (recent,) = conn.execute("SELECT count(*) FROM trace_customers_recent").fetchone()
    if recent >= MERGE_TRACES:
        conn.execute(  # the first customer named wins, as everywhere
            "INSERT INTO trace_customers SELECT * FROM trace_customers_recent WHERE true"
            " ORDER BY trace_id ON CONFLICT DO NOTHING"
        )
        conn.execute("DELETE FROM trace_customers_recent")
    return tuple(new)


def expire(conn: sqlite3.Connection, seen_before_ns: int) -> int:
    """Forget the customers of traces first stored before ``seen_before_ns`` (both tables).

    Without this the large table only grows, and each merge into it rewrites most of its
    pages once it has more pages than the merge has keys (``bench_trace_merge.py``)."""
    expired = 0
    for table in _TABLES:
        expired += conn.execute(f"DELETE FROM {table} WHERE first_seen_ns < ?", (seen_before_ns,)).rowcount
    return expired
