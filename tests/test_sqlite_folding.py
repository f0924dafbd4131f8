"""The background fold worker (``ledger/sqlite/folding.py``): who writes a computed fold, what happens to
it when that write fails, and that the worker runs at the lowest CPU priority."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from otel_aibill.ledger import AppendBatch, SqliteLedger, UsageQuery
from otel_aibill.ledger.sqlite import rollup
from otel_aibill.ledger.sqlite.folding import FoldWorker
from test_ledger_support import T0, priced


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteLedger]:
    monkeypatch.setattr(rollup, "FOLD_EVERY", 10)
    led = SqliteLedger(f"sqlite:///{tmp_path}/f.db")
    yield led
    led.close()


def _batch(n: int, first: int) -> AppendBatch:
    return AppendBatch(rows=[priced(start=T0 + first + i, cost="0.25", billed="0.5") for i in range(n)])


def _folder(led: SqliteLedger) -> FoldWorker:
    assert led._folder is not None
    return led._folder


def _wait_ready(worker: FoldWorker) -> rollup.Fold:
    """Until the worker has a computed fold waiting to be written (it waits for an append)."""
    with worker._cond:
        assert worker._cond.wait_for(lambda: worker._ready is not None, timeout=30)
        assert worker._ready is not None
        return worker._ready


def _computed(ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch, handover_s: float) -> FoldWorker:
    """Set how long a computed fold waits for an append, append 12 rows (a fold is due) and wait
    until the worker has computed it; returns the worker."""
    monkeypatch.setattr("otel_aibill.ledger.sqlite.folding._HANDOVER_S", handover_s)
    worker = _folder(ledger)
    ledger.append(_batch(12, 0))
    _wait_ready(worker)
    return worker


def _folded(led: SqliteLedger) -> int:
    return rollup.folded_seq(led._writer)


def _last_seq(led: SqliteLedger) -> int:
    return int(led._writer.execute("SELECT max(seq) FROM usage").fetchone()[0])


def test_the_next_append_writes_the_fold_the_worker_computed(
    ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("otel_aibill.ledger.sqlite.folding._HANDOVER_S", 60.0)  # only an append writes it
    worker = _folder(ledger)
    ledger.append(_batch(12, 0))
    computed = _wait_ready(worker)
    assert (computed.start, computed.last) == (0, 12) and _folded(ledger) == 0
    ledger.append(_batch(3, 100))  # takes the computed fold and writes it in its transaction
    assert _folded(ledger) == 12 and worker.folds == 1 and worker.stale == 0
    assert ledger.wait_for_rollup(timeout=30)
    [total] = ledger.usage_summary(UsageQuery(by=()))
    assert (total.spans, total.cost) == (15, Decimal("3.75"))


def test_waiting_for_the_rollup_writes_a_computed_fold_at_once(
    ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _computed(ledger, monkeypatch, 3600.0)
    assert ledger.wait_for_rollup(timeout=30)  # would be an hour if it waited for an append
    assert _folded(ledger) == _last_seq(ledger) == 12 and worker.folds == 1


def test_without_appends_the_worker_writes_its_fold_itself(
    ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("otel_aibill.ledger.sqlite.folding._HANDOVER_S", 0.01)
    worker = _folder(ledger)
    ledger.append(_batch(12, 0))
    with worker._cond:
        assert worker._cond.wait_for(lambda: worker.folds == 1 and not worker._busy, timeout=30)
    assert _folded(ledger) == 12


def test_a_fold_taken_by_a_failed_append_is_rolled_back_and_folded_again_later(
    ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _computed(ledger, monkeypatch, 60.0)
    real_tail = rollup.tail

    def failing_tail(conn: sqlite3.Connection) -> tuple[int, int]:
        raise RuntimeError("disk says no")

    monkeypatch.setattr(rollup, "tail", failing_tail)  # fails after the fold was taken and written
    with pytest.raises(RuntimeError, match="disk says no"):
        ledger.append(_batch(3, 100))
    monkeypatch.setattr(rollup, "tail", real_tail)
    assert _folded(ledger) == 0 and _last_seq(ledger) == 12  # the fold went with the append
    assert not worker._in_flight  # and the worker is free to fold again
    ledger.append(_batch(12, 200))  # a fold is due again
    assert ledger.wait_for_rollup(timeout=30)
    assert _folded(ledger) == _last_seq(ledger) == 24
    with ledger._write() as conn:
        assert conn.execute("SELECT sum(spans), sum(cost_hi) FROM usage_daily").fetchone() == (24, 6_000_000)


def test_a_fold_the_rollup_refuses_leaves_the_append_and_the_tail_alone(
    ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _computed(ledger, monkeypatch, 60.0)
    ledger._writer.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON usage_daily BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    assert ledger.append(_batch(3, 100)).inserted == 3  # the fold is dropped, the rows are kept
    assert _folded(ledger) == 0 and _last_seq(ledger) == 15
    [total] = ledger.usage_summary(UsageQuery(by=()))
    assert (total.spans, total.cost) == (15, Decimal("3.75"))  # from the tail rows
    ledger._writer.execute("DROP TRIGGER refuse")
    assert ledger.wait_for_rollup(timeout=30)  # the fold that append asked for covers all 15 rows
    assert _folded(ledger) == 15 and worker.folds == 1
    with ledger._write() as conn:
        assert conn.execute("SELECT sum(spans), sum(cost_hi) FROM usage_daily").fetchone() == (15, 3_750_000)
    assert ledger.usage_summary(UsageQuery(by=())) == [total]


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")
def test_the_fold_thread_runs_at_the_lowest_priority(ledger: SqliteLedger) -> None:
    ledger.append(_batch(12, 0))
    assert ledger.wait_for_rollup(timeout=30)
    [thread] = [t for t in threading.enumerate() if t.name == "otel-aibill-rollup-fold"]
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5), after "pid (comm)"
    assert nice == 19
    main_stat = Path(f"/proc/self/task/{threading.get_native_id()}/stat").read_text()
    assert int(main_stat.rsplit(")", 1)[1].split()[16]) < 19  # only the fold thread
