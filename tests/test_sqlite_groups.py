"""Appends through multi-row insert statements and the statement thread (``ledger/sqlite/stepper.py``):
every batch size, errors in any group, and the parameters equal to the row-by-row conversion."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_aibill.ledger import AppendBatch, InvalidRowError, SqliteLedger, UsageQuery
from otel_aibill.ledger.rows import GENERAL_COLUMNS, INSERT_COLUMNS, PLAIN_COLUMNS, extend_params, to_params
from otel_aibill.ledger.sqlite.append import duplicates_last, insert_sql
from otel_aibill.ledger.sqlite.append import groups as statement_groups
from otel_aibill.usage import PricedUsage, PriceStatus
from test_ledger_support import HOUR, T0, priced, usage

SIZES = [1, 7, 8, 9, 255, 256, 257, 600, 1031]


@pytest.fixture(params=["file", "memory"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteLedger]:
    url = f"sqlite:///{tmp_path}/ledger.db" if request.param == "file" else "sqlite:///:memory:"
    led = SqliteLedger(url)
    yield led
    led.close()


def _rows(n: int, **kwargs: object) -> list[PricedUsage]:
    return [
        priced(start=T0 + i, input_tokens=10 + i, cost=Decimal(i) / 1000, billed=Decimal(i) / 800, **kwargs)
        for i in range(n)
    ]


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "otel-aibill-ledger-writer"]


@pytest.mark.parametrize("n", SIZES)
def test_every_batch_size_stores_every_row_once(ledger: SqliteLedger, n: int) -> None:
    rows = _rows(n)
    assert ledger.append(AppendBatch(rows=rows)).inserted == n
    stored = ledger.rows(limit=n + 1)  # newest first
    assert [r.priced for r in reversed(stored)] == rows  # all fields, in batch order
    assert [r.seq for r in reversed(stored)] == list(range(1, n + 1))
    [total] = ledger.usage_summary(UsageQuery(by=()))
    assert total.spans == n
    assert total.input_tokens == sum(10 + i for i in range(n))
    assert total.cost == sum(Decimal(i) / 1000 for i in range(n))
    again = ledger.append(AppendBatch(rows=rows))
    assert (again.inserted, again.duplicate_spans) == (0, n)
    assert ledger.not_billable_counts() == {"duplicate_span": n}


def test_repeats_inside_one_statement_are_duplicate_spans(ledger: SqliteLedger) -> None:
    rows = _rows(300)
    result = ledger.append(AppendBatch(rows=rows + rows[:20] + rows[280:]))
    assert (result.inserted, result.duplicate_spans) == (300, 40)
    assert len(ledger.rows(limit=1000)) == 300


@pytest.mark.parametrize("position", [0, 255, 256, 700, 1030])
def test_a_bad_row_in_any_group_refuses_the_whole_batch(ledger: SqliteLedger, position: int) -> None:
    rows = _rows(1031)
    rows[position] = replace(rows[position], usage=replace(rows[position].usage, output_tokens=-1))
    with pytest.raises(InvalidRowError, match="output_tokens must be an integer"):
        ledger.append(AppendBatch(rows=rows, trace_customers={"t": "c"}))
    assert ledger.rows() == [] and ledger.trace_customers(["t"]) == {}
    assert ledger.append(AppendBatch(rows=_rows(600))).inserted == 600


@pytest.mark.parametrize("position", [3, 300, 1000])
def test_a_value_sqlite_refuses_in_any_group_refuses_the_batch(ledger: SqliteLedger, position: int) -> None:
    """2^63 passes the group checks (unsigned 64-bit) and is refused when SQLite binds it, on the
    statement thread for file ledgers; the error still names the field and nothing is kept."""
    rows = _rows(1031)
    rows[position] = replace(rows[position], usage=replace(rows[position].usage, input_tokens=2**63))
    with pytest.raises(InvalidRowError, match="input_tokens must be an integer in"):
        ledger.append(AppendBatch(rows=rows))
    assert ledger.rows() == []
    assert ledger.append(AppendBatch(rows=_rows(300))).inserted == 300


def test_unhashable_ids_with_repeated_responses_are_refused(ledger: SqliteLedger) -> None:
    row = priced(response_id="r1")
    bad = priced(usage(trace=["not", "a", "string"], response_id="r2"))  # type: ignore[arg-type]
    with pytest.raises(InvalidRowError, match="trace_id must be a non-empty string"):
        ledger.append(AppendBatch(rows=[row, row, bad]))
    bad_response = priced(usage(response_id=["r"]))  # type: ignore[arg-type]
    with pytest.raises(InvalidRowError, match="response_id must be None or a string"):
        ledger.append(AppendBatch(rows=[bad_response]))
    assert ledger.rows() == []


def test_the_statement_thread_ends_with_the_ledger(tmp_path: Path) -> None:
    before = len(_writer_threads())
    led = SqliteLedger(f"sqlite:///{tmp_path}/ledger.db")
    led.append(AppendBatch(rows=_rows(1031)))
    assert len(_writer_threads()) == before + 1
    led.close()
    assert len(_writer_threads()) == before


@pytest.mark.parametrize("n", [*range(0, 40), 255, 256, 257, 511, 512, 513, 1031])
def test_groups_cover_every_row_once_with_few_shapes(n: int) -> None:
    groups = list(statement_groups(n, 256))
    assert [i for first, count in groups for i in range(first, first + count)] == list(range(n))
    shapes = {count for _, count in groups}
    assert shapes <= {256, 128, 64, 32, 16, 8} | {c for c in shapes if c < 8}
    assert sum(1 for c in shapes if c < 8) <= 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["priced", "unpriced", "pending"]),
            st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**5), max_value=10**5),
            st.one_of(st.none(), st.text(min_size=1, max_size=8)),
            st.one_of(st.none(), st.text(min_size=1, max_size=8)),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_group_parameters_equal_row_by_row_conversion(
    specs: list[tuple[str, Decimal, str | None, str | None]], with_duplicates: bool
) -> None:
    rows = []
    for i, (kind, amount, response_id, parent) in enumerate(specs):
        record = replace(usage(start=T0 + i, response_id=response_id), parent_span_id=parent)
        if kind == "unpriced":
            rows.append(
                PricedUsage(record, PriceStatus.UNPRICED, None, None, unpriced_reason="unknown model")
            )
        elif kind == "pending":
            rows.append(priced(replace(record, customer=None), cost=amount, billed=None))
        else:
            rows.append(priced(record, cost=amount, billed=amount * Decimal("1.25")))
    duplicate_of = [None if i % 3 or not with_duplicates else f"{i:016x}" for i in range(len(rows))]
    dim_ids = [i * 7 + 1 for i in range(len(rows))]
    out: list[object] = []
    plain = extend_params(out, rows, 42, dim_ids, duplicate_of)
    assert plain == (duplicate_of.count(None) == len(rows))
    expected = []
    for r, d, dim_id in zip(rows, duplicate_of, dim_ids, strict=True):
        by_name = {
            **dict(zip(INSERT_COLUMNS, to_params(r, 42), strict=True)),
            "duplicate_of": d,
            "dim_id": dim_id,
        }
        expected += [by_name[c] for c in (PLAIN_COLUMNS if plain else GENERAL_COLUMNS)]
    assert out == expected


@pytest.mark.parametrize("n", [5, 300])
def test_what_the_statement_fills_in_equals_the_row_conversion(ledger: SqliteLedger, n: int) -> None:
    """The append time, response bucket, status and duplicate mark, which a statement fills in
    instead of binding, are the values ``to_params`` gives, in plain and general groups alike."""
    rows: list[PricedUsage] = []
    for i in range(n):
        record = usage(  # pairs of spans of one trace, most reporting the same response
            trace=f"{i // 2 + 1:032x}",
            start=T0 + (i // 4) * HOUR - i // 2 % 2,  # at, and just before, bucket boundaries
            response_id=f"r{i // 2}" if i % 10 else None,
        )
        if i % 4 == 3:
            rows.append(PricedUsage(record, PriceStatus.UNPRICED, None, None, unpriced_reason="unknown"))
        else:
            rows.append(priced(record, cost=Decimal(i) / 1000, billed=Decimal(i) / 800))
    plain = [priced(usage(start=T0 + i), cost=Decimal(i), billed=Decimal(i)) for i in range(n)]
    before = time.time_ns()
    result = ledger.append(AppendBatch(rows=rows))
    ledger.append(AppendBatch(rows=plain))
    after = time.time_ns()
    assert result.duplicate_responses > 0  # the sibling rows made some groups general
    with ledger._read() as conn:
        stored = conn.execute(
            "SELECT trace_id, span_id, status, resp_bucket, duplicate_of, ingested_at_ns FROM usage_rows"
            " ORDER BY seq"
        ).fetchall()
    marked = {(t, s): d for t, s, _, _, d, _ in stored}
    expected = []
    for r in [*rows, *plain]:
        by_name = dict(zip(INSERT_COLUMNS, to_params(r, 0), strict=True))
        key = (r.usage.trace_id, r.usage.span_id)
        expected.append((*key, by_name["status"], by_name["resp_bucket"], marked[key]))
    # a batch's sibling duplicates are stored after its other rows, each part in batch order
    first = [e for e in expected[:n] if e[4] is None] + [e for e in expected[:n] if e[4] is not None]
    assert [row[:5] for row in stored] == first + expected[n:]
    assert sum(d is not None for d in marked.values()) == result.duplicate_responses
    times = {row[5] for row in stored}
    assert len(times) == 2 and all(before <= t <= after for t in times)  # one time per append


@pytest.mark.parametrize("plain", [True, False])
@pytest.mark.parametrize("rows", [1, 8, 256])
def test_insert_statements_number_no_parameter_but_the_time(rows: int, plain: bool) -> None:
    """Every row value is an anonymous ``?`` used once, and only the append's time is ``?1``:
    SQLite looks numbered parameters up one by one in a list of all of them, so a statement of
    thousands of them (each used twice) took 25 times longer to prepare."""
    sql = insert_sql(rows, plain)
    width = len(PLAIN_COLUMNS if plain else GENERAL_COLUMNS)
    assert re.findall(r"\?\d+", sql) == ["?1"]
    assert sql.count("?") == 1 + rows * width
    assert sql.index("?1") < sql.index("?,")  # the time comes first, so the row values are ?2...


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.sampled_from(["", "a", "b"])), max_size=70), st.sampled_from([8, 16, 32])
)
def test_duplicates_go_last_in_groups_of_their_own(marks: list[str | None], size: int) -> None:
    """Every row once: the unmarked ones in order, then the marked ones in order with their
    marks (even an empty one), no group mixing the two."""
    rows = [priced(start=T0 + i) for i in range(len(marks))]
    groups = list(duplicates_last(rows, marks, size))
    flat = [
        (row, mark)
        for group, group_marks in groups
        for row, mark in zip(group, group_marks or [None] * len(group), strict=True)
    ]
    expected = [(r, m) for r, m in zip(rows, marks, strict=True) if m is None]
    expected += [(r, m) for r, m in zip(rows, marks, strict=True) if m is not None]
    assert flat == expected
    for group, group_marks in groups:
        assert 0 < len(group) <= size
        assert group_marks is None or None not in group_marks
