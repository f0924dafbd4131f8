"""Several processes on one PostgreSQL ledger: appending overlapping, duplicated batches with
sibling spans, attributing the same traces and claiming export batches, then SIGKILLed mid-way.

Whatever a process had acknowledged is stored exactly once, each call is billed once, every
summary equals a scan of the rows, the first customer stored for a trace is the one its pending
rows took, and every export batch a process claimed holds exactly the rows it claimed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from decimal import Decimal

import psycopg

from otel_aibill.ledger import UsageQuery, open_ledger
from otel_aibill.ledger.url import parse_postgres_url
from pg_support import BASE_URL

_WRITER = textwrap.dedent(
    """
    import sys
    from decimal import Decimal
    from otel_aibill.ledger import AppendBatch, Attribution, open_ledger
    from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

    url, name = sys.argv[1], sys.argv[2]
    T0 = 1_767_225_600_000_000_000

    def row(i):
        # spans 2k and 2k+1 are siblings (one call seen twice); four spans a trace
        u = UsageRecord(trace_id=f"{i // 4:032x}", span_id=f"{i:016x}", start_time_ns=T0 + i * 1_000,
                        end_time_ns=T0 + i * 1_000 + 500, provider="openai", model="gpt-4o",
                        operation="chat", input_tokens=i % 7 + 1, output_tokens=1,
                        response_id=f"resp-{i // 2}", customer=None)
        return PricedUsage(usage=u, status=PriceStatus.PRICED, cost=Decimal("0.001"), billed=None)

    # "a" sends the even spans and a quarter of the odd ones, "b" the odd spans and a quarter of
    # the even ones: the siblings of most calls come from different processes at the same time
    mine = (lambda i: i % 2 == 0 or i % 8 == 1) if name == "a" else (lambda i: i % 2 == 1 or i % 8 == 4)
    ledger = open_ledger(url)
    print("ready", name, flush=True)
    sys.stdin.readline()  # both start together
    b = 0
    while True:
        first = b * 30  # each batch overlaps the previous one by half
        rows = [row(i) for i in range(first, first + 60) if mine(i)]
        rows += rows[:5]  # and repeats some of its own spans
        traces = {r.usage.trace_id: name for r in rows}
        ledger.append(AppendBatch(rows=rows, trace_customers=traces))
        print("appended", first + 60, flush=True)
        known = ledger.trace_customers(traces)
        updates = [
            Attribution(r.priced.usage.trace_id, r.priced.usage.span_id, known[r.priced.usage.trace_id],
                        Decimal("0.0012"), "m20")
            for r in ledger.pending_attribution(known)
        ]
        ledger.set_attribution(updates)
        claim = [r.seq for r in ledger.exportable(limit=40)]
        batch_id = f"{name}-{b}"
        try:
            ledger.assign_export_batch(claim, batch_id)
            print("claimed", batch_id, ",".join(map(str, claim)), flush=True)
        except ValueError:
            pass  # the other process claimed some of them first: this claim took nothing
        b += 1
    """
)
ACKED = 1_500  # rows each process must have acknowledged before both are killed


def test_writers_killed_mid_way_leave_every_acknowledged_row_once(pg_url: str) -> None:
    open_ledger(pg_url).close()  # create the schema first; the writers only open it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, pg_url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    acknowledged: dict[str, int] = {}
    claims: dict[str, list[int]] = {}
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().startswith("ready"), proc.stderr.read() if proc.stderr else ""
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for name, proc in zip(("a", "b"), procs, strict=True):
            assert proc.stdout is not None
            last = 0
            while last < ACKED:
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else "writer died"
                word, value, *rest = line.split()
                if word == "appended":
                    last = int(value)
                else:
                    claims[value] = [int(s) for s in rest[0].split(",")] if rest else []
            acknowledged[name] = last
    finally:
        for proc in procs:
            proc.kill()  # SIGKILL, wherever it is: mid-append, mid-attribution, mid-claim
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            for line in out.splitlines():  # claims printed after the last line read
                word, value, *rest = line.split()
                if word == "claimed":
                    claims[value] = [int(s) for s in rest[0].split(",")] if rest else []

    schema = parse_postgres_url(pg_url).schema
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        stored = conn.execute(
            "SELECT trace_id, span_id, response_id, duplicate_of, customer, export_batch, seq FROM usage_rows"
        ).fetchall()
        first_customers = dict(conn.execute("SELECT trace_id, customer FROM trace_customers").fetchall())

    spans = Counter(span for _, span, *_ in stored)
    assert all(n == 1 for n in spans.values())  # nothing stored twice
    sent_by = {"a": lambda i: i % 2 == 0 or i % 8 == 1, "b": lambda i: i % 2 == 1 or i % 8 == 4}
    for name, last in acknowledged.items():  # nothing acknowledged is lost
        assert {f"{i:016x}" for i in range(last) if sent_by[name](i)} <= set(spans)

    billed_per_call: dict[str, int] = defaultdict(int)
    for _, _, response_id, duplicate_of, *_ in stored:
        billed_per_call[response_id] += duplicate_of is None
    assert set(billed_per_call.values()) == {1}  # each call billed once, the other span a duplicate

    assert set(first_customers.values()) <= {"a", "b"}
    for trace_id, _, _, duplicate_of, customer, _, _ in stored:
        if customer is not None:  # attributed: by the first customer stored for its trace
            assert customer == first_customers[trace_id]
        assert duplicate_of is not None or trace_id in first_customers

    batches = {seq: batch for *_, batch, seq in stored}
    assert claims, "no export batch was claimed"
    for batch_id, seqs in claims.items():
        assert {s for s, b in batches.items() if b == batch_id} == set(seqs)

    ledger = open_ledger(pg_url)
    try:
        rows = ledger.rows(limit=1_000_000)
        assert len(rows) == sum(billed_per_call.values())
        for query in (UsageQuery(by=()), UsageQuery(by=("customer",))):
            scan: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
            for r in rows:
                key = "" if not query.by else (r.priced.usage.customer or "(pending)")
                scan[key][0] += 1
                scan[key][1] += r.priced.cost or 0
                scan[key][2] += r.priced.billed or 0
            summary = {
                s.key.get("customer", ""): [Decimal(s.spans), s.cost, s.billed]
                for s in ledger.usage_summary(query)
            }
            assert summary == dict(scan)
        for batch_id, seqs in claims.items():
            assert [r.seq for r in ledger.batch_rows(batch_id)] == sorted(seqs)
    finally:
        ledger.close()
