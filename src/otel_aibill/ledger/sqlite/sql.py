"""Statement pieces the SQLite ledger's modules share: the row select, filters, ``IN`` lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from otel_aibill.ledger.rows import SELECT_COLUMNS

CHUNK = 500  # ids per IN (...) list, well under SQLite's parameter limit
DIMS = "CROSS JOIN dims ON dims.id = usage_rows.dim_id"
"""``usage_rows`` with their ``dims`` columns (what the ``usage`` view shows); CROSS JOIN keeps
``usage_rows`` the outer loop, so its indexes (and INDEXED BY hints) drive every query."""
BILLABLE = "duplicate_of IS NULL"
EXPORTABLE = (
    "export_batch IS NULL AND customer IS NOT NULL AND billed IS NOT NULL"
    " AND status = 'priced' AND duplicate_of IS NULL"
)
"""Rows an export batch may claim (the partial index ``usage_exportable`` has the same WHERE)."""


def select(hint: str = "") -> str:
    """SELECT of ``SELECT_COLUMNS`` rows, with an optional index hint on ``usage_rows``."""
    return f"SELECT {', '.join(SELECT_COLUMNS)} FROM usage_rows {hint} {DIMS}"


SELECT = select()


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(n: int) -> str:
    return ", ".join("?" * n)
