"""What one merge of new trace customers into ``trace_customers`` costs, by the table's size.

New trace customers wait in ``trace_customers_recent`` and are merged into ``trace_customers``
in key order once 50,000 have gathered (``ledger/sqlite/trace_customers.py``). Trace ids are
random, so a merge touches pages all over the large table: this measures the merge's time and the
WAL it writes for tables of several sizes (the table is filled directly, then one append brings
the recent table over the threshold).

    python benchmarks/bench_trace_merge.py --sizes 200000,1000000,3000000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from otel_aibill.ledger import AppendBatch, SqliteLedger
from otel_aibill.ledger.sqlite.trace_customers import MERGE_TRACES


def merge_cost(directory: Path, size: int) -> tuple[float, float]:
    """(seconds, WAL MB) of the merge that brings ``trace_customers`` from ``size`` entries."""
    ledger = SqliteLedger(f"sqlite:///{directory}/ledger.db")
    try:
        conn = ledger._writer
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO trace_customers VALUES (?, ?, ?)",
            sorted((os.urandom(16).hex(), f"cust-{i % 500}", i) for i in range(size)),
        )
        conn.executemany(
            "INSERT INTO trace_customers_recent VALUES (?, ?, ?)",
            ((os.urandom(16).hex(), "cust-0", 1) for _ in range(MERGE_TRACES - 10)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        start = time.perf_counter()
        ledger.append(AppendBatch(rows=[], trace_customers={os.urandom(16).hex(): "c" for _ in range(20)}))
        elapsed = time.perf_counter() - start
        wal = (directory / "ledger.db-wal").stat().st_size / 1e6
    finally:
        ledger.close()
    return elapsed, wal


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="200000,1000000,3000000")
    args = parser.parse_args()
    for size in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, wal = merge_cost(Path(tmp), size)
        per_trace = elapsed / MERGE_TRACES * 1e6
        print(
            f"trace_customers {size:>11,}: merge {elapsed:6.2f} s ({per_trace:5.1f} us a new trace),"
            f" WAL written {wal:6.0f} MB"
        )


if __name__ == "__main__":
    main()
