"""Superseding stored bills on PostgreSQL (see ``ledger/supersede.py``), in the append's
transaction: the stored rows are read under their row locks, in key order, then updated by seq."""

from __future__ import annotations

from collections.abc import Sequence

from otel_aibill.ledger.postgres.database import Connection
from otel_aibill.ledger.rows import RESPONSE_BUCKET_NS
from otel_aibill.ledger.supersede import Plan, StoredRow, plan, span_key
from otel_aibill.usage import TOKEN_FIELDS, PricedUsage

_FIND = (
    "SELECT u.start_time_ns, u.trace_id, u.span_id, u.seq, u.customer, u.duplicate_of, u.export_batch"
    " FROM usage_rows u JOIN unnest(%s::int8[], %s::text[], %s::text[])"
    " AS k(start_time_ns, trace_id, span_id) USING (start_time_ns, trace_id, span_id)"
    " ORDER BY u.start_time_ns, u.trace_id, u.span_id FOR UPDATE OF u"
)
_SET = (
    *TOKEN_FIELDS,
    "response_id",
    "customer",
    "status",
    "cost",
    "billed",
    "markup_rule",
    "resp_bucket",
    "dim_id",
)
_TYPES = (
    *("int8",) * len(TOKEN_FIELDS),
    "text",
    "text",
    "text",
    "numeric",
    "numeric",
    "text",
    "int8",
    "int4",
)
_UPDATE = (
    f"UPDATE usage_rows AS u SET {', '.join(f'{c} = a.{c}' for c in _SET)}"
    f" FROM unnest(%s::int8[], {', '.join(f'%s::{t}[]' for t in _TYPES)}) AS a(seq, {', '.join(_SET)})"
    " WHERE u.seq = a.seq"
)


def supersede(conn: Connection, records: Sequence[PricedUsage], dim_ids: Sequence[int]) -> Plan:
    """Replace the stored rows of ``records`` that may be (``supersede.plan``); ``dim_ids`` are
    the records' ``dims`` ids."""
    if not records:
        return Plan()
    keys = [span_key(r) for r in records]
    found = conn.execute(_FIND, ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])).fetchall()
    stored = {(r[0], r[1], r[2]): StoredRow(r[3], r[4], r[5], r[6]) for r in found}
    done = plan(records, stored)
    if done.replace:
        dims = {id(r): d for r, d in zip(records, dim_ids, strict=True)}
        columns: list[list[object]] = [[] for _ in range(1 + len(_SET))]
        for record, seq in sorted(done.replace, key=lambda x: x[1]):
            u = record.usage
            bucket = None if u.response_id is None else u.start_time_ns // RESPONSE_BUCKET_NS
            values = (
                seq,
                *(getattr(u, f) for f in TOKEN_FIELDS),
                u.response_id,
                u.customer,
                "priced" if record.cost is not None else "unpriced",
                record.cost,
                record.billed,
                record.markup_rule,
                bucket,
                dims[id(record)],
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        conn.execute(_UPDATE, columns)
    return done
