"""End to end: the real SDKs under the real instrumentations, billed into a real SQLite ledger.

Every instrumentation patches the SDK classes globally, so each group of compatible families
runs in its own interpreter (``e2e_support/runner.py``) against one fake provider served from
this process; that process bills through ``BillingSpanProcessor`` into its own ledger file,
which the tests then read. Expected usage is what the fake provider answered, in the canonical
accounting; the expected cost is ``genai_prices.calc_price`` of that usage.

What each instrumentation can report limits what can be billed exactly (measured here, see
``harness.as_reported``): opentelemetry-instrumentation-openai-v2 reports neither cached nor
reasoning tokens on chat spans and makes no span for ``responses.create``; OpenInference
reports no served service tier; OpenLLMetry and OpenInference report Anthropic cache writes
without the 5m / 1h split; OpenLLMetry adds ``message_start``'s output tokens to the final
count on Anthropic streams. The anthropic SDK's own spans carry everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_support.harness import Run, as_reported, expected_from, launch_autoinstrumented, launch_group
from otel_aibill.demo import Exchange, FakeProvider, start_fake_provider

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GROUP_OF = {
    "openai_v2": "genai",
    "anthropic_sdk": "genai",
    "traceloop_openai": "traceloop",
    "traceloop_anthropic": "traceloop",
    "anthropic_double": "traceloop",
    "openinference_openai": "openinference",
    "openinference_anthropic": "openinference",
}
OPENAI_FAMILIES = ("openai_v2", "traceloop_openai", "openinference_openai")
ANTHROPIC_FAMILIES = ("anthropic_sdk", "traceloop_anthropic", "openinference_anthropic", "anthropic_double")
OPENAI_BILLED = (
    "chat_cache_warm",
    "chat_cache_hit",
    "chat_reasoning",
    "chat_flex",
    "stream_usage",
    "embeddings",
    "responses",
    "retry_429",
    "trace_attr",
)
ANTHROPIC_BILLED = (
    "msg_cache_write",
    "msg_cache_read",
    "msg_stream",
    "msg_thinking",
    "retry_429",
    "trace_attr",
)
BILLED = [
    (family, scenario)
    for family in OPENAI_FAMILIES
    for scenario in OPENAI_BILLED
    if not (family == "openai_v2" and scenario == "responses")  # no span at all, see test below
] + [(family, scenario) for family in ANTHROPIC_FAMILIES for scenario in ANTHROPIC_BILLED]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with start_fake_provider() as server:
        yield server


@pytest.fixture(scope="module")
def runs(fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """All subprocesses at once (they mostly wait on imports), then their results."""
    workdir = tmp_path_factory.mktemp("e2e")
    started = {group: launch_group(group, fake.base_url, workdir) for group in sorted(set(GROUP_OF.values()))}
    app = EXAMPLES / "autoinstrumented_app.py"
    started["autoinstrumented"] = launch_autoinstrumented(app, fake.openai_base_url, workdir)
    started["autoinstrumented_all"] = launch_autoinstrumented(
        app, fake.openai_base_url, workdir, only_openai_v2=False
    )
    return {name: run.wait(timeout=240) for name, run in started.items()}


@pytest.fixture(scope="module")
def ledgers(runs: dict[str, Run]) -> Iterator[dict[str, Any]]:
    from otel_aibill.ledger import open_ledger

    opened = {name: open_ledger(run.db) for name, run in runs.items()}
    yield opened
    for ledger in opened.values():
        ledger.close()


def _exchange(fake: FakeProvider, tag: str) -> Exchange:
    answered = [x for x in fake.exchanges if x.tag == tag and x.status == 200]
    assert len(answered) == 1, f"{tag}: {[(x.status, x.path) for x in fake.exchanges if x.tag == tag]}"
    return answered[0]


def _explain(run: Run, trace_id: str) -> str:
    return f"spans of the trace: {run.spans_of(trace_id)}\nsubprocess output:\n{run.output[-2000:]}"


@pytest.mark.parametrize("group", ["genai", "traceloop", "openinference"])
def test_subprocess_ran_every_call(runs: dict[str, Run], group: str) -> None:
    run = runs[group]
    assert run.returncode == 0, run.output[-4000:]
    assert run.result["setup_error"] is None, run.result["setup_error"]
    assert [c for c in run.result["calls"] if c["error"]] == []
    assert run.result["processor"] == {"dropped": 0, "failed": 0, "errors": 0}


def test_fake_answered_the_cache_and_reasoning_cases(runs: dict[str, Run], fake: FakeProvider) -> None:
    """Guards the scenarios themselves: each one exercises the accounting rule it is named for."""
    for family in OPENAI_FAMILIES:
        hit = expected_from(_exchange(fake, f"{family}:chat_cache_hit"))
        assert hit.cache_read_tokens >= 1024 and hit.cache_read_tokens < hit.input_tokens
        assert expected_from(_exchange(fake, f"{family}:chat_reasoning")).reasoning_tokens > 0
        assert expected_from(_exchange(fake, f"{family}:chat_flex")).service_tier == "flex"
    for family in ANTHROPIC_FAMILIES:
        write = expected_from(_exchange(fake, f"{family}:msg_cache_write"))
        assert write.cache_write_5m_tokens > 0 and write.cache_write_1h_tokens > 0
        read = expected_from(_exchange(fake, f"{family}:msg_cache_read"))
        assert read.cache_read_tokens == write.cache_write_tokens and read.cache_write_tokens == 0
        assert expected_from(_exchange(fake, f"{family}:msg_thinking")).reasoning_tokens > 0


@pytest.mark.parametrize(("family", "scenario"), BILLED, ids=[f"{f}-{s}" for f, s in BILLED])
def test_call_billed_once_at_the_exact_price(
    runs: dict[str, Run], ledgers: dict[str, Any], fake: FakeProvider, family: str, scenario: str
) -> None:
    run = runs[GROUP_OF[family]]
    call = run.call(family, scenario)
    exchange = _exchange(fake, call["tag"])
    expected = as_reported(expected_from(exchange), family, exchange)

    rows = ledgers[run.name].rows(trace_id=call["trace_id"])
    assert len(rows) == 1, _explain(run, call["trace_id"])
    priced = rows[0].priced
    usage = priced.usage
    got = {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
        "reasoning": usage.reasoning_tokens,
    }
    want = {
        "input": expected.input_tokens,
        "output": expected.output_tokens,
        "cache_read": expected.cache_read_tokens,
        "cache_write": expected.cache_write_tokens,
        "cache_write_1h": expected.cache_write_1h_tokens,
        "reasoning": expected.reasoning_tokens,
    }
    assert got == want, _explain(run, call["trace_id"])
    assert usage.provider == expected.provider
    assert priced.status == "priced" and priced.cost == expected.cost(), (priced, expected)
    assert usage.customer == call["customer"], _explain(run, call["trace_id"])


@pytest.mark.parametrize("family", OPENAI_FAMILIES)
def test_stream_without_include_usage_is_not_billed(
    runs: dict[str, Run], ledgers: dict[str, Any], fake: FakeProvider, family: str
) -> None:
    run = runs[GROUP_OF[family]]
    call = run.call(family, "stream_no_usage")
    assert _exchange(fake, call["tag"]).usage is None  # exactly like OpenAI: no usage chunk
    assert len(run.spans_of(call["trace_id"])) == 1  # the instrumentation did record the call
    assert ledgers[run.name].rows(trace_id=call["trace_id"]) == []
    # one OpenAI family per group, one stream without usage each
    assert ledgers[run.name].not_billable_counts().get("no_usage") == 1


def test_openai_v2_makes_no_span_for_responses(runs: dict[str, Run], ledgers: dict[str, Any]) -> None:
    """A known gap of opentelemetry-instrumentation-openai-v2 2.4b0, kept visible here."""
    run = runs["genai"]
    call = run.call("openai_v2", "responses")
    assert run.spans_of(call["trace_id"]) == []
    assert ledgers["genai"].rows(trace_id=call["trace_id"]) == []


@pytest.mark.parametrize("scenario", ANTHROPIC_BILLED)
def test_sdk_span_and_instrumentor_span_billed_once(
    runs: dict[str, Run], ledgers: dict[str, Any], scenario: str
) -> None:
    run = runs["traceloop"]
    call = run.call("anthropic_double", scenario)
    llm_spans = [s for s in run.spans_of(call["trace_id"]) if "gen_ai.response.id" in s["attributes"]]
    assert sorted(s["scope"] for s in llm_spans) == [
        "com.anthropic.sdk.python",
        "opentelemetry.instrumentation.anthropic",
    ]
    assert len({s["attributes"]["gen_ai.response.id"] for s in llm_spans}) == 1
    assert len(ledgers["traceloop"].rows(trace_id=call["trace_id"])) == 1
    # the second span of each double is counted, not dropped silently: as a duplicate of the same
    # call in the process, or by the ledger's sibling rule when it arrived after the window
    counts = ledgers["traceloop"].not_billable_counts()
    duplicates = counts.get("duplicate_call", 0) + counts.get("duplicate_response", 0)
    assert duplicates == len(ANTHROPIC_BILLED), counts


def test_trace_level_attribution_waited_for_the_request_span(runs: dict[str, Run]) -> None:
    """The LLM span carried no customer; its request span named one after the LLM span was stored."""
    run = runs["genai"]
    call = run.call("openai_v2", "trace_attr")
    spans = run.spans_of(call["trace_id"])
    llm = [s for s in spans if s["scope"] != "e2e.app"]
    request = [s for s in spans if s["scope"] == "e2e.app"]
    assert len(llm) == 1 and "customer.id" not in llm[0]["attributes"]
    assert request[0]["attributes"]["customer.id"] == "acme"


def test_baggage_reaches_the_llm_span(runs: dict[str, Run]) -> None:
    run = runs["openinference"]
    call = run.call("openinference_openai", "embeddings")
    (span,) = run.spans_of(call["trace_id"])
    assert span["attributes"]["customer.id"] == "globex"


def _haiku_exchange(fake: FakeProvider, response_id: str | None) -> Exchange:
    """The example app's call (both auto-instrumented runs send the same request), by response id."""
    haiku = [
        x
        for x in fake.exchanges
        if x.status == 200 and x.tag is None and x.request and "haiku" in str(x.request.get("messages"))
    ]
    assert len(haiku) == 2, haiku
    matching = [x for x in haiku if x.response_id == response_id]
    assert len(matching) == 1, (response_id, [x.response_id for x in haiku])
    return matching[0]


