"""Exportable rows and their claim by an export batch, on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from otel_aibill.ledger.base import LedgerRow
from otel_aibill.ledger.checks import refused_export
from otel_aibill.ledger.rows import from_row
from otel_aibill.ledger.sqlite.sql import EXPORTABLE, chunks, marks, select


def exportable(conn: sqlite3.Connection, limit: int) -> list[LedgerRow]:
    rows = conn.execute(
        f"{select('INDEXED BY usage_exportable')} WHERE {EXPORTABLE} ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    return [from_row(r) for r in rows]


def assign_export_batch(conn: sqlite3.Connection, wanted: Sequence[int], batch_id: str) -> None:
    """Claim ``wanted`` (distinct seqs) for ``batch_id`` in the caller's write transaction; raises
    ``ValueError`` before changing anything if one is missing, not exportable or in another batch."""
    ok: set[int] = set()
    for chunk in chunks(wanted):
        rows = conn.execute(
            f"SELECT seq FROM usage_rows WHERE seq IN ({marks(len(chunk))})"
            f" AND (export_batch = ? OR ({EXPORTABLE}))",
            [*chunk, batch_id],
        )
        ok.update(row[0] for row in rows)
    refused = refused_export(wanted, ok, batch_id)
    if refused is not None:
        raise refused
    for chunk in chunks(wanted):
        conn.execute(
            f"UPDATE usage_rows SET export_batch = ? WHERE seq IN ({marks(len(chunk))})"
            " AND export_batch IS NULL",
            [batch_id, *chunk],
        )
