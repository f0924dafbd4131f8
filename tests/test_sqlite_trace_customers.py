"""Trace customers kept in two tables (schema version 7): new ones in a small table, merged into
``trace_customers`` in key order; lookups, "first customer wins" and new-trace reporting see one
mapping whichever table a trace is in."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_aibill.ledger import AppendBatch, SqliteLedger
from otel_aibill.ledger.sqlite import migrate, trace_customers
from test_ledger_support import priced


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteLedger]:
    monkeypatch.setattr(trace_customers, "MERGE_TRACES", 5)
    led = SqliteLedger(f"sqlite:///{tmp_path}/ledger.db")
    yield led
    led.close()


def _tables(led: SqliteLedger) -> tuple[dict[str, str], dict[str, str]]:
    with led._read() as conn:
        main = dict(conn.execute("SELECT trace_id, customer FROM trace_customers"))
        recent = dict(conn.execute("SELECT trace_id, customer FROM trace_customers_recent"))
    return main, recent


def _add(led: SqliteLedger, customers: dict[str, str]) -> tuple[str, ...]:
    return led.append(AppendBatch(rows=[], trace_customers=customers)).new_trace_customers


def test_new_traces_wait_in_the_small_table_until_a_merge(ledger: SqliteLedger) -> None:
    assert _add(ledger, {"t3": "acme", "t1": "globex"}) == ("t3", "t1")
    assert _tables(ledger) == ({}, {"t3": "acme", "t1": "globex"})
    assert _add(ledger, {"t2": "acme", "t0": "initech"}) == ("t2", "t0")
    assert _tables(ledger)[0] == {}
    assert _add(ledger, {"t4": "acme"}) == ("t4",)  # the fifth: merged
    expected = {"t0": "initech", "t1": "globex", "t2": "acme", "t3": "acme", "t4": "acme"}
    assert _tables(ledger) == (expected, {})


def test_the_first_customer_wins_in_either_table(ledger: SqliteLedger) -> None:
    _add(ledger, {f"m{i}": "first" for i in range(5)})  # merged into the large table
    _add(ledger, {"r0": "first"})  # waiting in the small one
    again = {"m0": "second", "r0": "second", "n0": "second"}
    assert _add(ledger, again) == ("n0",)
    found = ledger.trace_customers(["m0", "r0", "n0", "unknown"])
    assert found == {"m0": "first", "r0": "first", "n0": "second"}
    main, recent = _tables(ledger)
    assert set(main).isdisjoint(recent)
    assert len(main) + len(recent) == 7


def test_lookups_of_many_traces_span_both_tables(
    ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_customers, "MERGE_TRACES", 1000)
    first = {f"a{i:04d}": f"c{i % 7}" for i in range(1200)}  # more than one lookup chunk
    assert len(_add(ledger, first)) == 1200  # merged: 1200 >= 1000
    second = {f"b{i:04d}": "late" for i in range(700)}
    assert len(_add(ledger, {**first, **second})) == 700
    main, recent = _tables(ledger)
    assert (len(main), len(recent)) == (1200, 700)
    assert ledger.trace_customers([*second, *first]) == {**first, **second}


def test_usage_rows_and_trace_customers_in_one_append(ledger: SqliteLedger) -> None:
    rows = [priced(trace=f"{i:032x}", customer=None) for i in range(3)]
    result = ledger.append(AppendBatch(rows=rows, trace_customers={f"{i:032x}": "acme" for i in range(3)}))
    assert result.inserted == 3 and len(result.new_trace_customers) == 3
    assert ledger.trace_customers([r.usage.trace_id for r in rows]) == dict.fromkeys(
        (r.usage.trace_id for r in rows), "acme"
    )


def test_a_version_6_database_keeps_its_trace_customers(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=6) == 6
    conn.execute("INSERT INTO trace_customers VALUES ('old', 'acme', 1)")
    conn.close()
    led = SqliteLedger(f"sqlite:///{path}")
    try:
        assert led.trace_customers(["old"]) == {"old": "acme"}
        assert _add(led, {"old": "globex", "new": "globex"}) == ("new",)
        assert _tables(led) == ({"old": "acme"}, {"new": "globex"})
    finally:
        led.close()


def test_expired_trace_customers_are_forgotten_in_both_tables(ledger: SqliteLedger) -> None:
    _add(ledger, {f"m{i}": "old" for i in range(5)})  # merged into the large table
    _add(ledger, {"r0": "old"})  # waiting in the small one
    with ledger._read() as conn:
        (cut,) = conn.execute("SELECT max(first_seen_ns) + 1 FROM trace_customers_recent").fetchone()
    _add(ledger, {"r1": "kept"})
    assert ledger.expire_trace_customers(cut) == 6
    assert ledger.trace_customers(["m0", "r0", "r1"]) == {"r1": "kept"}
    assert ledger.expire_trace_customers(cut) == 0
    assert _add(ledger, {"m0": "new"}) == ("m0",)  # forgotten: a trace named again is new
    assert ledger.trace_customers(["m0"]) == {"m0": "new"}


def test_expiry_finds_old_entries_through_the_index(ledger: SqliteLedger) -> None:
    with ledger._read() as conn:
        plan = " ".join(
            row[3]
            for row in conn.execute("EXPLAIN QUERY PLAN DELETE FROM trace_customers WHERE first_seen_ns < 5")
        )
    assert "trace_customers_seen" in plan, plan