def test_opentelemetry_instrument_bills_an_unmodified_app(
    runs: dict[str, Run], ledgers: dict[str, Any], fake: FakeProvider
) -> None:
    run = runs["autoinstrumented"]
    assert run.returncode == 0, run.output[-4000:]
    rows = ledgers["autoinstrumented"].rows()
    assert len(rows) == 1, run.output[-4000:]
    priced = rows[0].priced
    exchange = _haiku_exchange(fake, priced.usage.response_id)
    expected = as_reported(expected_from(exchange), "openai_v2", exchange)
    assert priced.usage.scope_name.startswith("opentelemetry.util.genai")  # openai-v2 only
    assert (priced.usage.input_tokens, priced.usage.output_tokens) == (
        expected.input_tokens,
        expected.output_tokens,
    )
    assert priced.cost == expected.cost()
    assert priced.usage.customer == "acme"  # from OTEL_RESOURCE_ATTRIBUTES


def test_opentelemetry_instrument_with_three_openai_instrumentations_bills_once(
    runs: dict[str, Run], ledgers: dict[str, Any], fake: FakeProvider
) -> None:
    """Every installed instrumentation registers the entry point "openai", so all three load and
    nest their spans around one call (OpenInference > OpenLLMetry > openai-v2). One call, one bill."""
    run = runs["autoinstrumented_all"]
    assert run.returncode == 0, run.output[-4000:]
    rows = ledgers["autoinstrumented_all"].rows()
    scopes = sorted(r.priced.usage.scope_name for r in rows)
    assert len(rows) == 1, f"one LLM call billed {len(rows)} times, by {scopes}"
    # the same request in both runs, so the same deterministic usage; OpenInference spans carry
    # no response id, so the exchange is not looked up by it here
    haiku = [x for x in fake.exchanges if x.tag is None and x.request and "haiku" in str(x.request)]
    assert len({json.dumps(x.usage, sort_keys=True) for x in haiku}) == 1
    assert rows[0].priced.cost == expected_from(haiku[0]).cost()
