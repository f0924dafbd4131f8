"""Superseding stored bills on SQLite: a later span of the same call brought better information.

The pipeline bills a provider call once; when a span of a call it stored in an earlier batch
arrives with more (cached tokens, the dated model...), the stored row's usage, cost and bill are
replaced by the merged ones (``samecall.py``), in the append's transaction. The row keeps its ids,
its customer and its place; a row already folded into the rollup is taken out of it and put back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from otel_aibill.ledger.rows import INSERT_COLUMNS, RESPONSE_BUCKET_NS, to_params
from otel_aibill.ledger.sqlite import rollup
from otel_aibill.ledger.sqlite.append import DimKey, Inserter
from otel_aibill.usage import TOKEN_FIELDS, PricedUsage

_SET = (
    *TOKEN_FIELDS,
    "response_id",
    "customer",
    "status",
    "cost",
    "billed",
    "markup_rule",
    "cost_units",
    "billed_units",
)
_FROM_PARAMS = tuple(INSERT_COLUMNS.index(c) for c in _SET)
_UPDATE = (
    f"UPDATE usage_rows SET {', '.join(f'{c} = ?' for c in _SET)}, resp_bucket = ?, dim_id = ? WHERE seq = ?"
)
_FIND = (
    "SELECT seq, customer, duplicate_of, export_batch FROM usage_rows"
    " WHERE start_time_ns = ? AND trace_id = ? AND span_id = ?"
)


@dataclass(slots=True)
class Superseded:
    """What ``supersede`` did."""

    changed: int = 0
    exported: list[PricedUsage] = field(default_factory=list)  # already sent: left as they are
    other_customer: list[tuple[PricedUsage, str]] = field(default_factory=list)  # billed for another customer


def supersede(
    conn: sqlite3.Connection,
    inserter: Inserter,
    rows: Sequence[PricedUsage],
    now: int,
    new_dims: dict[DimKey, int],
) -> Superseded:
    """Replace the stored rows of ``rows``' spans (same start, trace and span id) by ``rows``, in
    the caller's transaction. Rows not stored, or stored as a sibling duplicate, are left alone;
    rows already in an export batch, or attributed to another customer than the row names, are
    left alone and returned (the second kind to be billed for the stored customer and retried)."""
    done = Superseded()
    if not rows:
        return done
    params = [to_params(row, now) for row in rows]  # the same checks as an insert
    dim_ids = inserter.dim_ids(conn, rows, now, new_dims)
    folded = rollup.folded_seq(conn)
    updates: list[tuple[object, ...]] = []
    moved: list[int] = []
    for row, p, dim_id in zip(rows, params, dim_ids, strict=True):
        usage = row.usage
        found = conn.execute(_FIND, (usage.start_time_ns, usage.trace_id, usage.span_id)).fetchone()
        if found is None:
            continue
        seq, customer, duplicate_of, batch = found
        if duplicate_of is not None:
            continue
        if batch is not None:
            done.exported.append(row)
            continue
        if customer is not None and customer != usage.customer:
            done.other_customer.append((row, customer))
            continue
        bucket = None if usage.response_id is None else usage.start_time_ns // RESPONSE_BUCKET_NS
        updates.append((*(p[i] for i in _FROM_PARAMS), bucket, dim_id, seq))
        if seq <= folded:
            moved.append(seq)
    if not updates:
        return done
    seqs = json.dumps(moved)
    if moved:
        rollup.unfold_rows(conn, seqs)
    done.changed = conn.executemany(_UPDATE, updates).rowcount
    if moved:
        rollup.refold_rows(conn, seqs)
    if len(updates) > len(moved):
        rollup.note_tail_change(conn)
    return done
