"""Spans of one provider call seen by several instrumentations are billed once, merged; distinct
calls with equal usage are never merged, whatever the order or the batches they come in."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_aibill.samecall import SameCalls, merge, model_base, same_call
from otel_aibill.usage import UsageRecord

MS = 1_000_000
LANGCHAIN = "openinference.instrumentation.langchain"
OPENAI = "openinference.instrumentation.openai"


def usage(
    span: str,
    scope: str = OPENAI,
    *,
    start: int = 0,
    end: int = 100,
    inp: int = 1200,
    out: int = 40,
    trace: str = "t1",
    parent: str | None = "app",
    **fields: object,
) -> UsageRecord:
    record = UsageRecord(
        trace_id=trace,
        span_id=span,
        parent_span_id=parent,
        start_time_ns=start * MS,
        end_time_ns=end * MS,
        provider="openai",
        model="gpt-4o-mini",
        request_model="gpt-4o-mini",
        operation="chat",
        input_tokens=inp,
        output_tokens=out,
        scope_name=scope,
    )
    return replace(record, **fields)  # type: ignore[arg-type]


def billed(batches: list[list[UsageRecord]], traces: int = 1000) -> tuple[list[UsageRecord], Counter[str]]:
    """The records billed for each batch, in order, through one rule; merged where merged."""
    calls, counts = SameCalls(traces), Counter[str]()
    out: list[UsageRecord] = []
    for batch in batches:
        decision = calls.decide(batch, counts)
        out += [decision.merged.get(i, batch[i]) for i in decision.kept]
    return out, counts


def test_langchain_span_and_openai_span_in_different_subtrees_are_one_call() -> None:
    """OpenInference's LangChain tracer does not attach its span to the context: the openai span
    is a sibling, not a child, of ``ChatOpenAI``, with the same counts and no response id."""
    chat_openai = usage("lc", LANGCHAIN, start=0, end=120)
    completion = usage("oa", OPENAI, start=5, end=110, response_model="gpt-4o-mini-2024-07-18")
    for batch in ([chat_openai, completion], [completion, chat_openai]):
        out, counts = billed([batch])
        assert len(out) == 1 and counts == Counter(duplicate_call=1)
        assert out[0].response_model == "gpt-4o-mini-2024-07-18"
    # across batches too, in both orders: still one bill
    assert len(billed([[chat_openai], [completion]])[0]) == 1
    assert len(billed([[completion], [chat_openai]])[0]) == 1


def test_the_bill_takes_the_richest_fields_of_every_span_in_any_order() -> None:
    """LangChain under OpenLLMetry beside openai-v2: one response id, only LangChain's span has the
    cached tokens, only the SDK's the service tier."""
    langchain = usage(
        "lc",
        "opentelemetry.instrumentation.langchain",
        response_id="chatcmpl-1",
        response_model="gpt-4o-mini-2024-07-18",
        cache_read_tokens=1024,
    )
    sdk = usage(
        "v2",
        "opentelemetry.instrumentation.openai_v2",
        start=2,
        end=98,
        response_id="chatcmpl-1",
        service_tier="default",
        response_model="gpt-4o-mini",
    )
    results = set()
    for batch in ([langchain, sdk], [sdk, langchain]):
        (record,), counts = billed([batch])
        assert counts == Counter(duplicate_call=1)
        results.add(record)
    (record,) = results  # the same record, ids included, in both orders
    assert (record.cache_read_tokens, record.service_tier, record.response_model, record.model) == (
        1024,
        "default",
        "gpt-4o-mini-2024-07-18",
        "gpt-4o-mini",
    )
    assert record.span_id == "lc"  # the richest span's ids carry the bill


