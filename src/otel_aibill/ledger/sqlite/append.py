"""Inserting a batch's rows into ``usage_rows``: statement shapes, groups of rows, ``dims`` ids.

A statement per group of rows opens the table's and indexes' cursors once per group instead of
once per row, which makes the indexed insert about a quarter cheaper. With more than one group
and a ``Stepper``, the next group's parameters are built while SQLite inserts the previous group
(``stepper.py``). Sibling duplicates go last, in groups of their own, so every other group binds
no ``duplicate_of`` (``rows.extend_params``); their place among the batch's rows means nothing (a
batch's rows arrive together).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from functools import lru_cache
from itertools import compress, repeat
from operator import is_not, not_
from typing import Any, cast

from otel_aibill.ledger.rows import (
    DIM_COLUMNS,
    GENERAL_COLUMNS,
    PLAIN_COLUMNS,
    RESPONSE_BUCKET_NS,
    ROW_COLUMNS,
    check_dims,
    dim_keys,
    extend_params,
    refuse_unhashable,
)
from otel_aibill.ledger.sqlite.sql import marks
from otel_aibill.ledger.sqlite.stepper import Running, Stepper
from otel_aibill.usage import PricedUsage

GROUP = 256  # rows per insert statement (fewer if SQLite allows fewer parameters)
SMALLEST_GROUP = 8  # fewer rows go one statement each, not through a statement of their own
_FIND_DIM = (
    f"SELECT id FROM dims INDEXED BY dims_values WHERE {' AND '.join(f'{c} IS ?' for c in DIM_COLUMNS)}"
)
_ADD_DIM = f"INSERT INTO dims ({', '.join(DIM_COLUMNS)}) VALUES ({marks(len(DIM_COLUMNS))})"

DimKey = tuple[Any, ...]
"""The ``DIM_COLUMNS`` values of a row (``rows.dim_keys``)."""


def groups(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(first row, count) of each insert statement: full groups, then halves down to
    ``SMALLEST_GROUP``, then the few rows left; so a batch of any size uses a handful of
    statement shapes, each prepared once per connection."""
    first = 0
    while size >= SMALLEST_GROUP:
        while n - first >= size:
            yield first, size
            first += size
        size //= 2
    if first < n:
        yield first, n - first


def duplicates_last(
    rows: list[PricedUsage], duplicate_of: list[str | None], size: int
) -> Iterator[tuple[list[PricedUsage], list[str | None] | None]]:
    """The groups of rows to insert (``groups``) with their ``duplicate_of`` marks (None where
    there are none): first the rows that are not sibling duplicates, in order, then those that are."""
    if duplicate_of.count(None) == len(rows):
        parts: list[tuple[list[PricedUsage], list[str | None] | None]] = [(rows, None)]
    else:
        marked = list(map(is_not, duplicate_of, repeat(None)))
        parts = [
            (list(compress(rows, map(not_, marked))), None),
            (list(compress(rows, marked)), list(compress(duplicate_of, marked))),
        ]
    for part, part_marks in parts:
        for first, count in groups(len(part), size):
            yield (
                part[first : first + count],
                None if part_marks is None else part_marks[first : first + count],
            )


@lru_cache(maxsize=32)
def insert_sql(rows: int, plain: bool) -> str:
    """The insert of ``rows`` rows, each bound as ``PLAIN_COLUMNS`` or ``GENERAL_COLUMNS``
    (``extend_params``), after ``?1``, the append's time: the statement fills in the rest.

    The rows are a ``VALUES`` list of anonymous parameters, selected from as ``column1``...
    so that no parameter is named or used twice: SQLite finds a numbered parameter
    (``?17``) by a linear search of the statement's named ones, so preparing a statement of a few
    thousand of them, each row's used again in its status and bucket, took ~27 ms (a first append
    of ~110 ms), against ~1 ms this way; inserting costs the same."""
    bound = PLAIN_COLUMNS if plain else GENERAL_COLUMNS
    value = {c: f"column{i}" for i, c in enumerate(bound, 1)}
    filled = {
        "duplicate_of": "NULL",
        "status": f"CASE WHEN {value['cost']} IS NULL THEN 'unpriced' ELSE 'priced' END",
        "ingested_at_ns": "?1",
        "resp_bucket": f"CASE WHEN {value['response_id']} IS NULL THEN NULL"
        f" ELSE {value['start_time_ns']} / {RESPONSE_BUCKET_NS} END",
    }
    selected = ", ".join(value.get(c) or filled[c] for c in ROW_COLUMNS)
    row = f"({marks(len(bound))})"
    return (
        f"INSERT INTO usage_rows ({', '.join(ROW_COLUMNS)}) SELECT {selected}"
        f" FROM (VALUES {', '.join([row] * rows)}) WHERE true ON CONFLICT DO NOTHING"
    )


