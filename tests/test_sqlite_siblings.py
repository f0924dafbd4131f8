"""SQLite's stored-sibling lookup: the index it probes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from otel_aibill.ledger import AppendBatch, SqliteLedger
from test_ledger_support import T0, unique_responses


def test_lookup_probes_the_index_instead_of_scanning_buckets(tmp_path: Path) -> None:
    """The lookup must seek (bucket, response_id); a range on response_id scans the whole hour."""
    ledger = SqliteLedger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.append(AppendBatch(rows=unique_responses(50)))
    seen: list[str] = []
    ledger._writer.set_trace_callback(seen.append)
    try:
        ledger.append(AppendBatch(rows=unique_responses(20, start=T0 + 10_000)))
    finally:
        ledger._writer.set_trace_callback(None)
        ledger.close()
    [lookup] = [sql for sql in seen if "usage_response" in sql]
    check = sqlite3.connect(ledger.options.path)
    plan = " ".join(row[3] for row in check.execute(f"EXPLAIN QUERY PLAN {lookup}"))
    check.close()
    assert "usage_response (resp_bucket=? AND response_id=?)" in plan, plan
