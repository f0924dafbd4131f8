"""Sibling-response dedupe at receiver shape: every row has a response id, a few are siblings.

The tests taking ``ledger`` run once per backend; the rule over random batches on SQLite in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_aibill.ledger import AppendBatch, Ledger, UsageQuery, open_ledger
from otel_aibill.ledger.rows import RESPONSE_BUCKET_NS
from otel_aibill.usage import PricedUsage
from test_ledger_support import T0, priced, trace_id, unique_responses


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    led = open_ledger(ledger_url)
    yield led
    led.close()


def test_mixed_batch_marks_only_the_siblings(ledger: Ledger) -> None:
    trace = trace_id()
    original = priced(trace=trace, response_id="resp-stored", start=T0)
    assert ledger.append(AppendBatch(rows=[original, *unique_responses(30)])).inserted == 31

    late_sibling = priced(trace=trace, response_id="resp-stored", start=T0 + 5_000)
    other = trace_id()
    pair = [priced(trace=other, response_id="resp-pair", start=T0 + 7_000 + i) for i in range(3)]
    fresh = unique_responses(40, start=T0 + 100_000)
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


def test_a_span_sent_twice_in_one_batch_is_a_duplicate_span_not_a_sibling(ledger: Ledger) -> None:
    trace = trace_id()
    call = priced(trace=trace, response_id="resp-1", start=T0)
    plain = priced(start=T0 + 1)
    result = ledger.append(AppendBatch(rows=[call, plain, call, plain, *unique_responses(3)]))
    assert (result.inserted, result.duplicate_responses, result.duplicate_spans) == (5, 0, 2)
    assert ledger.not_billable_counts() == {"duplicate_span": 2}
    sibling = priced(trace=trace, response_id="resp-1", start=T0 + 10)
    assert ledger.append(AppendBatch(rows=[sibling, sibling])).duplicate_responses == 1


_SPAN = st.tuples(
    st.sampled_from(["t1", "t2"]),  # trace
    st.integers(0, 11),  # span (a span id stands for one span: its other fields follow from it)
    st.sampled_from(["openai", "anthropic"]),
    st.sampled_from([None, "r1", "r2"]),  # response id
)


def _span_row(trace: str, span: int, provider: str, response_id: str | None) -> PricedUsage:
    start = T0 + span * 1_200 * 1_000_000_000  # 12 spans over 4 hours: buckets 0 to 4 apart
    return priced(
        trace=f"{trace:0>32}", span=f"{span:016x}", start=start, provider=provider, response_id=response_id
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_SPAN, max_size=10), min_size=1, max_size=4))
def test_sibling_marks_match_the_rule_over_any_batches(
    batches: list[list[tuple[str, int, str, str | None]]],
) -> None:
    """The billed rows and the counts equal the rule applied row by row in arrival order: a row
    duplicates the earliest billed row with its trace, provider and response id whose bucket is
    at most one apart, unless that row is itself (redelivered spans are stored once)."""
    ledger = open_ledger("sqlite:///:memory:")
    # one span keeps its first fields: a redelivery repeats the span exactly
    first_seen: dict[tuple[str, int], tuple[str, int, str, str | None]] = {}
    originals: dict[tuple[str, str, str], list[tuple[int, str]]] = {}  # key -> (bucket, span id)
    expected: dict[tuple[str, str], str | None] = {}  # (trace id, span id) -> duplicate_of
    try:
        for batch in batches:
            rows = [_span_row(*first_seen.setdefault((t, s), (t, s, p, r))) for t, s, p, r in batch]
            want = {"inserted": 0, "duplicate_responses": 0}
            for row in rows:
                u = row.usage
                if (u.trace_id, u.span_id) in expected:
                    continue  # stored already (earlier batch or earlier in this one)
                mark = None
                if u.response_id is not None:
                    bucket = u.start_time_ns // RESPONSE_BUCKET_NS
                    known = originals.setdefault((u.provider, u.response_id, u.trace_id), [])
                    near = [span for b, span in known if abs(b - bucket) <= 1]
                    if near:
                        mark = near[0]  # known is in arrival order: the first is the earliest
                    else:
                        known.append((bucket, u.span_id))
                expected[u.trace_id, u.span_id] = mark
                want["inserted" if mark is None else "duplicate_responses"] += 1
            result = ledger.append(AppendBatch(rows=rows))
            assert (result.inserted, result.duplicate_responses) == (
                want["inserted"],
                want["duplicate_responses"],
            )
            assert result.duplicate_spans == len(rows) - sum(want.values())
        billed = {(r.priced.usage.trace_id, r.priced.usage.span_id) for r in ledger.rows(limit=10_000)}
        assert billed == {span for span, mark in expected.items() if mark is None}
    finally:
        ledger.close()
