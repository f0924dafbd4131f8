"""Threads and processes: readers during writes, writers in two processes, crash durability."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

from otel_aibill.ledger import AppendBatch, SqliteLedger, UsageQuery, UsageSummary
from otel_aibill.ledger.sqlite.summaries import summarize_rows
from otel_aibill.ledger.summary import SummaryBuilder
from test_ledger_support import priced

BATCH = 50
BATCHES = 40


def test_readers_see_whole_batches_while_a_writer_appends(tmp_path: Path) -> None:
    ledger = SqliteLedger(f"sqlite:///{tmp_path}/c.db?synchronous=normal")
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def write() -> None:
        try:
            for _ in range(BATCHES):
                ledger.append(AppendBatch(rows=[priced(cost="0.1", billed="0.3") for _ in range(BATCH)]))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            last = 0
            while not done.is_set():
                summaries = ledger.usage_summary(UsageQuery())
                spans = sum(s.spans for s in summaries)
                billed = sum((s.billed for s in summaries), Decimal(0))
                assert spans % BATCH == 0, f"saw a partial batch: {spans}"
                assert billed == Decimal("0.3") * spans
                assert spans >= last
                last = spans
                seen.append(spans)
                assert len(ledger.rows(limit=10)) == min(10, spans)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    [summary] = ledger.usage_summary(UsageQuery())
    assert summary.spans == BATCH * BATCHES and summary.cost == Decimal("0.1") * BATCH * BATCHES
    assert seen, "readers never ran"
    ledger.close()


_WRITER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[3])
    from decimal import Decimal
    from otel_aibill.ledger import AppendBatch, SqliteLedger
    from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

    def row(i, response_id=None, customer="c"):
        u = UsageRecord(trace_id=f"{i:032x}", span_id=f"{i:016x}", start_time_ns=1_000 + i,
                        end_time_ns=2_000 + i, provider="openai", model="gpt-4o", operation="chat",
                        input_tokens=1, output_tokens=1, customer=customer, response_id=response_id)
        billed = None if customer is None else Decimal("0.02")
        return PricedUsage(usage=u, status=PriceStatus.PRICED, cost=Decimal("0.01"), billed=billed)

    ledger = SqliteLedger(sys.argv[1])
    mode = sys.argv[2]
    if mode.startswith("fold-forever:"):  # appends and attributes until killed, folding often
        from otel_aibill.ledger import Attribution
        from otel_aibill.ledger.sqlite import rollup
        rollup.FOLD_EVERY = 100
        b = int(mode.partition(":")[2])
        while True:
            rows = [row(i, customer=None if i % 3 == 0 else "c") for i in range(b, b + 20)]
            ledger.append(AppendBatch(rows=rows))
            print("appended", b + 20, flush=True)
            late = [Attribution(r.usage.trace_id, r.usage.span_id, "late", Decimal("0.03"), None)
                    for r in rows if r.usage.customer is None and r.usage.span_id[-1] in "02468ace"]
            ledger.set_attribution(late)
            b += 20
    if mode == "crash":
        ledger.append(AppendBatch(rows=[row(i) for i in range(100)], trace_customers={"t": "c"}))
        print("appended", flush=True)
        os._exit(1)  # no close, no commit hooks, no atexit
    start = int(mode)
    for b in range(start, start + 200, 20):
        ledger.append(AppendBatch(rows=[row(i) for i in range(b, b + 20)]))
    ledger.close()
    """
)


def _spawn(url: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, mode, os.path.dirname(__file__)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_appended_data_survives_a_process_crash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/crash.db"
    proc = _spawn(url, "crash")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and out.strip() == "appended", err
    assert (tmp_path / "crash.db-wal").exists()  # the commit is in the WAL, never checkpointed
    ledger = SqliteLedger(url)
    [summary] = ledger.usage_summary(UsageQuery())
    assert (summary.spans, summary.billed) == (100, Decimal("2.00"))
    assert ledger.trace_customers(["t"]) == {"t": "c"}
    ledger.close()


def test_two_writer_processes_dedupe_against_each_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/two.db?synchronous=normal"
    SqliteLedger(url).close()
    procs = [_spawn(url, "0"), _spawn(url, "100")]  # rows 0..199 and 100..299 overlap on 100..199
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    ledger = SqliteLedger(url)
    [summary] = ledger.usage_summary(UsageQuery())
    assert summary.spans == 300
    assert ledger.not_billable_counts() == {"duplicate_span": 100}
    ledger.close()


def test_folding_writers_killed_at_any_moment_leave_exact_summaries(tmp_path: Path) -> None:
    """Two processes append, attribute and fold (every 100 rows, on their fold threads) until
    SIGKILL; whatever was acknowledged is there, and every summary equals a scan of the rows."""
    url = f"sqlite:///{tmp_path}/kill.db?synchronous=normal"
    SqliteLedger(url).close()
    procs = [_spawn(url, "fold-forever:0"), _spawn(url, "fold-forever:1000000")]
    acknowledged = []
    for proc in procs:
        assert proc.stdout is not None
        last = 0
        while last < 3_000:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "writer died"
            last = int(line.split()[1])
        acknowledged.append(last)
    for proc in procs:
        proc.kill()
        proc.communicate(timeout=60)
    ledger = SqliteLedger(url)
    rows = ledger.rows(limit=1_000_000)
    spans = {r.priced.usage.span_id for r in rows}
    for start, last in zip((0, 1_000_000), acknowledged, strict=True):
        assert {f"{i:016x}" for i in range(start, last)} <= spans
    folded = ledger._writer.execute("SELECT folded_seq FROM rollup_state").fetchone()[0]
    assert folded > 0  # the workers folded before they were killed
    for query in (UsageQuery(), UsageQuery(by=("customer",)), UsageQuery(customer="late")):
        assert ledger.usage_summary(query) == _scan(ledger, query)
    [total] = ledger.usage_summary(UsageQuery(by=()))
    assert total.spans == len(rows)
    assert total.cost == Decimal("0.01") * len(rows)
    assert total.billed == sum((r.priced.billed or Decimal(0) for r in rows), Decimal(0))
    ledger.close()


def _scan(ledger: SqliteLedger, query: UsageQuery) -> list[UsageSummary]:
    builder = SummaryBuilder(by=tuple(query.by))
    with ledger._read() as conn:
        summarize_rows(conn, builder, query, None, None, after_seq=None)
    return builder.build()
