"""Trace customers on PostgreSQL: the first customer stored for a trace wins, across processes.

The primary key settles races: of two transactions naming a trace at once, the second waits for
the first and then stores nothing. Ids go in key order, so two batches naming the same traces
wait for each other in one order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from otel_aibill.ledger.postgres.database import Connection


def add(conn: Connection, customers: Mapping[str, str], now_ns: int) -> tuple[str, ...]:
    """Store the customers of traces that have none yet; returns those, in ``customers`` order."""
    if not customers:
        return ()
    ids = sorted(customers)
    stored = conn.execute(
        "INSERT INTO trace_customers (trace_id, customer, first_seen_ns)"
        " SELECT t, c, %s FROM unnest(%s::text[], %s::text[]) AS x(t, c) ORDER BY t"
        " ON CONFLICT DO NOTHING RETURNING trace_id",
        (now_ns, ids, [customers[t] for t in ids]),
    ).fetchall()
    new = {trace_id for (trace_id,) in stored}
    return tuple(t for t in customers if t in new)


def known(conn: Connection, trace_ids: Sequence[str]) -> dict[str, str]:
    if not trace_ids:
        return {}
    rows = conn.execute(
        "SELECT trace_id, customer FROM trace_customers WHERE trace_id = ANY(%s::text[])", (list(trace_ids),)
    )
    return {trace_id: customer for trace_id, customer in rows}


def expire(conn: Connection, seen_before_ns: int) -> int:
    return conn.execute("DELETE FROM trace_customers WHERE first_seen_ns < %s", (seen_before_ns,)).rowcount
