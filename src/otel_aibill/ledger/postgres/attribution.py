"""Attribution on PostgreSQL: pending rows take a customer once, whoever attributes them.

One ``UPDATE`` guarded by ``customer IS NULL``: of two processes attributing one row at once,
the second waits for the first's row lock, finds the row attributed and leaves it (PostgreSQL
re-reads the guard on the new row version). Updates go in key order so that concurrent
attributions of overlapping rows lock them in one order.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_aibill.ledger.checks import AttributionParams
from otel_aibill.ledger.postgres.database import Connection

_UPDATE = (
    "UPDATE usage_rows AS u SET customer = a.customer, billed = a.billed, markup_rule = a.rule"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[], %s::text[])"
    " AS a(trace_id, span_id, customer, billed, rule)"
    " WHERE u.trace_id = a.trace_id AND u.span_id = a.span_id AND u.customer IS NULL"
    " AND u.duplicate_of IS NULL AND (u.status = 'priced' OR a.billed IS NULL)"
)


def set_attribution(conn: Connection, updates: Sequence[AttributionParams]) -> int:
    """Apply ``checks.checked_attributions`` updates; returns the rows changed. A billed amount
    applies only to a priced row: an unpriced row given one is left alone."""
    ordered = sorted(updates, key=lambda p: (p[4], p[5]))
    return conn.execute(
        _UPDATE,
        (
            [p[4] for p in ordered],
            [p[5] for p in ordered],
            [p[0] for p in ordered],
            [p[1] for p in ordered],  # exact decimal texts
            [p[3] for p in ordered],
        ),
    ).rowcount
