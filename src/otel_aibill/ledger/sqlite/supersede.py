"""Superseding stored bills on SQLite (which rows: ``ledger/supersede.py``), in the append's
transaction. The row keeps its ids and its place; its usage, cost, bill, ``dims`` id and response
bucket change; a row already folded into the rollup is taken out of it and put back."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from otel_aibill.ledger.rows import INSERT_COLUMNS, RESPONSE_BUCKET_NS, to_params
from otel_aibill.ledger.sqlite import rollup
from otel_aibill.ledger.sqlite.append import DimKey, Inserter
from otel_aibill.ledger.supersede import Plan, StoredRow, plan, span_key
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
"""The stored row of a span, by the unique key."""


def supersede(
    conn: sqlite3.Connection,
    inserter: Inserter,
    records: Sequence[PricedUsage],
    now: int,
    new_dims: dict[DimKey, int],
) -> Plan:
    """Replace the stored rows of ``records`` that may be (``ledger/supersede.plan``), in the
    caller's transaction; returns the plan (what was replaced, what was left and why)."""
    if not records:
        return Plan()
    params = [to_params(record, now) for record in records]  # the same checks as an insert
    dim_ids = inserter.dim_ids(conn, records, now, new_dims)
    stored = {}
    for record in records:
        key = span_key(record)
        found = conn.execute(_FIND, key).fetchone()
        if found is not None:
            stored[key] = StoredRow(*found)
    done = plan(records, stored)
    if not done.replace:
        return done
    by_record = {id(r): (p, d) for r, p, d in zip(records, params, dim_ids, strict=True)}
    folded = rollup.folded_seq(conn)
    updates: list[tuple[object, ...]] = []
    moved: list[int] = []
    for record, seq in done.replace:
        p, dim_id = by_record[id(record)]
        usage = record.usage
        bucket = None if usage.response_id is None else usage.start_time_ns // RESPONSE_BUCKET_NS
        updates.append((*(p[i] for i in _FROM_PARAMS), bucket, dim_id, seq))
        if seq <= folded:
            moved.append(seq)
    seqs = json.dumps(moved)
    if moved:
        rollup.unfold_rows(conn, seqs)
    conn.executemany(_UPDATE, updates)
    if moved:
        rollup.refold_rows(conn, seqs)
    if len(updates) > len(moved):
        rollup.note_tail_change(conn)
    return done
