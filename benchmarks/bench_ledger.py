"""Ledger append throughput against a no-index baseline, plus read query times.

Realistic data: random trace/span ids, increasing start times (the run covers one simulated day),
~10% of rows are sibling pairs sharing a response id (5% of calls reported twice), 500 customers.
Every variant gets the same batches. The run is cut into blocks (``--block`` rows); each block is
appended to every variant in turn, the order reversed every block, so machine noise and drift hit
all of them alike; compare the ratios. A variant's block time includes waiting for the rollup
fold it started (which runs beside its appends, ``ledger/sqlite/folding.py``), so no variant's work
spills into another's time. All databases use WAL + synchronous=FULL (the default).

Variants:
  baseline    raw table with the same columns, no index at all, plain executemany (SQL cost only),
              SQLite defaults (4 KiB pages): the reference all ratios are against; NULLs bind
              through the ledger's identity adapter for None, like every variant here
  base-plain  the same without that adapter: how a plain insert binds NULLs (an adapter search
              each), which is what a no-index insert of these rows costs in a program of its own
  base-16k    the same with the ledger's page size (16 KiB), to show what the page size buys alone
  random-key  raw table + UNIQUE (trace_id, span_id): the naive dedupe key, for reference
  ledger-sql  the ledger's own tables and indexes, its rows as it stores them (the columns with few
              distinct values as a ``dims`` id), plain executemany: the cost of its storage alone
  ledger      SqliteLedger.append end to end (checks, conversion, sibling lookup, indexes, rollup)
  ledger-mix  same, with 30% of rows pending (no customer) and one trace_customers entry per trace
  ledger-recv shaped like the OTLP receiver's batches: every row carries a response id (unique
              except the sibling pairs), a customer, and one trace_customers entry per trace

Then summary and lookup times on the ledger database, through the rollup and (for comparison)
by scanning the rows as summaries did before the rollup.

    python benchmarks/bench_ledger.py --rows 600000 --batch 5000 --block 200000

With ``--db postgresql://...`` it measures the PostgreSQL ledger instead (``bench_ledger_postgres.py``):
append end to end against a raw binary COPY of the same rows, with client and server CPU a row.

    python benchmarks/bench_ledger.py --db postgresql://127.0.0.1:5432/test --rows 600000
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from otel_aibill.ledger import AppendBatch, SqliteLedger, UsageQuery
from otel_aibill.ledger.rows import INSERT_COLUMNS, ROW_COLUMNS, to_params
from otel_aibill.ledger.sqlite import summaries
from otel_aibill.ledger.summary import SummaryBuilder
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

T0 = 1_767_225_600_000_000_000
DAY_NS = 86_400 * 1_000_000_000
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini"),
]


def make_batch(rng: random.Random, first: int, n: int, step_ns: int) -> list[PricedUsage]:
    rows: list[PricedUsage] = []
    i = first
    while len(rows) < n:
        trace = os.urandom(16).hex()
        customer = f"cust-{rng.randrange(500)}"
        for _ in range(rng.choice((1, 2, 3))):  # LLM calls per trace
            start = T0 + i * step_ns
            provider, model = MODELS[i % len(MODELS)]
            siblings = 2 if rng.random() < 0.05 else 1
            response_id = f"resp-{os.urandom(12).hex()}" if siblings == 2 else None
            for s in range(siblings):
                record = UsageRecord(
                    trace_id=trace,
                    span_id=os.urandom(8).hex(),
                    start_time_ns=start + s * 1_000,
                    end_time_ns=start + 900_000_000,
                    provider=provider,
                    model=model,
                    operation="chat",
                    input_tokens=rng.randrange(50, 5000),
                    output_tokens=rng.randrange(10, 800),
                    cache_read_tokens=0,
                    request_model=model,
                    response_model=model,
                    response_id=response_id,
                    server_address="api.example.com",
                    scope_name="opentelemetry.instrumentation.openai_v2",
                    convention="genai",
                    customer=customer,
                )
                cost = Decimal(record.input_tokens) * Decimal("0.0000025") + Decimal(
                    record.output_tokens
                ) * Decimal("0.00001")
                rows.append(
                    PricedUsage(
                        usage=record,
                        status=PriceStatus.PRICED,
                        cost=cost,
                        billed=cost * Decimal("1.2"),
                        price_version="2026-01-01#abc123",
                        price_key=f"{provider}/{model}",
                        markup_rule="global",
                    )
                )
            i += 1
    return rows[:n]


def mixed(rows: list[PricedUsage], rng: random.Random) -> AppendBatch:
    """30% of usage rows arrive without a customer; every trace's customer comes separately."""
    out = []
    customers: dict[str, str] = {}
    for row in rows:
        customers[row.usage.trace_id] = row.usage.customer or ""
        if rng.random() < 0.3:
            row = replace(row, usage=replace(row.usage, customer=None), billed=None)
        out.append(row)
    return AppendBatch(rows=out, trace_customers=customers)


