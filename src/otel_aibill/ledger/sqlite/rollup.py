"""The per-day rollup of billable usage: what makes long-range summaries independent of row count.

``usage_daily`` holds, per (day, customer, provider, model, operation, currency), the counts and
exact sums of every billable row with ``seq <= rollup_state.folded_seq``; rows above that mark
(the *tail*) are read from ``usage`` itself. A fold adds the tail to the rollup once it reaches
``FOLD_EVERY`` rows, so each group is touched once per ``FOLD_EVERY`` rows instead of once a
batch; it runs beside appends (``folding.py``) or inside them. ``set_attribution`` moves folded
rows between groups (pending -> customer) by subtracting their contribution before the update and
adding it after, with the same statements. A summary = rollup (whole days) + tail (same days) +
``usage`` for the partial days at the edges of the window, so it is exact at any moment.

Sums are exact and, in the common case, pure SQL: each amount is summed as integer parts
(``money.py``: ``hi`` micro-units and ``lo`` 10^-15 units, carried into ``hi`` on every merge so
``lo`` stays small) plus ``*_extra``, the exact sum (TEXT) of the amounts that have no integer
parts, which is NULL unless there are some; only those are added in Python. A fold's groups come
back as one JSON text (one result row: the worker thread that computes it runs at the lowest
priority and should hold the GIL as rarely as possible), and the writer turns them into rows for
one upsert statement (extracting them from the JSON in SQL instead cost twice as much, under the
write lock).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from decimal import Decimal

from otel_aibill.ledger import money
from otel_aibill.ledger.summary import DAY_NS

_log = logging.getLogger(__name__)

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
AMOUNTS = ("cost", "billed")
PARTS = tuple(f"{a}_{p}" for a in AMOUNTS for p in ("hi", "lo", "extra"))
PENDING_KEY = ""
"""The ``customer`` of pending usage in the rollup (a key column cannot be NULL)."""

_INTEGERS = (*COUNTS, *(f"{a}_{p}" for a in AMOUNTS for p in ("hi", "lo")))
# Integers stay integers (the CHECKs refuse SQLite's silent switch to REAL on overflow).
_CHECKS = ", ".join(f"{c} INTEGER NOT NULL CHECK (typeof({c}) = 'integer')" for c in _INTEGERS)
STATEMENTS = (
    "CREATE TABLE usage_daily ("
    " day INTEGER NOT NULL, customer TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,"
    f" operation TEXT NOT NULL, currency TEXT NOT NULL, {_CHECKS}, cost_extra TEXT, billed_extra TEXT,"
    " PRIMARY KEY (day, customer, provider, model, operation, currency)"
    ") WITHOUT ROWID",
)
"""Schema of the rollup table (migration 5); ``fold`` then backfills it from existing rows."""

_COLUMNS = (*KEYS, *COUNTS, *PARTS)
_LO_UNITS = 1_000_000_000


def _merge_amount(a: str) -> str:
    hi, lo, extra = f"{a}_hi", f"{a}_lo", f"{a}_extra"
    return (
        f"{hi} = {hi} + excluded.{hi} + ({lo} + excluded.{lo}) / {_LO_UNITS},"
        f" {lo} = ({lo} + excluded.{lo}) % {_LO_UNITS},"
        f" {extra} = CASE WHEN excluded.{extra} IS NULL THEN {extra} WHEN {extra} IS NULL"
        f" THEN excluded.{extra} ELSE dec_add({extra}, excluded.{extra}) END"
    )


_MERGE = (
    f" ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS)
    + ", "
    + ", ".join(_merge_amount(a) for a in AMOUNTS)
)
_UPSERT = (
    f"INSERT INTO usage_daily ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})" + _MERGE
)
"""Adds one group (a row of ``_groups``) to the rollup."""
_DAY_AND_CUSTOMER = f"start_time_ns / {DAY_NS} AS day, coalesce(customer, '{PENDING_KEY}') AS customer"
_DIM_KEYS = "dims.provider, dims.model, dims.operation, dims.currency"


def _by_dims(inner: str, values: list[str]) -> str:
    """Group ``inner`` (grouped by day, customer, dim_id; value columns ``v0``...) by ``KEYS``:
    the rows are sorted by two short keys and an integer, and only the few groups are joined with
    ``dims`` (several ids can share the keys that matter here)."""
    columns = [*_DIM_KEYS.split(", "), *values]
    named = ", ".join(f"{c} AS c{i + 2}" for i, c in enumerate(columns))
    return (
        f"SELECT g.day AS c0, g.customer AS c1, {named}"
        f" FROM ({inner}) AS g CROSS JOIN dims ON dims.id = g.dim_id GROUP BY 1, 2, 3, 4, 5, 6"
    )


def _packed(select: str, width: int) -> str:
    """``select`` (columns ``c0``...) as one JSON array of arrays: a single result row, so a fold
    on the worker thread takes the GIL a few times instead of once per group (that thread runs at
    the lowest priority, and a preempted thread holding the GIL would stall the appends)."""
    names = ", ".join(f"c{i}" for i in range(width))
    return f"SELECT CASE WHEN count(*) THEN json_group_array(json_array({names})) END FROM ({select})"


def _named(values: list[str]) -> str:
    return ", ".join(f"{v} AS v{i}" for i, v in enumerate(values))


def _groups_sql(rows: str, *, sign: int) -> str:
    """The contribution (sign 1) or its negation (-1) of the billable ``usage_rows`` rows
    ``rows``, per group: ``_COLUMNS``, with each ``*_extra`` NULL (``_extras_sql`` has those).

    The amount texts stay out of this query: carrying them through the GROUP BY's sort cost about
    a third of a fold, and only amounts without integer parts (rare) need them."""
    neg = "-" if sign < 0 else ""
    inner = ["count(*)", *(f"sum({c})" for c in COUNTS[1:6]), "sum(status = 'unpriced')"]
    for a in AMOUNTS:
        inner += [money.sum_hi(a), money.sum_lo(a)]
    outer = [f"{neg}coalesce(sum(v{i}), 0)" for i in range(7)]
    # pending spans: every span of the pending group, none of any other (customers are never '')
    outer.append(f"CASE WHEN g.customer = '{PENDING_KEY}' THEN {neg}coalesce(sum(v0), 0) ELSE 0 END")
    for i, _ in enumerate(AMOUNTS):
        outer += [f"{neg}coalesce(sum(v{7 + 2 * i}), 0)", f"{neg}coalesce(sum(v{8 + 2 * i}), 0)", "NULL"]
    return _by_dims(
        f"SELECT {_DAY_AND_CUSTOMER}, dim_id, {_named(inner)} FROM usage_rows NOT INDEXED"
        f" WHERE {rows} AND duplicate_of IS NULL GROUP BY 1, 2, 3",
        outer,
    )


def _extras_sql(rows: str) -> str:
    """Per group of ``rows``, the space-separated texts of the amounts without integer parts."""
    unfit = " OR ".join(f"({a} IS NOT NULL AND {a}_units IS NULL)" for a in AMOUNTS)
    texts = _named([f"group_concat({money.unfit(a)}, ' ')" for a in AMOUNTS])
    return _by_dims(
        f"SELECT {_DAY_AND_CUSTOMER}, dim_id, {texts} FROM usage_rows NOT INDEXED"
        f" WHERE {rows} AND duplicate_of IS NULL AND ({unfit}) GROUP BY 1, 2, 3",
        [f"group_concat(v{i}, ' ')" for i in range(len(AMOUNTS))],
    )


_RANGE = "seq > ? AND seq <= ?"
_LISTED = "seq IN (SELECT value FROM json_each(?))"
_EXTRAS = tuple(_COLUMNS.index(f"{a}_extra") for a in AMOUNTS)
Group = tuple[object, ...]


Packed = tuple[str | None, str | None, int]
"""A fold's groups as SQL returned them: the groups' JSON, the extras' JSON (or None), the sign."""