class Inserter:
    """Inserts rows on one writer connection; keeps the ``dims`` ids it has seen committed."""

    def __init__(self, conn: sqlite3.Connection, stepper: Stepper | None) -> None:
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self.group = max(SMALLEST_GROUP, min(GROUP, (limit - 1) // len(GENERAL_COLUMNS)))
        self.stepper = stepper
        self.dims: dict[DimKey, int] = {}  # dim_keys values -> dims.id (ids never change)

    def committed(self, new_dims: dict[DimKey, int]) -> None:
        """The transaction that added ``new_dims`` (``insert``) committed: these ids exist now."""
        self.dims.update(new_dims)

    def dim_ids(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[PricedUsage],
        now: int,
        new: dict[DimKey, int],
        before_lookup: Callable[[], None] = lambda: None,
    ) -> list[int]:
        """The ``dims`` id of each row. Known combinations cost a dict lookup a row; others are
        found or added in ``conn`` (after ``before_lookup``, which frees the connection) and
        noted in ``new``: they join the cache only once the transaction has committed."""
        keys = dim_keys(rows)
        try:
            found = list(map(self.dims.get, keys))
        except TypeError:  # an unhashable value
            refuse_unhashable(rows, now)
        if None not in found:
            return cast(list[int], found)
        before_lookup()
        ids: list[int] = []
        for row, key, known in zip(rows, keys, found, strict=True):
            if known is None:
                known = new.get(key)
                if known is None:
                    check_dims(row, key, now)
                    stored = conn.execute(_FIND_DIM, key).fetchone()
                    known = stored[0] if stored else conn.execute(_ADD_DIM, key).lastrowid
                    new[key] = known = int(known or 0)
            ids.append(known)
        return ids

    def insert(
        self, conn: sqlite3.Connection, rows: list[PricedUsage], now: int, duplicate_of: list[str | None]
    ) -> tuple[int, dict[DimKey, int]]:
        """Insert ``rows`` with multi-row statements (``insert_sql``) in the caller's transaction;
        returns the rows stored and the ``dims`` combinations added (``dim_ids``), which the
        caller hands to ``committed`` once the transaction has committed."""
        changed = 0
        new_dims: dict[DimKey, int] = {}
        running: list[Running] = []  # the statement the stepper is running, if any
        stepper = self.stepper if len(rows) >= 2 * self.group else None

        def finish() -> None:
            nonlocal changed
            if running:
                changed += running.pop().result()

        try:
            for group, group_marks in duplicates_last(rows, duplicate_of, self.group):
                count = len(group)
                ids = self.dim_ids(conn, group, now, new_dims, before_lookup=finish)
                params: list[Any] = [now]
                plain = extend_params(params, group, now, ids, group_marks)
                finish()
                if count < SMALLEST_GROUP:  # a few rows left: one statement each
                    width = len(PLAIN_COLUMNS if plain else GENERAL_COLUMNS)
                    each = [[now, *params[i : i + width]] for i in range(1, len(params), width)]
                    changed += conn.executemany(insert_sql(1, plain), each).rowcount
                elif stepper is not None:
                    running.append(stepper.start(conn, insert_sql(count, plain), params))
                else:
                    changed += conn.execute(insert_sql(count, plain), params).rowcount
            finish()
        finally:
            if running:  # stopped by an error here: let the statement end first
                with suppress(BaseException):  # the error that stopped us is the one to raise
                    running.pop().result()
        return changed, new_dims
