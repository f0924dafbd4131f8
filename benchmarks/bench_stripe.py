"""Stripe export at volume: N priced rows across C customers -> requests, events, time.

Runs the real exporter and the real ``stripe`` SDK against the local fake Stripe (tests/fakestripe),
once with v1 (one event a request) and once with v2 (meter event stream, 100 events a request),
from copies of the same ledger. With ``--pg URL`` the v2 run is repeated with the export store
on that PostgreSQL server (a fresh schema, dropped afterwards; the ledger stays the SQLite copy),
and the ratio of the two is printed. Usage:

    .venv/bin/python benchmarks/bench_stripe.py [--rows 1000000] [--customers 1000] [--hours 3]
        [--pg postgresql://127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from random import Random

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakestripe import FakeStripe
from fakestripe.support import client_for, open_test_ledger, priced
from otel_aibill.config import Config
from otel_aibill.ledger.base import AppendBatch
from otel_aibill.stripe import ExportStore, StripeConfig, StripeExporter
from otel_aibill.stripe.setup import ensure_meters
from pg_support import drop_schema, with_schema


def build(path: Path, rows: int, customers: int, hours: int, now: int) -> None:
    ledger = open_test_ledger(f"sqlite:///{path}")
    rng = Random(1)
    start = now - now % 3600 - (hours - 1) * 3600
    batch = []
    for i in range(1, rows + 1):
        c = f"cus_{rng.randrange(customers):05d}"
        billed = Decimal(rng.randint(1, 5_000_000)).scaleb(-9)
        batch.append(priced(i, c, start + rng.randrange(min(hours * 3600, now - start)), billed))
        if len(batch) == 20_000:
            ledger.append(AppendBatch(rows=batch))
            batch = []
    if batch:
        ledger.append(AppendBatch(rows=batch))
    ledger.close()


def run(path: Path, api: str, customers: int, store_url: str | None = None) -> dict[str, float]:
    with FakeStripe() as fake:
        fake.add_customer(*(f"cus_{i:05d}" for i in range(customers)))
        sc = StripeConfig(api=api, concurrency=4, max_network_retries=2, timeout=30)
        client = client_for(fake, sc)
        ensure_meters(client, sc)
        url = f"sqlite:///{path}"
        exporter = StripeExporter(
            open_test_ledger(url), ExportStore(store_url or url), Config(db=url), client, stripe_settings=sc
        )
        before = len(fake.requests)
        t0 = time.perf_counter()
        report = exporter.run_once()
        elapsed = time.perf_counter() - t0
        posts = [r for r in fake.requests[before:] if r[0] == "post"]
        stream_or_events = [
            p for p in posts if p[1] in ("/v1/billing/meter_events", "/v2/billing/meter_event_stream")
        ]
        assert report.settled, report
        return {
            "rows": report.rows_staged,
            "events": report.events_planned,
            "requests": len(stream_or_events),
            "sessions": sum(1 for p in posts if p[1] == "/v2/billing/meter_event_session"),
            "seconds": elapsed,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=3)
    ap.add_argument("--pg", help="also run v2 with the export store on this PostgreSQL server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.db"
        now = int(time.time())
        t0 = time.perf_counter()
        build(base, args.rows, args.customers, args.hours, now)
        print(
            f"ledger: {args.rows} rows, {args.customers} customers, {args.hours} hourly windows, "
            f"built in {time.perf_counter() - t0:.1f}s"
        )
        bound = args.customers * 1 * args.hours
        for api in ("v1", "v2"):
            path = Path(tmp) / f"{api}.db"
            shutil.copy(base, path)
            r = run(path, api, args.customers)
            print(
                f"{api}: rows {r['rows']:.0f}  events {r['events']:.0f} (bound customers x meters x windows "
                f"= {bound})  requests {r['requests']:.0f}"
                + (
                    f" (bound ceil(events/100) = {math.ceil(r['events'] / 100)},"
                    f" sessions {r['sessions']:.0f})"
                    if api == "v2"
                    else ""
                )
                + f"  export {r['seconds']:.1f}s ({r['rows'] / r['seconds']:,.0f} rows/s)"
            )
            seconds = r["seconds"]
        if args.pg:
            path = Path(tmp) / "pg.db"
            shutil.copy(base, path)
            schema = f"bench_stripe_{os.getpid()}"
            try:
                r = run(path, "v2", args.customers, store_url=with_schema(schema, args.pg))
            finally:
                drop_schema(schema, args.pg)
            print(
                f"v2, export store on PostgreSQL: rows {r['rows']:.0f}  events {r['events']:.0f}"
                f"  requests {r['requests']:.0f}  export {r['seconds']:.1f}s"
                f" ({r['rows'] / r['seconds']:,.0f} rows/s;"
                f" {r['seconds'] / seconds:.2f}x the time with the SQLite store)"
            )


if __name__ == "__main__":
    main()
