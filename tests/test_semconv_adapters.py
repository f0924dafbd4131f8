"""Each adapter against span attributes recorded from the real instrumentation packages.

The JSON files under tests/data/semconv were written by tests/data/semconv/capture.py,
which drives the real openai / anthropic SDKs, instrumented by each package, against a
local server answering with OpenAI / Anthropic response shapes (OpenAI: 1200 prompt
tokens of which 1024 cached, 300 completion tokens of which 120 reasoning; Anthropic:
100 uncached + 1000 cache read + 200 cache write (150 5m + 50 1h), 300 output).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from otel_aibill.semconv import extract
from otel_aibill.usage import NotBillable, NotBillableReason, SpanView, UsageRecord
from semconv_fixtures import load_spans


def usage(span: SpanView) -> UsageRecord:
    result = extract(span)
    assert isinstance(result, UsageRecord), result
    return result


def not_billable(span: SpanView) -> NotBillable:
    result = extract(span)
    assert isinstance(result, NotBillable), result
    return result


# --- OpenAI through three instrumentations: chat, embeddings, stream with / without usage ---


def test_openai_v2_chat_embeddings_and_streams() -> None:
    chat, embeddings, stream_usage, stream_no_usage = load_spans("openai_v2")
    rec = usage(chat)
    assert (rec.provider, rec.model, rec.request_model, rec.operation) == (
        "openai",
        "gpt-4o-2024-08-06",
        "gpt-4o",
        "chat",
    )
    # openai-v2 reports no cache or reasoning parts on chat: totals only.
    assert (rec.input_tokens, rec.output_tokens, rec.cache_read_tokens, rec.reasoning_tokens) == (
        1200,
        300,
        0,
        0,
    )
    assert rec.service_tier == "default"
    assert rec.response_id == "chatcmpl-fixture-1"
    assert rec.convention == "genai"
    assert rec.customer is None
    assert (rec.trace_id, rec.span_id, rec.parent_span_id) == (
        chat.trace_id,
        chat.span_id,
        chat.parent_span_id,
    )
    assert (rec.start_time_ns, rec.end_time_ns) == (chat.start_time_ns, chat.end_time_ns)
    assert rec.scope_name == "opentelemetry.util.genai.handler"

    emb = usage(embeddings)
    assert (emb.operation, emb.model, emb.input_tokens, emb.output_tokens) == (
        "embeddings",
        "text-embedding-3-small",
        8,
        0,
    )
    assert usage(stream_usage).input_tokens == 1200
    nb = not_billable(stream_no_usage)
    assert nb.reason is NotBillableReason.NO_USAGE
    assert (nb.trace_id, nb.span_id) == (stream_no_usage.trace_id, stream_no_usage.span_id)


def test_traceloop_openai_reads_cache_and_nonstandard_reasoning() -> None:
    chat, embeddings, stream_usage, stream_no_usage = load_spans("traceloop_openai")
    assert chat.attributes["gen_ai.usage.reasoning_tokens"] == 120  # the non-standard name, as recorded
    rec = usage(chat)
    assert rec.convention == "traceloop"
    assert (rec.input_tokens, rec.cache_read_tokens, rec.output_tokens, rec.reasoning_tokens) == (
        1200,
        1024,
        300,
        120,
    )
    assert (rec.provider, rec.model, rec.operation, rec.service_tier) == (
        "openai",
        "gpt-4o-2024-08-06",
        "chat",
        "default",
    )
    assert rec.response_id == "chatcmpl-fixture-1"
    emb = usage(embeddings)
    assert (emb.operation, emb.input_tokens, emb.cache_read_tokens) == ("embeddings", 8, 0)
    streamed = usage(stream_usage)
    assert (streamed.input_tokens, streamed.cache_read_tokens, streamed.output_tokens) == (1200, 1024, 300)
    assert not_billable(stream_no_usage).reason is NotBillableReason.NO_USAGE


def test_openinference_openai() -> None:
    chat, embeddings, stream_usage, stream_no_usage = load_spans("openinference_openai")
    rec = usage(chat)
    assert rec.convention == "openinference"
    assert (rec.provider, rec.model, rec.operation) == ("openai", "gpt-4o-2024-08-06", "chat")
    assert (rec.input_tokens, rec.cache_read_tokens, rec.output_tokens, rec.reasoning_tokens) == (
        1200,
        1024,
        300,
        120,
    )
    assert (rec.input_audio_tokens, rec.output_audio_tokens) == (0, 0)
    assert rec.response_id is None  # OpenInference records none
    emb = usage(embeddings)
    assert (emb.operation, emb.model, emb.input_tokens) == ("embeddings", "text-embedding-3-small", 8)
    assert usage(stream_usage).reasoning_tokens == 120
    assert not_billable(stream_no_usage).reason is NotBillableReason.NO_USAGE


# --- Anthropic with cache reads and writes: every instrumentation must give input = 1300 ---


def assert_anthropic_accounting(rec: UsageRecord) -> None:
    assert rec.provider == "anthropic"
    assert rec.model == "claude-sonnet-4-5-20250929"
    assert rec.request_model == "claude-sonnet-4-5"
    assert rec.operation == "chat"
    # 100 uncached + 1000 read + 200 written: the total includes the cache parts exactly once.
    assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_tokens, rec.output_tokens) == (
        1300,
        1000,
        200,
        300,
    )


def test_anthropic_sdk_own_span() -> None:
    (span,) = load_spans("anthropic_sdk")
    rec = usage(span)
    assert_anthropic_accounting(rec)
    assert rec.convention == "anthropic-sdk"
    assert (rec.cache_write_5m_tokens, rec.cache_write_1h_tokens) == (150, 50)
    assert rec.service_tier == "standard"
    assert rec.response_id == "msg_fixture_1"


def test_traceloop_anthropic_input_includes_cache() -> None:
    sdk_span, traceloop_span = load_spans("traceloop_anthropic")
    # Measured: OpenLLMetry 0.62 adds cache read + creation to input_tokens itself.
    assert traceloop_span.attributes["gen_ai.usage.input_tokens"] == 1300
    assert traceloop_span.attributes["gen_ai.usage.cache_creation.input_tokens"] == 200
    rec = usage(traceloop_span)
    assert rec.convention == "traceloop"
    assert_anthropic_accounting(rec)
    # With a global TracerProvider the SDK span is emitted too: same response id, so the
    # ledger's sibling rule can keep one of them.
    sdk_rec = usage(sdk_span)
    assert sdk_rec.response_id == rec.response_id == "msg_fixture_1"


def test_openinference_anthropic_input_includes_cache() -> None:
    sdk_span, oi_span = load_spans("openinference_anthropic")
    rec = usage(oi_span)
    assert rec.convention == "openinference"
    assert_anthropic_accounting(rec)
    assert usage(sdk_span).input_tokens == rec.input_tokens


def with_attrs(span: SpanView, changes: dict[str, Any]) -> SpanView:
    """``span`` with ``changes`` merged into its attributes."""
    return dataclasses.replace(span, attributes={**span.attributes, **changes})


def test_anthropic_sdk_compaction_tokens_are_added_to_totals() -> None:
    (span,) = load_spans("anthropic_sdk")
    compacted = with_attrs(
        span,
        {"anthropic.usage.compaction.input_tokens": 5000, "anthropic.usage.compaction.output_tokens": 400},
    )
    rec = usage(compacted)
    assert (rec.input_tokens, rec.output_tokens, rec.cache_read_tokens) == (6300, 700, 1000)


def test_openai_compatible_host_overrides_generic_openai_provider() -> None:
    chat = load_spans("openai_v2")[0]
    azure = usage(with_attrs(chat, {"server.address": "contoso.openai.azure.com"}))
    assert azure.provider == "azure.ai.openai"
    assert azure.server_address == "contoso.openai.azure.com"
    deepseek = usage(
        with_attrs(chat, {"server.address": "api.deepseek.com", "gen_ai.response.model": "deepseek-chat"})
    )
    assert (deepseek.provider, deepseek.model) == ("deepseek", "deepseek-chat")
    # traceloop keeps the base URL in gen_ai.openai.api_base
    tl_chat = load_spans("traceloop_openai")[0]
    groq = usage(with_attrs(tl_chat, {"gen_ai.openai.api_base": "https://api.groq.com/openai/v1/"}))
    assert groq.provider == "groq"


# --- Conventions not installed here: attribute sets taken from their published sources ---


def span_of(attrs: dict[str, Any], *, scope: str = "", name: str = "chat") -> SpanView:
    return SpanView(
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        name=name,
        start_time_ns=10,
        end_time_ns=20,
        attributes=attrs,
        scope_name=scope,
    )


def test_openlit_anthropic_input_excludes_cache_and_is_corrected() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-3-5-sonnet-latest",
        "gen_ai.response.model": "claude-3-5-sonnet-20241022",
        "gen_ai.usage.input_tokens": 100,  # Anthropic's own, uncached part only
        "gen_ai.usage.cache_read_input_tokens": 1000,
        "gen_ai.usage.cache_creation_input_tokens": 200,
        "gen_ai.usage.output_tokens": 300,
    }
    rec = usage(span_of(attrs, scope="openlit.otel.tracing"))
    assert rec.convention == "openlit"
    assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_tokens) == (1300, 1000, 200)
    # the same attributes from a convention-following emitter are a violation, not a guess
    bad = extract(span_of(attrs, scope="some.genai.instrumentation"))
    assert isinstance(bad, NotBillable) and bad.reason is NotBillableReason.INVALID_USAGE
    # OpenLIT's OpenAI spans already include cached tokens: no correction
    openai_attrs = {**attrs, "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 1500}
    openai_rec = usage(span_of(openai_attrs, scope="openlit.otel.tracing"))
    assert openai_rec.input_tokens == 1500


PYDANTIC_AI_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
    "gen_ai.response.id": "msg_01",
    "server.address": "api.anthropic.com",
    "gen_ai.usage.input_tokens": 1300,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.details.cache_read_tokens": 1000,
    "gen_ai.usage.details.cache_write_tokens": 200,
    "gen_ai.usage.details.input_tokens": 100,  # the provider's raw field, copied into details
    "gen_ai.usage.details.reasoning_tokens": 40,
    "operation.cost": 0.0123,
}


def test_pydantic_ai_model_request_span() -> None:
    rec = usage(span_of(PYDANTIC_AI_CHAT, scope="pydantic-ai", name="chat claude-sonnet-4-5"))
    assert rec.convention == "pydantic-ai"
    assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_tokens) == (1300, 1000, 200)
    assert (rec.output_tokens, rec.reasoning_tokens) == (300, 40)
    assert rec.response_id == "msg_01"


def test_pydantic_ai_agent_run_spans_are_aggregates() -> None:
    aggregated = {
        "gen_ai.agent.name": "agent",
        "gen_ai.aggregated_usage.input_tokens": 2600,
        "gen_ai.aggregated_usage.output_tokens": 600,
        "pydantic_ai.all_messages": "[]",
    }
    nb = not_billable(span_of(aggregated, scope="pydantic-ai", name="invoke_agent agent"))
    assert nb.reason is NotBillableReason.AGGREGATED_USAGE
    # use_aggregated_usage_attribute_names=False: plain names on the run span, no operation
    plain = {
        "agent_name": "agent",
        "model_name": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 2600,
        "gen_ai.usage.output_tokens": 600,
        "pydantic_ai.all_messages": "[]",
    }
    nb = not_billable(span_of(plain, scope="pydantic-ai", name="agent run"))
    assert nb.reason is NotBillableReason.AGGREGATED_USAGE


def test_deprecated_genai_names() -> None:
    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.prompt_tokens": 50,
        "gen_ai.usage.completion_tokens": 7,
        "gen_ai.openai.response.service_tier": "flex",
    }
    rec = usage(span_of(attrs, scope="opentelemetry.instrumentation.openai_v2"))
    assert (rec.input_tokens, rec.output_tokens, rec.provider, rec.service_tier) == (50, 7, "openai", "flex")
    # current names win when both are present
    both = {**attrs, "gen_ai.usage.input_tokens": 60, "gen_ai.usage.output_tokens": 9}
    assert (usage(span_of(both)).input_tokens, usage(span_of(both)).output_tokens) == (60, 9)


def test_old_traceloop_names_without_operation() -> None:
    attrs = {
        "gen_ai.system": "Anthropic",
        "llm.request.type": "chat",
        "gen_ai.request.model": "claude-3-5-haiku-20241022",
        "gen_ai.usage.prompt_tokens": 1300,
        "gen_ai.usage.completion_tokens": 20,
        "gen_ai.usage.cache_read_input_tokens": 1000,
        "gen_ai.usage.cache_creation_input_tokens": 200,
        "llm.usage.total_tokens": 1320,
    }
    rec = usage(span_of(attrs, scope="opentelemetry.instrumentation.anthropic", name="anthropic.chat"))
    assert rec.convention == "traceloop"
    assert (rec.provider, rec.operation, rec.model) == ("anthropic", "chat", "claude-3-5-haiku-20241022")
    assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_tokens) == (1300, 1000, 200)


def test_current_cache_write_name_preferred_over_older_one() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 1,
        "gen_ai.usage.cache_write.input_tokens": 300,
        "gen_ai.usage.cache_creation.input_tokens": 999,
    }
    assert usage(span_of(attrs)).cache_write_tokens == 300
    del attrs["gen_ai.usage.cache_write.input_tokens"]
    assert usage(span_of(attrs)).cache_write_tokens == 999


@pytest.mark.parametrize(
    ("tier_attrs", "expected"),
    [
        ({"openai.response.service_tier": "priority", "openai.request.service_tier": "auto"}, "priority"),
        ({"openai.request.service_tier": "flex"}, "flex"),
        ({"gen_ai.request.service_tier": "Batch"}, "batch"),
        ({"anthropic.response.service_tier": "priority"}, "priority"),
        ({}, None),
    ],
)
def test_served_tier_wins_over_requested(tier_attrs: dict[str, str], expected: str | None) -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 1,
        **tier_attrs,
    }
    assert usage(span_of(attrs)).service_tier == expected
