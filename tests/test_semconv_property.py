"""Property: extract is total and every record it returns satisfies the accounting invariants."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_aibill.semconv import extract
from otel_aibill.semconv.tokens import MAX_TOKENS
from otel_aibill.usage import NotBillable, NotBillableReason, SpanView, UsageRecord

TOKEN_KEYS = [
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "gen_ai.usage.details.cache_read_tokens",
    "gen_ai.usage.details.reasoning_tokens",
    "gen_ai.usage.details.input_audio_tokens",
    "anthropic.usage.cache_creation.ephemeral_5m_input_tokens",
    "anthropic.usage.cache_creation.ephemeral_1h_input_tokens",
    "anthropic.usage.compaction.input_tokens",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.prompt_details.cache_read",
    "llm.token_count.prompt_details.cache_write",
    "llm.token_count.prompt_details.audio",
    "llm.token_count.completion_details.reasoning",
    "llm.token_count.completion_details.audio",
]
OTHER_KEYS = {
    "gen_ai.operation.name": st.sampled_from(
        ["chat", "embeddings", "invoke_agent", "execute_tool", "", "weird"]
    ),
    "gen_ai.provider.name": st.sampled_from(["openai", "anthropic", "xai", "az.ai.openai", "", "??"]),
    "gen_ai.system": st.sampled_from(["anthropic", "vertex_ai", "OpenAI"]),
    "gen_ai.request.model": st.sampled_from(
        ["gpt-4o", "openai/gpt-4o", "arn:aws:bedrock:x:y:z/us.a.b-v1:0", ""]
    ),
    "gen_ai.response.model": st.text(max_size=30),
    "server.address": st.sampled_from(["api.openai.com", "x.openai.azure.com", "::1", "", "https://"]),
    "openinference.span.kind": st.sampled_from(["LLM", "EMBEDDING", "CHAIN", "AGENT"]),
    "llm.request.type": st.sampled_from(["chat", "completion", "rerank"]),
    "gen_ai.aggregated_usage.input_tokens": st.integers(0, 100),
    "openai.response.service_tier": st.sampled_from(["default", "flex", "priority"]),
}

good_counts = st.integers(min_value=0, max_value=5_000)
bad_values: st.SearchStrategy[Any] = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=MAX_TOKENS + 1, max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.integers(min_value=0, max_value=10**6).map(str),
    st.lists(st.integers(), max_size=3),
    st.lists(st.text(max_size=3), max_size=3).map(tuple),
    st.none(),
)
token_values = st.one_of(good_counts, good_counts, good_counts, bad_values)


@st.composite
def attribute_dicts(draw: st.DrawFn) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOKEN_KEYS), max_size=10, unique=True)):
        attrs[key] = draw(token_values)
    for key in draw(st.lists(st.sampled_from(sorted(OTHER_KEYS)), max_size=6, unique=True)):
        attrs[key] = draw(OTHER_KEYS[key])
    attrs.update(
        draw(st.dictionaries(st.text(max_size=12), st.one_of(st.integers(), st.text(max_size=5)), max_size=3))
    )
    return attrs


SCOPES = st.sampled_from(
    [
        "",
        "com.anthropic.sdk.python",
        "pydantic-ai",
        "openlit.otel.tracing",
        "opentelemetry.instrumentation.openai.v1",
        "openinference.instrumentation.openai",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=attribute_dicts(),
    scope=SCOPES,
    name=st.sampled_from(["chat gpt-4o", "openai.chat", "agent run", "x"]),
)
def test_extract_is_total_and_records_are_consistent(attrs: dict[str, Any], scope: str, name: str) -> None:
    span = SpanView(
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        name=name,
        start_time_ns=5,
        end_time_ns=9,
        attributes=attrs,
        scope_name=scope,
    )
    result = extract(span)  # must not raise
    if isinstance(result, NotBillable):
        assert isinstance(result.reason, NotBillableReason)
        assert result.span_id == span.span_id
        return
    assert isinstance(result, UsageRecord)
    counts = [
        result.input_tokens,
        result.output_tokens,
        result.cache_read_tokens,
        result.cache_write_tokens,
        result.cache_write_5m_tokens,
        result.cache_write_1h_tokens,
        result.reasoning_tokens,
        result.input_audio_tokens,
        result.output_audio_tokens,
    ]
    assert all(type(c) is int and 0 <= c <= 2 * MAX_TOKENS for c in counts)
    assert result.input_tokens + result.output_tokens > 0
    assert result.cache_read_tokens + result.cache_write_tokens <= result.input_tokens
    assert result.cache_write_5m_tokens + result.cache_write_1h_tokens <= result.cache_write_tokens
    assert result.input_audio_tokens <= result.input_tokens
    assert result.reasoning_tokens <= result.output_tokens
    assert result.output_audio_tokens <= result.output_tokens
    assert result.customer is None
    assert not any(k.startswith("gen_ai.aggregated_usage.") for k in attrs)
    assert result.provider and result.model and result.operation


optional_count = st.one_of(st.none(), st.integers(min_value=0, max_value=2_000))


@settings(max_examples=300, deadline=None)
@given(
    input_tokens=optional_count,
    output_tokens=optional_count,
    cache_read=optional_count,
    cache_write=optional_count,
    reasoning=optional_count,
    as_text=st.booleans(),
)
def test_valid_counts_are_billed_exactly_and_inconsistent_ones_rejected(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None,
    reasoning: int | None,
    as_text: bool,
) -> None:
    """An oracle over well-formed values: exact record when consistent, the right reason otherwise."""
    drawn = {
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.usage.cache_read.input_tokens": cache_read,
        "gen_ai.usage.cache_write.input_tokens": cache_write,
        "gen_ai.usage.reasoning.output_tokens": reasoning,
    }
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}
    attrs |= {k: (str(v) if as_text else v) for k, v in drawn.items() if v is not None}
    span = SpanView("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "chat", 1, 2, attrs)
    result = extract(span)

    total_in, total_out = input_tokens or 0, output_tokens or 0
    if input_tokens is None and output_tokens is None:
        assert isinstance(result, NotBillable) and result.reason is NotBillableReason.NO_USAGE
    elif (cache_read or 0) + (cache_write or 0) > total_in or (reasoning or 0) > total_out:
        assert isinstance(result, NotBillable) and result.reason is NotBillableReason.INVALID_USAGE
    elif total_in == 0 and total_out == 0:
        assert isinstance(result, NotBillable) and result.reason is NotBillableReason.NO_USAGE
    else:
        assert isinstance(result, UsageRecord)
        assert (result.input_tokens, result.output_tokens) == (total_in, total_out)
        assert (result.cache_read_tokens, result.cache_write_tokens, result.reasoning_tokens) == (
            cache_read or 0,
            cache_write or 0,
            reasoning or 0,
        )
