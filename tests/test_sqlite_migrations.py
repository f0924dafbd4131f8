"""The ledger's schema versions on SQLite: fresh databases, upgrades of older ones, refusal of
newer ones (the mechanism itself, on both backends: ``test_db_migrations.py``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from otel_aibill.ledger import AppendBatch, SchemaTooNewError, SqliteLedger, open_ledger
from otel_aibill.ledger.schema import MIGRATIONS
from otel_aibill.ledger.sqlite import migrate, schema_version
from test_ledger_support import insert_as_before_v5, priced


def test_fresh_database_is_at_the_latest_version(tmp_path: Path) -> None:
    led = SqliteLedger(f"sqlite:///{tmp_path}/new.db")
    assert led.schema_version() == len(MIGRATIONS)
    led.close()
    led = SqliteLedger(f"sqlite:///{tmp_path}/new.db")  # reopening applies nothing twice
    assert led.schema_version() == len(MIGRATIONS)
    led.close()
    conn = sqlite3.connect(tmp_path / "new.db")
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_opening_an_old_database_migrates_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    row = priced(customer="acme")
    insert_as_before_v5(conn, [row])
    conn.execute("INSERT INTO trace_customers VALUES ('t1', 'acme', 1)")
    with pytest.raises(sqlite3.OperationalError, match="no such table: customers"):
        conn.execute("SELECT * FROM customers")
    conn.close()

    led = open_ledger(f"sqlite:///{path}")
    assert isinstance(led, SqliteLedger) and led.schema_version() == len(MIGRATIONS)
    assert [r.priced for r in led.rows()] == [row]
    assert led.trace_customers(["t1"]) == {"t1": "acme"}
    led.set_customer("acme", "cus_123")  # table from migration 2
    [exportable] = led.exportable()
    led.assign_export_batch([exportable.seq], "b1")
    assert [r.priced for r in led.batch_rows("b1")] == [row]  # index from migration 3
    assert led.append(AppendBatch(rows=[row])).duplicate_spans == 1  # old rows keep deduping
    led.close()


def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SqliteLedger(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (99, 'from the future', 0)")
    conn.close()
    with pytest.raises(SchemaTooNewError, match=r"schema version 99.*only knows up to version"):
        open_ledger(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    assert schema_version(conn) == 99
