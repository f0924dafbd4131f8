"""SQLite's own ledger behaviour: WAL and synchronous pragmas, a failing statement in an append."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from otel_aibill.ledger import AppendBatch, SqliteLedger
from test_ledger_support import priced


@pytest.mark.parametrize(("query", "level"), [("", 2), ("?synchronous=normal", 1)])
def test_wal_and_synchronous(tmp_path: Path, query: str, level: int) -> None:
    led = SqliteLedger(f"sqlite:///{tmp_path}/s.db{query}")
    assert led._writer.execute("PRAGMA synchronous").fetchone()[0] == level
    assert led._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    led.close()


def test_failure_inside_the_transaction_rolls_back(tmp_path: Path) -> None:
    ledger = SqliteLedger(f"sqlite:///{tmp_path}/ledger.db")
    ledger._writer.execute(
        "CREATE TRIGGER refuse AFTER INSERT ON trace_customers_recent"
        " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="disk says no"):
        ledger.append(AppendBatch(rows=[priced()], trace_customers={"t": "c"}))
    assert ledger.rows() == []
    ledger._writer.execute("DROP TRIGGER refuse")
    assert ledger.append(AppendBatch(rows=[priced()])).inserted == 1
    ledger.close()
