"""The checkpoint thread (``ledger/checkpoint.py``): appended pages reach the database file
without the writer checkpointing, at the lowest CPU priority, and a failing checkpoint only logs."""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from otel_aibill.ledger import AppendBatch, SqliteLedger, UsageQuery
from otel_aibill.ledger.checkpoint import Checkpointer
from test_ledger_support import T0, priced

NAME = "otel-aibill-checkpoint"


def _batch(n: int, first: int = 0) -> AppendBatch:
    return AppendBatch(rows=[priced(start=T0 + first + i, cost=Decimal(i) / 1000) for i in range(n)])


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == NAME]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[SqliteLedger]:
    led = SqliteLedger(f"sqlite:///{path}")
    yield led
    led.close()


def test_appended_pages_reach_the_database_file_without_the_writer(ledger: SqliteLedger, path: Path) -> None:
    # a few hundred rows are far fewer pages than wal_autocheckpoint: the writer copies nothing
    assert ledger._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] >= 1000
    before = path.stat().st_size
    ledger.append(_batch(300))
    checkpointer = ledger._checkpointer
    assert checkpointer is not None and checkpointer.wait_idle(timeout=30)
    assert checkpointer.checkpoints >= 1
    assert path.stat().st_size > before  # pages are in the database file, not only in the log
    [total] = ledger.usage_summary(UsageQuery(by=()))
    assert total.spans == 300


def test_without_the_thread_the_pages_stay_in_the_log(ledger: SqliteLedger, path: Path) -> None:
    """The control for the test above: its file only grows through the thread's checkpoint."""
    checkpointer, ledger._checkpointer = ledger._checkpointer, None
    assert checkpointer is not None
    checkpointer.close()
    before = path.stat().st_size
    ledger.append(_batch(300))
    assert path.stat().st_size == before


def test_checkpoints_are_spaced_and_requests_coalesce(ledger: SqliteLedger) -> None:
    for i in range(20):
        ledger.append(_batch(5, first=10 * i))
    checkpointer = ledger._checkpointer
    assert checkpointer is not None and checkpointer.wait_idle(timeout=30)
    assert 1 <= checkpointer.checkpoints < 20


def test_the_thread_is_started_by_appends_and_ends_with_the_ledger(path: Path) -> None:
    before = len(_threads())
    led = SqliteLedger(f"sqlite:///{path}")
    assert len(_threads()) == before  # nothing to copy yet
    led.append(_batch(3))
    assert len(_threads()) == before + 1
    led.close()
    assert len(_threads()) == before


def test_a_memory_ledger_has_no_checkpoint_thread() -> None:
    led = SqliteLedger("sqlite:///:memory:")
    try:
        led.append(_batch(3))
        assert led._checkpointer is None
    finally:
        led.close()


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")
def test_the_checkpoint_thread_runs_at_the_lowest_priority(ledger: SqliteLedger) -> None:
    ledger.append(_batch(3))
    assert ledger._checkpointer is not None and ledger._checkpointer.wait_idle(timeout=30)
    [thread] = _threads()
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[16]) == 19  # nice, field 19 of proc(5)


def test_a_failing_checkpoint_is_logged_and_retried(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    SqliteLedger(f"sqlite:///{path}").close()
    attempts = []

    def connect() -> sqlite3.Connection:
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return sqlite3.connect(path, isolation_level=None)

    checkpointer = Checkpointer(connect)
    try:
        with caplog.at_level(logging.ERROR, logger="otel_aibill.ledger.checkpoint"):
            checkpointer.request()
            assert checkpointer.wait_idle(timeout=30)
        assert "checkpointing the ledger's log failed" in caplog.text
        assert checkpointer.checkpoints == 0
        checkpointer.request()
        assert checkpointer.wait_idle(timeout=30)
        assert checkpointer.checkpoints == 1 and len(attempts) == 2
    finally:
        checkpointer.close()
