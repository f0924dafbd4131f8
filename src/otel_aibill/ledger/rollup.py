"""The per-day rollup of billable usage: what makes long-range summaries independent of row count.

``usage_daily`` holds, per (day, customer, provider, model, operation, currency), the counts and
exact Decimal sums (TEXT) of every billable row with ``seq <= rollup_state.folded_seq``; rows
above that mark (the *tail*) are read from ``usage`` itself. Appends fold the tail in when it
reaches ``FOLD_EVERY`` rows, in the same transaction, so a fold touches each group once per
``FOLD_EVERY`` rows instead of once a batch. ``set_attribution`` moves folded rows between groups
(pending -> customer) by subtracting their contribution before the update and adding it after,
with the same statement. A summary = rollup (whole days) + tail (same days) + ``usage`` for the
partial days at the edges of the window, so it is exact at any moment.

Sums are exact: the fold adds the integer parts of ``money.py`` in SQL and joins them, with any
amount that has no integer parts, in Python (``dec_total``); groups are merged with ``dec_add``.
Both are registered on the writing connection (``register_functions``); readers need neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from decimal import Decimal

from otel_aibill.ledger import money
from otel_aibill.ledger.summary import DAY_NS

FOLD_EVERY = 50_000
"""Tail rows that trigger a fold; also the most rows a summary reads from ``usage`` for whole days."""
_FOLD_CHUNK = 250_000  # rows per fold statement when a long tail (a migration backfill) is folded

KEYS = ("day", "customer", "provider", "model", "operation", "currency")
COUNTS = (
    "spans",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "unpriced_spans",
    "pending_spans",
)
PENDING_KEY = ""
"""The ``customer`` of pending usage in the rollup (a key column cannot be NULL)."""

_CHECKS = ", ".join(f"{c} INTEGER NOT NULL CHECK (typeof({c}) = 'integer')" for c in COUNTS)
STATEMENTS = (
    "CREATE TABLE usage_daily ("
    " day INTEGER NOT NULL, customer TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,"
    f" operation TEXT NOT NULL, currency TEXT NOT NULL, {_CHECKS},"
    " cost TEXT NOT NULL, billed TEXT NOT NULL,"
    " PRIMARY KEY (day, customer, provider, model, operation, currency)"
    ") WITHOUT ROWID",
    "CREATE TABLE rollup_state (id INTEGER PRIMARY KEY CHECK (id = 1), folded_seq INTEGER NOT NULL)",
    "INSERT INTO rollup_state (id, folded_seq) VALUES (1, 0)",
)
"""Schema of the rollup (a migration); ``fold`` then backfills it from existing rows."""

_COLUMNS = ", ".join((*KEYS, *COUNTS, "cost", "billed"))
# Counts stay integers (the CHECKs refuse SQLite's silent switch to REAL on overflow).
_MERGE = (
    f" ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS)
    + ", cost = dec_add(cost, excluded.cost), billed = dec_add(billed, excluded.billed)"
)


def _fold_sql(rows: str, *, sign: int, integer_parts: bool) -> str:
    """Add (sign 1) or subtract (-1) the contribution of the billable ``usage`` rows ``rows``."""
    neg = "-" if sign < 0 else ""
    counts = (
        "count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),"
        " sum(cache_write_tokens), sum(reasoning_tokens), sum(status = 'unpriced'), sum(customer IS NULL)"
    )
    counts = ", ".join(f"{neg}{c.strip()}" for c in counts.split(", "))

    def amount(col: str) -> str:
        if integer_parts:
            return (
                f"dec_total(sum({col}_hi), sum({col}_lo),"
                f" group_concat(CASE WHEN {col}_hi IS NULL THEN {col} END, ' '), {sign})"
            )
        return f"dec_total(0, 0, group_concat({col}, ' '), {sign})"

    return (
        f"INSERT INTO usage_daily ({_COLUMNS})"
        f" SELECT start_time_ns / {DAY_NS}, coalesce(customer, '{PENDING_KEY}'), provider, model,"
        f" operation, currency, {counts}, {amount('cost')}, {amount('billed')}"
        f" FROM usage NOT INDEXED WHERE {rows} AND duplicate_of IS NULL GROUP BY 1, 2, 3, 4, 5, 6" + _MERGE
    )


_RANGE = "seq > ? AND seq <= ?"
_LISTED = "seq IN (SELECT value FROM json_each(?))"


def _dec_total(hi: int | None, lo: int | None, extras: str | None, sign: int) -> str:
    total = money.join(hi or 0, lo or 0)
    if extras:
        total = money.add(total, money.exact_sum(Decimal(x) for x in extras.split()))
    return str(money.EXACT.minus(total) if sign < 0 else total)


def _dec_add(a: str, b: str) -> str:
    return str(money.add(Decimal(a), Decimal(b)))


def register_functions(conn: sqlite3.Connection) -> None:
    conn.create_function("dec_total", 4, _dec_total, deterministic=True)
    conn.create_function("dec_add", 2, _dec_add, deterministic=True)


def folded_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT folded_seq FROM rollup_state").fetchone()[0])


def _run(conn: sqlite3.Connection, rows: str, args: Sequence[object], *, sign: int) -> None:
    try:
        conn.execute(_fold_sql(rows, sign=sign, integer_parts=True), args)
    except sqlite3.OperationalError as exc:
        if "overflow" not in str(exc):
            raise
        # sum() of the integer parts overflowed: add every amount from its text instead.
        conn.execute(_fold_sql(rows, sign=sign, integer_parts=False), args)


def fold(conn: sqlite3.Connection, *, at_least: int = 0) -> int:
    """Fold the tail into the rollup if it has ``at_least`` rows; returns the rows folded.

    Runs inside the caller's write transaction.
    """
    start = folded_seq(conn)
    last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM usage").fetchone()[0])
    if last - start < max(at_least, 1):
        return 0
    for low in range(start, last, _FOLD_CHUNK):
        _run(conn, _RANGE, (low, min(low + _FOLD_CHUNK, last)), sign=1)
    conn.execute("UPDATE rollup_state SET folded_seq = ?", (last,))
    return last - start


def unfold_rows(conn: sqlite3.Connection, seqs_json: str) -> None:
    """Subtract folded rows (a JSON array of seqs) from the rollup, before they change."""
    _run(conn, _LISTED, (seqs_json,), sign=-1)


def refold_rows(conn: sqlite3.Connection, seqs_json: str) -> None:
    """Add folded rows back after they changed."""
    _run(conn, _LISTED, (seqs_json,), sign=1)