def test_a_later_richer_span_supersedes_the_stored_bill_with_its_ids_kept() -> None:
    poor = usage("v2", "opentelemetry.instrumentation.openai_v2", response_id="r1")
    rich = usage(
        "lc",
        "opentelemetry.instrumentation.langchain",
        response_id="r1",
        cache_read_tokens=1024,
        reasoning_tokens=8,
    )
    calls, counts = SameCalls(100), Counter[str]()
    first = calls.decide([poor], counts)
    assert first.kept == [0] and not first.superseded
    later = calls.decide([rich], counts)
    assert later.kept == [] and counts == Counter(duplicate_call=1)
    (superseded,) = later.superseded
    assert (superseded.span_id, superseded.scope_name) == ("v2", "opentelemetry.instrumentation.openai_v2")
    assert (superseded.cache_read_tokens, superseded.reasoning_tokens) == (1024, 8)
    assert superseded == replace(merge([poor, rich]), span_id="v2", scope_name=poor.scope_name)
    # a poorer span arriving after the rich one changes nothing
    calls2 = SameCalls(100)
    calls2.decide([rich], counts)
    assert calls2.decide([poor], counts).superseded == []


def test_distinct_calls_with_equal_counts_are_billed_twice() -> None:
    # a retry, by the same instrumentation, overlapping or not
    overlapping = [usage("a", start=0, end=100), usage("b", start=10, end=90)]
    sequential = [usage("a", start=0, end=100), usage("b", start=200, end=300)]
    assert len(billed([overlapping])[0]) == 2
    assert len(billed([sequential])[0]) == 2
    # seen by different instrumentations but one after the other: not one within the other
    apart = [usage("lc", LANGCHAIN, start=0, end=100), usage("oa", OPENAI, start=150, end=250)]
    assert len(billed([apart])[0]) == 2
    assert len(billed([apart[:1], apart[1:]])[0]) == 2
    # two parallel tool calls, each seen by LangChain and by the openai instrumentation
    parallel = [
        usage("lc1", LANGCHAIN, start=0, end=100),
        usage("lc2", LANGCHAIN, start=1, end=101),
        usage("oa1", OPENAI, start=3, end=97),
        usage("oa2", OPENAI, start=4, end=99),
    ]
    for batch in itertools.permutations(parallel):
        out, counts = billed([list(batch)])
        assert len(out) == 2 and counts == Counter(duplicate_call=2)
    assert len(billed([parallel[:2], parallel[2:]])[0]) == 2
    # different response ids, different models, other token counts, another provider or trace
    assert len(billed([[usage("lc", LANGCHAIN, response_id="x"), usage("oa", response_id="y")]])[0]) == 2
    assert (
        len(billed([[usage("lc", LANGCHAIN), usage("oa", model="gpt-4.1", request_model="gpt-4.1")]])[0]) == 2
    )
    assert len(billed([[usage("lc", LANGCHAIN), usage("oa", out=41)]])[0]) == 2
    assert len(billed([[usage("lc", LANGCHAIN), usage("oa", provider="azure.ai.openai")]])[0]) == 2
    assert len(billed([[usage("lc", LANGCHAIN), usage("oa", trace="t2")]])[0]) == 2


def test_nested_instrumentations_of_one_sdk_are_one_call() -> None:
    """Parent and child with the same counts are one call whatever their scopes and models."""
    inner = usage("c", "", parent="b", end=97)
    middle = usage("b", "", parent="a", end=98, model="unknown", request_model=None)
    outer = usage("a", "", parent="root", end=99)
    for batch in itertools.permutations([inner, middle, outer]):
        out, counts = billed([list(batch)])
        assert [u.span_id for u in out] == ["c"] and counts == Counter(duplicate_call=2)
    assert [u.span_id for u in billed([[outer], [middle], [inner]])[0]] == ["a"]
    # a retry inside an LLM span: same counts but two response ids
    assert (
        len(billed([[usage("c", "", parent="b", response_id="r2"), usage("b", "", response_id="r1")]])[0])
        == 2
    )


def test_redelivery_is_decided_the_same_way() -> None:
    lc, oa = usage("lc", LANGCHAIN, end=120, cache_read_tokens=64), usage("oa", OPENAI, start=5, end=110)
    out, counts = billed([[lc, oa], [oa, lc]])
    assert [u.span_id for u in out] == ["lc", "lc"]  # the billed span goes on to the ledger's dedupe
    assert counts == Counter(duplicate_call=2)


