"""Nested inference spans of one call are billed once; separate calls never merge."""

from __future__ import annotations

from collections import Counter

from otel_aibill.nesting import NestedCalls
from otel_aibill.usage import UsageRecord

DEPTH = {"c": 3, "b": 2, "a": 1}  # inner spans end first


def usage(span: str, parent: str | None, inp: int = 100, out: int = 20, trace: str = "t1") -> UsageRecord:
    return UsageRecord(
        trace_id=trace,
        span_id=span,
        parent_span_id=parent,
        start_time_ns=1,
        end_time_ns=10 - DEPTH.get(span, 0),
        provider="openai",
        model="gpt-4o",
        operation="chat",
        input_tokens=inp,
        output_tokens=out,
    )


def kept(batches: list[list[UsageRecord]]) -> tuple[list[str], Counter[str]]:
    nested, counts = NestedCalls(1000), Counter[str]()
    out: list[str] = []
    for batch in batches:
        out += [u.span_id for u in nested.drop_nested(batch, counts)]
    return out, counts


def test_chain_of_three_instrumentations_bills_the_innermost_once() -> None:
    inner, middle, outer = usage("c", "b"), usage("b", "a"), usage("a", "root")
    assert kept([[inner, middle, outer]]) == (["c"], Counter(duplicate_nested=2))
    assert kept([[outer, inner, middle]]) == (["c"], Counter(duplicate_nested=2))  # any order in a batch
    # across batches, also when the outer span happens to arrive first
    assert kept([[inner], [middle], [outer]])[0] == ["c"]
    assert kept([[outer], [middle], [inner]])[0] == ["a"]


def test_separate_calls_are_never_merged() -> None:
    siblings = [usage("x", "root"), usage("y", "root")]  # same usage, same parent, two calls
    assert kept([siblings])[0] == ["x", "y"]
    different = [usage("c", "b", inp=100), usage("b", "a", inp=101)]  # an agent step around a call
    assert kept([different])[0] == ["c", "b"]
    other_trace = [usage("c", "b"), usage("b", "a", trace="t2")]
    assert kept([other_trace])[0] == ["c", "b"]


def test_redelivery_is_decided_the_same_way() -> None:
    inner, outer = usage("c", "b"), usage("b", "a")
    spans, counts = kept([[inner, outer], [outer, inner]])
    assert spans == ["c", "c"]  # the inner one goes on to the ledger, which dedupes the span
    assert counts == Counter(duplicate_nested=2)
