"""Sibling-response dedupe at receiver shape: every row has a response id, a few are siblings."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_aibill.ledger import AppendBatch, SqliteLedger, UsageQuery
from test_ledger_support import T0, priced, trace_id


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    led = SqliteLedger(f"sqlite:///{tmp_path}/ledger.db")
    yield led
    led.close()


def _unique(n: int, start: int = T0) -> list:  # type: ignore[type-arg]
    return [priced(trace=trace_id(), response_id=f"chatcmpl-{start}-{i}", start=start + i) for i in range(n)]


def test_lookup_probes_the_index_instead_of_scanning_buckets(ledger: SqliteLedger) -> None:
    """The lookup must seek (bucket, response_id); a range on response_id scans the whole hour."""
    ledger.append(AppendBatch(rows=_unique(50)))
    seen: list[str] = []
    ledger._writer.set_trace_callback(seen.append)
    try:
        ledger.append(AppendBatch(rows=_unique(20, start=T0 + 10_000)))
    finally:
        ledger._writer.set_trace_callback(None)
    [lookup] = [sql for sql in seen if "usage_response" in sql]
    check = sqlite3.connect(ledger.options.path)
    plan = " ".join(row[3] for row in check.execute(f"EXPLAIN QUERY PLAN {lookup}"))
    check.close()
    assert "usage_response (resp_bucket=? AND response_id=?)" in plan, plan


def test_mixed_batch_marks_only_the_siblings(ledger: SqliteLedger) -> None:
    trace = trace_id()
    original = priced(trace=trace, response_id="resp-stored", start=T0)
    assert ledger.append(AppendBatch(rows=[original, *_unique(30)])).inserted == 31

    late_sibling = priced(trace=trace, response_id="resp-stored", start=T0 + 5_000)
    other = trace_id()
    pair = [priced(trace=other, response_id="resp-pair", start=T0 + 7_000 + i) for i in range(3)]
    fresh = _unique(40, start=T0 + 100_000)
    batch = [*fresh[:20], late_sibling, pair[0], *fresh[20:], pair[1], original, pair[2]]
    result = ledger.append(AppendBatch(rows=batch))
    # 40 fresh + the pair's first; the late sibling and two of the pair are siblings; the
    # original is a redelivery
    assert (result.inserted, result.duplicate_responses, result.duplicate_spans) == (41, 3, 1)
    billed = {r.priced.usage.span_id for r in ledger.rows(limit=10_000)}
    assert original.usage.span_id in billed and pair[0].usage.span_id in billed
    assert not billed & {late_sibling.usage.span_id, pair[1].usage.span_id, pair[2].usage.span_id}
    assert ledger.usage_summary(UsageQuery())[0].spans == 72

    again = ledger.append(AppendBatch(rows=batch))  # all of it again: only duplicate spans
    assert (again.inserted, again.duplicate_responses, again.duplicate_spans) == (0, 0, len(batch))


def test_a_span_sent_twice_in_one_batch_is_a_duplicate_span_not_a_sibling(ledger: SqliteLedger) -> None:
    trace = trace_id()
    call = priced(trace=trace, response_id="resp-1", start=T0)
    plain = priced(start=T0 + 1)
    result = ledger.append(AppendBatch(rows=[call, plain, call, plain, *_unique(3)]))
    assert (result.inserted, result.duplicate_responses, result.duplicate_spans) == (5, 0, 2)
    assert ledger.not_billable_counts() == {"duplicate_span": 2}
    sibling = priced(trace=trace, response_id="resp-1", start=T0 + 10)
    assert ledger.append(AppendBatch(rows=[sibling, sibling])).duplicate_responses == 1
