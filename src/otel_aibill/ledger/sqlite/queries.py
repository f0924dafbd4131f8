"""Reads of billable rows on SQLite: by customer, time and trace; by export batch."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from otel_aibill.ledger.base import LedgerRow
from otel_aibill.ledger.rows import datetime_to_ns, from_row
from otel_aibill.ledger.sqlite.sql import BILLABLE, SELECT
from otel_aibill.ledger.summary import PENDING_CUSTOMER


def filters(*, customer: str | None, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    """The WHERE (and its arguments) of billable rows of ``customer`` (``"(pending)"``: none
    yet) starting in ``[since, until)``."""
    where = BILLABLE
    args: list[Any] = []
    if customer == PENDING_CUSTOMER:
        where += " AND customer IS NULL"
    elif customer is not None:
        where += " AND customer = ?"
        args.append(customer)
    if since is not None:
        where += " AND start_time_ns >= ?"
        args.append(datetime_to_ns(since))
    if until is not None:
        where += " AND start_time_ns < ?"
        args.append(datetime_to_ns(until))
    return where, args


def rows(
    conn: sqlite3.Connection,
    *,
    trace_id: str | None,
    customer: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[LedgerRow]:
    """Billable rows, most recent ``seq`` first.

    There is no index on ``trace_id`` alone (it would cost a large share of the append rate):
    a trace lookup scans, so narrow it with ``since``/``until`` when the time is known.
    """
    where, args = filters(customer=customer, since=since, until=until)
    if trace_id is not None:
        where += " AND trace_id = ?"
        args.append(trace_id)
    found = conn.execute(f"{SELECT} WHERE {where} ORDER BY seq DESC LIMIT ?", [*args, limit]).fetchall()
    return [from_row(r) for r in found]


def batch_rows(conn: sqlite3.Connection, batch_id: str) -> list[LedgerRow]:
    """The rows assigned to one export batch, in ``seq`` order."""
    found = conn.execute(f"{SELECT} WHERE export_batch = ? ORDER BY seq", (batch_id,)).fetchall()
    return [from_row(r) for r in found]