def receiver_shaped(rows: list[PricedUsage]) -> AppendBatch:
    """Every row with a response id (siblings keep their shared one) and its trace's customer."""
    out = [
        row
        if row.usage.response_id is not None
        else replace(row, usage=replace(row.usage, response_id=f"chatcmpl-{os.urandom(12).hex()}"))
        for row in rows
    ]
    customers = {row.usage.trace_id: row.usage.customer or "" for row in rows}
    return AppendBatch(rows=out, trace_customers=customers)


def raw_table(path: Path, index: str | None, page_size: int = 4096) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {page_size}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -65536")
    cols = ", ".join(INSERT_COLUMNS)
    conn.execute(f"CREATE TABLE usage (seq INTEGER PRIMARY KEY, {cols}, export_batch)")
    if index:
        conn.execute(index)
    return conn


@contextmanager
def none_adapter(*, off: bool) -> Iterator[None]:
    """With ``off``, bind None the sqlite3 module's own way (an adapter search per NULL), as a
    plain insert without the ledger's identity adapter for None does."""
    key = (type(None), sqlite3.PrepareProtocol)
    adapter = sqlite3.adapters.pop(key, None) if off else None
    try:
        yield
    finally:
        if adapter is not None:
            sqlite3.adapters[key] = adapter


def ledger_rows(ledger: SqliteLedger, rows: list[PricedUsage]) -> list[list[object]]:
    """The rows as the ledger stores them (``usage_rows`` columns, ``dims`` ids resolved)."""
    new: dict[tuple[object, ...], int] = {}
    now = time.time_ns()
    with ledger._write() as conn:
        ids = ledger._inserter.dim_ids(conn, rows, now, new)
    ledger._inserter.committed(new)
    out = []
    for row, dim_id in zip(rows, ids, strict=True):
        by_name = {**dict(zip(INSERT_COLUMNS, to_params(row, now), strict=True)), "dim_id": dim_id}
        out.append([by_name[c] for c in ROW_COLUMNS])
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--block", type=int, default=200_000, help="rows per variant turn")
    parser.add_argument("--dir", default=None, help="where to put the databases (default: a temp dir)")
    parser.add_argument(
        "--only", default=None, help="comma-separated variants to run (the baseline always runs)"
    )
    parser.add_argument("--blocks", action="store_true", help="print each block's rows/s per variant")
    parser.add_argument("--db", default=None, help="a postgresql:// URL: measure the PostgreSQL ledger")
    args = parser.parse_args()
    if args.db is not None:
        import bench_ledger_postgres

        bench_ledger_postgres.run(
            args.db,
            make_batch,
            receiver_shaped,
            rows=args.rows,
            batch=args.batch,
            block=args.block,
            day_ns=DAY_NS,
            show_blocks=args.blocks,
        )
        return
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        baseline = raw_table(d / "baseline.db", None)
        base_plain = raw_table(d / "base_plain.db", None)
        base_16k = raw_table(d / "base_16k.db", None, page_size=16_384)
        random_key = raw_table(d / "random.db", "CREATE UNIQUE INDEX k ON usage (trace_id, span_id)")
        ledger_sql = SqliteLedger(f"sqlite:///{d}/ledger_sql.db")
        ledger = SqliteLedger(f"sqlite:///{d}/ledger.db")
        ledger_mix = SqliteLedger(f"sqlite:///{d}/ledger_mix.db")
        ledger_recv = SqliteLedger(f"sqlite:///{d}/ledger_recv.db")
        insert = (
            f"INSERT INTO usage ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
        )
        insert_ignore = (
            f"INSERT INTO usage_rows ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
            " ON CONFLICT DO NOTHING"
        )
        totals = dict.fromkeys(
            (
                "baseline",
                "base-plain",
                "base-16k",
                "random-key",
                "ledger-sql",
                "ledger",
                "ledger-mix",
                "ledger-recv",
            ),
            0.0,
        )
        step = DAY_NS // args.rows
        done = 0
        inserted = 0
        ledgers = {"ledger": ledger, "ledger-mix": ledger_mix, "ledger-recv": ledger_recv}
        raws = {
            "baseline": baseline,
            "base-plain": base_plain,
            "base-16k": base_16k,
            "random-key": random_key,
        }
        if args.only:
            wanted = {"baseline", *args.only.split(",")}
            unknown = wanted - set(totals)
            if unknown:
                parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
            totals = {name: total for name, total in totals.items() if name in wanted}
        order = list(totals)
        while done < args.rows:
            size = min(args.block, args.rows - done)
            rows_in_block: list[list[PricedUsage]] = []
            while sum(map(len, rows_in_block)) < size:
                n = min(args.batch, size - sum(map(len, rows_in_block)))
                rows_in_block.append(make_batch(rng, done + sum(map(len, rows_in_block)), n, step))
            params = [[to_params(r, time.time_ns()) for r in rows] for rows in rows_in_block]
            ledger_params = [ledger_rows(ledger_sql, rows) for rows in rows_in_block]
            batches = {
                "ledger": [AppendBatch(rows=rows) for rows in rows_in_block],
                "ledger-mix": [mixed(rows, rng) for rows in rows_in_block],
                "ledger-recv": [receiver_shaped(rows) for rows in rows_in_block],
            }
            # The pre-built input of a whole block is not the ingesting process's own heap: keep
            # the cyclic GC from walking it again and again while the variants allocate.
            gc.freeze()
            block_times: dict[str, float] = {}
            for name in order:
                start = time.perf_counter()
                if name in ledgers:
                    led = ledgers[name]
                    for batch in batches[name]:
                        result = led.append(batch)
                        if name == "ledger":
                            inserted += result.inserted
                    led.wait_for_rollup()
                else:
                    conn = raws.get(name, ledger_sql._writer)
                    sql = insert_ignore if name == "ledger-sql" else insert
                    with none_adapter(off=name == "base-plain"):
                        for p in ledger_params if name == "ledger-sql" else params:
                            conn.execute("BEGIN IMMEDIATE")
                            conn.executemany(sql, p)
                            conn.execute("COMMIT")
                block_times[name] = time.perf_counter() - start
                totals[name] += block_times[name]
            gc.unfreeze()
            if args.blocks:
                print(
                    f"rows {done + size:>9,}: "
                    + "  ".join(
                        f"{name} {size / t:,.0f} ({block_times['baseline'] / t:.2f})"
                        for name, t in block_times.items()
                    ),
                    flush=True,
                )
            order.reverse()
            done += size
            rows = rows_in_block[-1]
        print(
            f"{args.rows:,} rows in batches of {args.batch}; "
            f"ledger billed {inserted:,}, the rest are sibling duplicates"
        )
        print(f"{'variant':12s} {'rows/s':>10s} {'x baseline':>11s} {'db MB':>7s}")
        for name, total in totals.items():
            file = {"random-key": "random"}.get(name, name.replace("-", "_"))
            size = sum(p.stat().st_size for p in d.glob(f"{file}.db*")) / 1e6
            print(f"{name:12s} {args.rows / total:>10,.0f} {totals['baseline'] / total:>11.2f} {size:>7.0f}")

        start = datetime.fromtimestamp(T0 / 1e9, tz=UTC)
        some_trace = rows[0].usage.trace_id

        def scan(query: UsageQuery) -> object:
            """The same summary from the rows alone (how every summary ran before the rollup)."""
            builder = SummaryBuilder(by=query.by)
            with ledger._read() as conn:
                summaries.summarize_rows(conn, builder, query, None, None, after_seq=None)
            return builder.build()

        assert scan(UsageQuery()) == ledger.usage_summary(UsageQuery())
        queries: list[tuple[str, Callable[[], object]]] = [
            ("summary by customer,provider,model (all rows)", lambda: ledger.usage_summary(UsageQuery())),
            ("  same, scanning the rows", lambda: scan(UsageQuery())),
            ("summary by day", lambda: ledger.usage_summary(UsageQuery(by=("day",)))),
            ("  same, scanning the rows", lambda: scan(UsageQuery(by=("day",)))),
            (
                "summary 12:30 to 14:30 (rows: inside one day)",
                lambda: ledger.usage_summary(
                    UsageQuery(since=start + timedelta(hours=12.5), until=start + timedelta(hours=14.5))
                ),
            ),
            (
                "summary one customer, one hour",
                lambda: ledger.usage_summary(
                    UsageQuery(customer="cust-1", since=start, until=start + timedelta(hours=1))
                ),
            ),
            ("summary one customer, all time", lambda: ledger.usage_summary(UsageQuery(customer="cust-1"))),
            ("  same, scanning the rows", lambda: scan(UsageQuery(customer="cust-1"))),
            ("rows(limit=100)", lambda: ledger.rows(limit=100)),
            ("rows(trace_id) (scan)", lambda: ledger.rows(trace_id=some_trace)),
            ("exportable(10000)", lambda: ledger.exportable(10_000)),
            ("pending_attribution() (mix db)", lambda: ledger_mix.pending_attribution(limit=10_000)),
        ]
        print(f"\n{'query on the ledger db':48s} {'ms':>9s}")
        for name, fn in queries:
            fn()  # warm
            print(f"{name:48s} {min(timed(fn) for _ in range(3)) * 1000:>9.1f}")
        ledger.close()
        ledger_sql.close()
        ledger_mix.close()
        ledger_recv.close()
        baseline.close()
        base_plain.close()
        base_16k.close()
        random_key.close()


if __name__ == "__main__":
    main()