def _groups(conn: sqlite3.Connection, rows: str, args: tuple[object, ...], *, sign: int) -> Packed:
    """The groups of rows ``rows``, packed (``_unpack`` turns them into ``_UPSERT`` rows)."""
    (groups,) = conn.execute(_packed(_groups_sql(rows, sign=sign), len(_COLUMNS)), args).fetchone()
    (extras,) = conn.execute(_packed(_extras_sql(rows), len(KEYS) + len(AMOUNTS)), args).fetchone()
    return groups, extras, sign


def _unpack(packed: Packed) -> list[Group]:
    """``_UPSERT`` rows of packed groups, with their extras texts summed exactly."""
    groups_json, extras_json, sign = packed
    groups: list[list[object]] = json.loads(groups_json) if groups_json else []
    if extras_json:
        by_key = {tuple(g[: len(KEYS)]): g for g in groups}
        for key_and_texts in json.loads(extras_json):
            group = by_key[tuple(key_and_texts[: len(KEYS)])]
            for i, texts in zip(_EXTRAS, key_and_texts[len(KEYS) :], strict=True):
                group[i] = _exact_sum(texts, sign)
    return [tuple(g) for g in groups]


def _apply(conn: sqlite3.Connection, packed: Packed) -> None:
    conn.executemany(_UPSERT, _unpack(packed))


