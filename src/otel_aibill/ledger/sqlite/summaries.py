"""Usage summaries on SQLite: whole days from the rollup, the rest from the rows (``rollup.py``).

A summary = rollup (whole days) + its unfolded tail (same days) + the rows of the partial days at
the window's edges (``summary.plan``), so it is exact at any moment. Summaries over rows group by
the rows' own keys and ``dim_id`` first, then join the few groups with ``dims`` and regroup.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from otel_aibill.ledger import money
from otel_aibill.ledger.base import UsageQuery, UsageSummary
from otel_aibill.ledger.rows import datetime_to_ns
from otel_aibill.ledger.sqlite import rollup
from otel_aibill.ledger.sqlite.queries import filters
from otel_aibill.ledger.sqlite.sql import DIMS
from otel_aibill.ledger.summary import DAY_NS, PENDING_CUSTOMER, Part, SummaryBuilder, group_expressions, plan

_DIM_GROUPS = frozenset(("provider", "model", "operation"))


def usage_summary(conn: sqlite3.Connection, query: UsageQuery) -> list[UsageSummary]:
    """Exact sums per group of ``query.by`` (and currency), read in ``conn``'s snapshot."""
    since = None if query.since is None else datetime_to_ns(query.since)
    until = None if query.until is None else datetime_to_ns(query.until)
    builder = SummaryBuilder(by=tuple(query.by))
    folded = rollup.folded_seq(conn)
    for part in plan(since, until):
        if part.days:
            summarize_rollup(conn, builder, query, part)
            low = None if part.low is None else part.low * DAY_NS
            high = None if part.high is None else part.high * DAY_NS
            summarize_rows(conn, builder, query, low, high, after_seq=folded)
        else:
            summarize_rows(conn, builder, query, part.low, part.high, after_seq=None)
    return builder.build()


def summarize_rollup(
    conn: sqlite3.Connection, builder: SummaryBuilder, query: UsageQuery, part: Part
) -> None:
    """Add the rollup's groups of the whole days ``part`` to ``builder``."""
    keys = ", ".join([*group_expressions(query.by, rollup=True), "currency"])
    where, args = "spans != 0", list[Any]()
    if query.customer is not None:
        where += " AND customer = ?"
        args.append(rollup.PENDING_KEY if query.customer == PENDING_CUSTOMER else query.customer)
    if part.low is not None:
        where += " AND day >= ?"
        args.append(part.low)
    if part.high is not None:
        where += " AND day < ?"
        args.append(part.high)
    sums = ", ".join(
        f"group_concat({c}, ' ')" if c.endswith("_extra") else f"sum({c})"
        for c in (*rollup.COUNTS, *rollup.PARTS)
    )
    rows = conn.execute(f"SELECT {keys}, {sums} FROM usage_daily WHERE {where} GROUP BY {keys}", args)
    for row in rows:
        builder.add_rollup(row)


def summarize_rows(
    conn: sqlite3.Connection,
    builder: SummaryBuilder,
    query: UsageQuery,
    since: int | None,
    until: int | None,
    *,
    after_seq: int | None,
) -> None:
    """Aggregate ``usage`` rows in ``[since, until)`` (only those above ``after_seq`` if set)."""
    groups = group_expressions(query.by)
    where, args = filters(customer=query.customer, since=None, until=None)
    table = f"usage_rows {DIMS}"
    if after_seq is not None:  # the tail is a rowid range; never scan the time index
        table = f"usage_rows NOT INDEXED {DIMS}"
        where += " AND seq > ?"
        args.append(after_seq)
    if since is not None:
        where += " AND start_time_ns >= ?"
        args.append(since)
    if until is not None:
        where += " AND start_time_ns < ?"
        args.append(until)
    keys = ", ".join([*groups, "currency"])
    counts = [
        "count(*)",
        "sum(input_tokens)",
        "sum(output_tokens)",
        "sum(cache_read_tokens)",
        "sum(cache_write_tokens)",
        "sum(reasoning_tokens)",
        "sum(status = 'unpriced')",
        "sum(customer IS NULL)",
    ]
    priced = "status = 'priced'"
    parts = [f(col, priced) for col in ("cost", "billed") for f in (money.sum_hi, money.sum_lo)]
    inexact = (
        f"{priced} AND ((cost IS NOT NULL AND cost_units IS NULL)"
        " OR (billed IS NOT NULL AND billed_units IS NULL))"
    )
    rows_table = table.removesuffix(f" {DIMS}")
    money_in_sql = True
    try:
        aggregate = conn.execute(
            _by_dims_then_keys(query.by, rows_table, where, [*counts, *parts]), args
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "overflow" not in str(exc):
            raise
        money_in_sql = False
        aggregate = conn.execute(_by_dims_then_keys(query.by, rows_table, where, counts), args).fetchall()
    for row in aggregate:
        builder.add_aggregate(row, money_in_sql=money_in_sql)
    if money_in_sql:
        amounts = f"{money.unfit('cost')}, {money.unfit('billed')}"
        extra_where = inexact
    else:
        amounts, extra_where = "cost, billed", "status = 'priced'"
    builder.add_amounts(
        conn.execute(f"SELECT {keys}, {amounts} FROM {table} WHERE {where} AND {extra_where}", args)
    )


def _by_dims_then_keys(by: Sequence[str], rows_table: str, where: str, sums: list[str]) -> str:
    """``sums`` over ``rows_table`` rows matching ``where``, grouped by ``by`` and currency: first by
    the row columns among them and ``dim_id`` (an integer key to sort), then, over those few
    groups joined with ``dims``, by the keys themselves (joining every row instead costs a
    ``dims`` lookup a row). Columns: the ``by`` values, currency, then ``sums``."""
    row_keys = [(i, name) for i, name in enumerate(by) if name not in _DIM_GROUPS]
    inner_keys = [f"{group_expressions((name,))[0]} AS k{i}" for i, name in row_keys]
    values = [f"{expr} AS v{j}" for j, expr in enumerate(sums)]
    inner = (
        f"SELECT {', '.join([*inner_keys, 'dim_id', *values])} FROM {rows_table} WHERE {where}"
        f" GROUP BY {', '.join([*(f'k{i}' for i, _ in row_keys), 'dim_id'])}"
    )
    outer_keys = [f"dims.{name}" if name in _DIM_GROUPS else f"g.k{i}" for i, name in enumerate(by)]
    outer_keys.append("dims.currency")
    return (
        f"SELECT {', '.join(outer_keys)}, {', '.join(f'sum(g.v{j})' for j in range(len(sums)))}"
        f" FROM ({inner}) AS g CROSS JOIN dims ON dims.id = g.dim_id GROUP BY {', '.join(outer_keys)}"
    )