def test_forget_undoes_a_batch_whose_append_failed() -> None:
    stored = usage("v2", "opentelemetry.instrumentation.openai_v2", response_id="r1")
    calls, counts = SameCalls(100), Counter[str]()
    calls.decide([stored], counts)
    failed = [
        usage("lc", "opentelemetry.instrumentation.langchain", response_id="r1", cache_read_tokens=9),
        usage("x", LANGCHAIN, start=300, end=400),
    ]
    first = calls.decide(failed, counts)
    calls.forget()
    again = calls.decide(failed, counts)
    assert (again.kept, again.merged, again.superseded) == (first.kept, first.merged, first.superseded)
    assert again.kept == [1] and len(again.superseded) == 1


def test_the_window_is_bounded() -> None:
    calls, counts = SameCalls(2), Counter[str]()
    for t in range(5):
        calls.decide([usage("lc", LANGCHAIN, trace=f"t{t}")], counts)
    assert [c.billed.trace_id for c in calls._calls] == ["t3", "t4"]
    assert list(calls._traces) == ["t3", "t4"]
    # an evicted trace's second span is billed again: memory is bounded, by design
    assert calls.decide([usage("oa", OPENAI, trace="t0", start=5, end=95)], counts).kept == [0]


def test_many_equal_calls_of_one_instrumentation_in_one_trace() -> None:
    """A batch job: hundreds of equal calls in one trace, seen by two instrumentations, their spans
    in end order. Each call is billed once; the comparisons a span costs stay bounded."""
    first = [usage(f"a{i}", LANGCHAIN, start=10 * i, end=10 * i + 8) for i in range(300)]
    second = [usage(f"b{i}", OPENAI, start=10 * i + 1, end=10 * i + 7) for i in range(300)]
    calls, counts = SameCalls(1000), Counter[str]()
    assert len(calls.decide(first + second, counts).kept) == 300 and counts == Counter(duplicate_call=300)
    for call in calls._calls:  # evicted or forgotten, the indexes let go of them too
        calls._drop_call(call)
    assert (calls._traces, calls._by_span, calls._by_counts, calls._by_parent, calls._by_response) == (
        {},
        {},
        {},
        {},
        {},
    )
    # in two requests, one per instrumentation: as long as fewer calls than MAX_CANDIDATES lie between
    out, counts = billed([first[:60], second[:60]])
    assert len(out) == 60 and counts == Counter(duplicate_call=60)


def test_models_match_with_or_without_dates() -> None:
    assert model_base("gpt-4o-mini-2024-07-18") == model_base("gpt-4o-mini") == "gpt-4o-mini"
    assert model_base("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert model_base("openai/gpt-4o") == "gpt-4o"
    a = usage("lc", LANGCHAIN, model="gpt-4o-mini-2024-07-18", response_model="gpt-4o-mini-2024-07-18")
    assert same_call(a, usage("oa", OPENAI, start=2, end=98))


_parts = st.integers(0, 400)


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.builds(
            lambda i, read, write, reasoning, tier, model: usage(
                f"s{i}",
                f"scope{i}",
                start=i,
                end=100 - i,
                cache_read_tokens=read,
                cache_write_tokens=write,
                reasoning_tokens=min(reasoning, 40),
                service_tier=tier,
                response_model=model,
            ),
            st.integers(0, 30),
            _parts,
            _parts,
            st.integers(0, 40),
            st.sampled_from([None, "default", "flex"]),
            st.sampled_from([None, "gpt-4o-mini", "gpt-4o-mini-2024-07-18"]),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda u: u.span_id,
    ),
    seed=st.randoms(),
)
def test_merge_does_not_depend_on_order_and_stays_valid(records: list[UsageRecord], seed: object) -> None:
    shuffled = list(records)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    merged = merge(records)
    assert merge(shuffled) == merged
    assert merged.cache_read_tokens + merged.cache_write_tokens <= merged.input_tokens
    assert merged.reasoning_tokens <= merged.output_tokens
    assert billed([shuffled])[0] == billed([records])[0]
