"""Attribution on PostgreSQL: pending rows take a customer once, whoever attributes them.

One ``UPDATE`` guarded by ``customer IS NULL``: of two processes attributing one row at once,
the second waits for the first's row lock, finds the row attributed and leaves it (PostgreSQL
re-reads the guard on the new row version). Updates go in key order so that concurrent
attributions of overlapping rows lock them in one order.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_aibill.ledger import money
from otel_aibill.ledger.base import Attribution
from otel_aibill.ledger.postgres.database import Connection
from otel_aibill.ledger.rows import InvalidRowError

_UPDATE = (
    "UPDATE usage_rows AS u SET customer = a.customer, billed = a.billed, markup_rule = a.rule"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[], %s::text[])"
    " AS a(trace_id, span_id, customer, billed, rule)"
    " WHERE u.trace_id = a.trace_id AND u.span_id = a.span_id AND u.customer IS NULL"
    " AND u.duplicate_of IS NULL AND (u.status = 'priced' OR a.billed IS NULL)"
)


def checked(updates: Sequence[Attribution]) -> list[Attribution]:
    """The updates in key order; refuses a missing customer or an amount that is not a Decimal."""
    for a in updates:
        if type(a.customer) is not str or not a.customer:
            raise InvalidRowError(
                f"attribution of {a.trace_id}/{a.span_id} needs a customer, got {a.customer!r}"
            )
        money.to_text(a.billed, "billed")
    return sorted(updates, key=lambda a: (a.trace_id, a.span_id))


def set_attribution(conn: Connection, updates: Sequence[Attribution]) -> int:
    """Apply ``checked`` updates; returns the rows changed."""
    return conn.execute(
        _UPDATE,
        (
            [a.trace_id for a in updates],
            [a.span_id for a in updates],
            [a.customer for a in updates],
            [a.billed for a in updates],
            [a.markup_rule for a in updates],
        ),
    ).rowcount
