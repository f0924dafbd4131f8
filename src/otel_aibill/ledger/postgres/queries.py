"""Reads of the PostgreSQL ledger: rows, summaries, lookups (each one statement, one snapshot).

Summaries are plain ``sum()``s over the rows: ``numeric`` sums are exact, so no integer parts
or rollup are needed for correctness (a rollup for long ranges is not built on PostgreSQL yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from otel_aibill.ledger.base import Customer, LedgerRow, UsageQuery, UsageSummary
from otel_aibill.ledger.postgres.database import Connection
from otel_aibill.ledger.postgres.schema import EXPORTABLE
from otel_aibill.ledger.rows import SELECT_COLUMNS, datetime_to_ns, from_row
from otel_aibill.ledger.summary import PENDING_CUSTOMER, SummaryBuilder, group_expressions

_SELECT = f"SELECT {', '.join(SELECT_COLUMNS)} FROM usage"
_PENDING = "customer IS NULL AND duplicate_of IS NULL"
_COUNTS = (
    "count(*)",
    "sum(input_tokens)",
    "sum(output_tokens)",
    "sum(cache_read_tokens)",
    "sum(cache_write_tokens)",
    "sum(reasoning_tokens)",
    "count(*) FILTER (WHERE status = 'unpriced')",
    "count(*) FILTER (WHERE customer IS NULL)",
    "sum(cost) FILTER (WHERE status = 'priced')",
    "sum(billed) FILTER (WHERE status = 'priced')",
)


def filters(*, customer: str | None, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    """WHERE clause (billable rows) and its parameters."""
    where = "duplicate_of IS NULL"
    args: list[Any] = []
    if customer == PENDING_CUSTOMER:
        where += " AND customer IS NULL"
    elif customer is not None:
        where += " AND customer = %s"
        args.append(customer)
    if since is not None:
        where += " AND start_time_ns >= %s"
        args.append(datetime_to_ns(since))
    if until is not None:
        where += " AND start_time_ns < %s"
        args.append(datetime_to_ns(until))
    return where, args


def rows(
    conn: Connection,
    *,
    trace_id: str | None,
    customer: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[LedgerRow]:
    where, args = filters(customer=customer, since=since, until=until)
    if trace_id is not None:
        where += " AND trace_id = %s"
        args.append(trace_id)
    found = conn.execute(f"{_SELECT} WHERE {where} ORDER BY seq DESC LIMIT %s", [*args, limit])
    return [from_row(r) for r in found]


def batch_rows(conn: Connection, batch_id: str) -> list[LedgerRow]:
    found = conn.execute(f"{_SELECT} WHERE export_batch = %s ORDER BY seq", (batch_id,))
    return [from_row(r) for r in found]


def exportable(conn: Connection, limit: int) -> list[LedgerRow]:
    found = conn.execute(f"{_SELECT} WHERE {EXPORTABLE} ORDER BY seq LIMIT %s", (limit,))
    return [from_row(r) for r in found]


def pending_attribution(
    conn: Connection, trace_ids: Iterable[str] | None, started_before_ns: int | None, limit: int
) -> list[LedgerRow]:
    where, args = _PENDING, list[Any]()
    if started_before_ns is not None:
        where += " AND start_time_ns < %s"
        args.append(started_before_ns)
    if trace_ids is not None:
        ids = list(dict.fromkeys(trace_ids))
        if not ids:
            return []
        where += " AND trace_id = ANY(%s::text[])"
        args.append(ids)
    found = conn.execute(f"{_SELECT} WHERE {where} ORDER BY seq LIMIT %s", [*args, limit])
    return [from_row(r) for r in found]


def usage_summary(conn: Connection, query: UsageQuery) -> list[UsageSummary]:
    """Exact sums per group of ``query.by`` and currency (``SummaryBuilder`` shapes the result)."""
    keys = [*group_expressions(query.by), "currency"]
    where, args = filters(customer=query.customer, since=query.since, until=query.until)
    groups = ", ".join(str(i) for i in range(1, len(keys) + 1))
    builder = SummaryBuilder(by=tuple(query.by))
    n = len(keys)
    for row in conn.execute(
        f"SELECT {', '.join([*keys, *_COUNTS])} FROM usage WHERE {where} GROUP BY {groups}", args
    ):
        builder.add_aggregate(row[:-2], money_in_sql=False)
        builder.add_amounts([(*row[:n], row[-2], row[-1])])
    return builder.build()


def not_billable_counts(conn: Connection) -> dict[str, int]:
    found = conn.execute("SELECT reason, sum(count) FROM not_billable_counts GROUP BY reason ORDER BY reason")
    return {reason: int(n) for reason, n in found}


def customers(conn: Connection) -> list[Customer]:
    found = conn.execute("SELECT customer_id, stripe_customer_id, name FROM customers ORDER BY customer_id")
    return [Customer(customer_id=c, stripe_customer_id=s, name=n) for c, s, n in found]
