"""Pending rows and their attribution on SQLite, keeping the rollup's groups right.

Rows already folded into the rollup move from the pending group to the customer's: their
contribution is subtracted before the update and added back after (``rollup.unfold_rows`` and
``refold_rows``); a changed tail row makes folds computed before it stale (``tail_changes``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from otel_aibill.ledger.base import LedgerRow
from otel_aibill.ledger.checks import AttributionParams
from otel_aibill.ledger.rows import from_row
from otel_aibill.ledger.sqlite import rollup
from otel_aibill.ledger.sqlite.sql import SELECT, chunks, marks, select

_ATTRIBUTABLE = (
    "trace_id = ? AND span_id = ? AND customer IS NULL AND duplicate_of IS NULL"
    " AND (status = 'priced' OR ? IS NULL)"
)
_PENDING = "customer IS NULL AND duplicate_of IS NULL"


def set_attribution(conn: sqlite3.Connection, updates: Sequence[AttributionParams]) -> int:
    """Apply checked attributions in the caller's write transaction; returns the rows changed."""
    params = [(*p, p[1]) for p in updates]  # the billed text again, for ``? IS NULL``
    folded = rollup.folded_seq(conn)
    moved: list[int] = []
    if folded:  # rows already in the rollup move from the pending group to the customer's
        for p in params:
            moved += (
                seq
                for (seq,) in conn.execute(
                    f"SELECT seq FROM usage_rows INDEXED BY usage_pending_trace WHERE {_ATTRIBUTABLE}"
                    " AND seq <= ?",
                    (*p[4:], folded),
                )
            )
    seqs = json.dumps(moved)
    if moved:
        rollup.unfold_rows(conn, seqs)
    changed: int = conn.executemany(
        "UPDATE usage_rows SET customer = ?, billed = ?, billed_units = ?, markup_rule = ?"
        f" WHERE {_ATTRIBUTABLE}",
        params,
    ).rowcount
    if moved:
        rollup.refold_rows(conn, seqs)
    if changed > len(moved):  # tail rows changed too: folds computed before are stale
        rollup.note_tail_change(conn)
    return changed


def pending(
    conn: sqlite3.Connection,
    trace_ids: Iterable[str] | None,
    *,
    started_before_ns: int | None,
    limit: int,
) -> list[LedgerRow]:
    """Pending rows (customer unknown), oldest ``seq`` first; sibling duplicates are never pending."""
    where = _PENDING
    args: list[Any] = []
    if started_before_ns is not None:
        where += " AND start_time_ns < ?"
        args.append(started_before_ns)
    if trace_ids is None:
        rows = conn.execute(f"{SELECT} WHERE {where} ORDER BY seq LIMIT ?", [*args, limit]).fetchall()
    else:
        rows = []
        for chunk in chunks(list(dict.fromkeys(trace_ids))):
            rows += conn.execute(
                f"{select('INDEXED BY usage_pending_trace')} WHERE {where}"
                f" AND trace_id IN ({marks(len(chunk))}) ORDER BY seq LIMIT ?",
                [*args, *chunk, limit],
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        rows = rows[:limit]
    return [from_row(r) for r in rows]
