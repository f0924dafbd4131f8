"""Counts of spans that produced no billable usage, per reason and UTC day, on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from otel_aibill.ledger.checks import utc_day


def add(conn: sqlite3.Connection, now: int, totals: Mapping[str, int]) -> None:
    """Add ``totals`` (``checks.not_billable_totals``) to today's counts."""
    if totals:
        day = utc_day(now)
        conn.executemany(
            "INSERT INTO not_billable_counts (reason, day, count) VALUES (?, ?, ?)"
            " ON CONFLICT (reason, day) DO UPDATE SET count = count + excluded.count",
            [(reason, day, n) for reason, n in totals.items()],
        )


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT reason, sum(count) FROM not_billable_counts GROUP BY reason ORDER BY reason")
    return {reason: int(n) for reason, n in rows}
