"""Ledger append against a no-index insert, for two versions of the code, in alternating processes.

This machine's speed drifts by ±10% from one minute to the next, so two separate runs of
``bench_ledger.py`` cannot tell a change of a few percent. Here each process appends the same
realistic rows (``bench_ledger.make_batch``) to a fresh ledger and to the ``baseline`` table
(no index, raw executemany), half the rows at a time each, in turn, and reports the ratio;
processes of the two versions alternate, so drift hits both alike. Compare the mean ratios.

    git worktree add ../before <commit>
    python benchmarks/bench_ledger_ab.py --before ../before --rounds 6 --rows 200000

``--shape mix`` or ``recv`` appends the batches of ``bench_ledger.py``'s ``ledger-mix`` or
``ledger-recv`` variant instead (the baseline inserts the same rows either way).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(rows_total: int, batch: int, shape: str) -> None:
    """One measurement, with whatever ``otel_aibill`` and ``bench_ledger`` are importable."""
    from bench_ledger import DAY_NS, INSERT_COLUMNS, make_batch, mixed, raw_table, receiver_shaped

    from otel_aibill.ledger import AppendBatch, SqliteLedger
    from otel_aibill.ledger.rows import to_params

    rng = random.Random(7)
    batches = [make_batch(rng, i, batch, DAY_NS // (rows_total * 3)) for i in range(0, rows_total, batch)]
    appends = [
        receiver_shaped(b) if shape == "recv" else mixed(b, rng) if shape == "mix" else AppendBatch(rows=b)
        for b in batches
    ]
    params = [[to_params(r, time.time_ns()) for r in b] for b in batches]
    gc.freeze()
    columns = ", ".join(INSERT_COLUMNS)
    insert = f"INSERT INTO usage ({columns}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
    with tempfile.TemporaryDirectory() as tmp:
        base = raw_table(Path(tmp) / "baseline.db", None)
        ledger = SqliteLedger(f"sqlite:///{tmp}/ledger.db")
        half = len(batches) // 2
        base_s = ledger_s = 0.0
        for part in (slice(0, half), slice(half, None)):
            start = time.perf_counter()
            for p in params[part]:
                base.execute("BEGIN IMMEDIATE")
                base.executemany(insert, p)
                base.execute("COMMIT")
            base_s += time.perf_counter() - start
            start = time.perf_counter()
            for append in appends[part]:
                ledger.append(append)
            ledger.wait_for_rollup()
            ledger_s += time.perf_counter() - start
        ledger.close()
        base.close()
    print(f"{rows_total / base_s:.0f} {rows_total / ledger_s:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before", type=Path, help="a checkout of the other version (its src/ and benchmarks/)"
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument(
        "--shape",
        choices=("ledger", "mix", "recv"),
        default="ledger",
        help="the batches of bench_ledger.py's ledger, ledger-mix or ledger-recv variant",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.rows, args.batch, args.shape)
        return
    if args.before is None:
        parser.error("--before is required")
    trees = {"before": args.before.resolve(), "now": HERE.parent}
    ratios: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(tree / "benchmarks")])}
            command = [
                sys.executable,
                "-P",
                str(HERE / "bench_ledger_ab.py"),
                "--child",
                "--rows",
                str(args.rows),
            ]
            out = subprocess.run(
                [*command, "--batch", str(args.batch), "--shape", args.shape],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            base, ledger = float(out[0]), float(out[1])
            ratios[name].append(ledger / base)
            print(f"{name:7} baseline {base:9,.0f}  ledger {ledger:9,.0f} rows/s  ratio {ledger / base:.3f}")
    for name, values in ratios.items():
        mean = statistics.mean(values)
        print(f"{name:7} mean ratio {mean:.3f} (min {min(values):.3f}, max {max(values):.3f})")


if __name__ == "__main__":
    main()