def _exact_sum(texts: str | None, sign: int) -> str | None:
    if texts is None:
        return None
    total = money.exact_sum(Decimal(x) for x in texts.split())
    return str(money.EXACT.minus(total) if sign < 0 else total)


def _dec_add(a: str, b: str) -> str:
    return str(money.add(Decimal(a), Decimal(b)))


def _dec_units(text: str | None) -> int | None:
    return None if text is None else money.units(text)


def register_functions(conn: sqlite3.Connection) -> None:
    conn.create_function("dec_add", 2, _dec_add, deterministic=True)
    conn.create_function("dec_units", 1, _dec_units, deterministic=True)


def folded_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT folded_seq FROM rollup_state").fetchone()[0])


def tail(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(folded_seq, max(seq))``: the tail is the rows in between."""
    start = folded_seq(conn)
    last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM usage_rows").fetchone()[0])
    return start, last


@dataclass(frozen=True, slots=True)
class Fold:
    """A fold worked out (on a read snapshot, or in the write transaction itself): the tail
    ``(start, last]`` summed per group, valid while ``folded_seq`` is still ``start`` and no tail
    row changed (``tail_changes``)."""

    start: int
    last: int
    tail_changes: int
    groups: tuple[Packed, ...]  # one per chunk of the tail


def compute_fold(conn: sqlite3.Connection, *, at_least: int) -> Fold | None:
    """The fold of the current tail, or None if it is shorter than ``at_least`` rows.

    This is where a fold's cost is (scanning and sorting the tail), so it can run on a read
    snapshot beside appends: SQLite works with the GIL released and returns a few hundred rows.
    """
    start, last = tail(conn)
    if last - start < max(at_least, 1):
        return None
    changes = int(conn.execute("SELECT tail_changes FROM rollup_state").fetchone()[0])
    chunks = tuple(
        _groups(conn, _RANGE, (low, min(low + _FOLD_CHUNK, last)), sign=1)
        for low in range(start, last, _FOLD_CHUNK)
    )
    return Fold(start, last, changes, chunks)


def apply_fold(conn: sqlite3.Connection, computed: Fold) -> bool:
    """Write a computed fold in the caller's write transaction, if its snapshot is still current.

    Rows are never deleted and appends only add rows above ``last``, so the tail it summed is
    unchanged unless ``set_attribution`` touched it (which counts in ``tail_changes``) or another
    fold got there first; then nothing is written and False is returned.
    """
    row = conn.execute("SELECT folded_seq, tail_changes FROM rollup_state").fetchone()
    if (int(row[0]), int(row[1])) != (computed.start, computed.tail_changes):
        return False
    for groups in computed.groups:
        _apply(conn, groups)
    conn.execute("UPDATE rollup_state SET folded_seq = ?", (computed.last,))
    return True


def fold(conn: sqlite3.Connection, *, at_least: int = 0) -> int:
    """Fold the tail into the rollup if it has ``at_least`` rows, inside the caller's write
    transaction; returns the rows folded."""
    computed = compute_fold(conn, at_least=at_least)
    if computed is None:
        return 0
    apply_fold(conn, computed)
    return computed.last - computed.start


def fold_quietly(conn: sqlite3.Connection, *, at_least: int) -> None:
    """``fold``, except that sums too large for the rollup leave the tail in place (summaries
    read it) with a warning instead of failing the write they ride along with."""
    conn.execute("SAVEPOINT fold")
    try:
        fold(conn, at_least=at_least)
    except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
        conn.execute("ROLLBACK TO fold")
        conn.execute("RELEASE fold")
        if isinstance(exc, sqlite3.OperationalError) and "overflow" not in str(exc):
            raise
        _log.warning("usage rollup not updated (%s); summaries read the rows instead", exc)
        return
    conn.execute("RELEASE fold")


def note_tail_change(conn: sqlite3.Connection) -> None:
    """Record that rows above ``folded_seq`` changed (invalidates folds computed before)."""
    conn.execute("UPDATE rollup_state SET tail_changes = tail_changes + 1")


def unfold_rows(conn: sqlite3.Connection, seqs_json: str) -> None:
    """Subtract folded rows (a JSON array of seqs) from the rollup, before they change."""
    _apply(conn, _groups(conn, _LISTED, (seqs_json,), sign=-1))


def refold_rows(conn: sqlite3.Connection, seqs_json: str) -> None:
    """Add folded rows back after they changed."""
    _apply(conn, _groups(conn, _LISTED, (seqs_json,), sign=1))
