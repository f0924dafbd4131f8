"""Double-count rules and token validation decided by extraction alone."""

from __future__ import annotations

from typing import Any

import pytest

from otel_aibill.semconv import extract
from otel_aibill.semconv.tokens import MAX_TOKENS, InvalidUsage, token_value
from otel_aibill.usage import NotBillable, NotBillableReason, SpanView, UsageRecord

BASE: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 20,
}


def span_of(attrs: dict[str, Any], *, name: str = "chat gpt-4o", scope: str = "") -> SpanView:
    return SpanView(
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        name=name,
        start_time_ns=1,
        end_time_ns=2,
        attributes=attrs,
        scope_name=scope,
    )


def reason_of(attrs: dict[str, Any], **kwargs: Any) -> tuple[NotBillableReason, str]:
    result = extract(span_of(attrs, **kwargs))
    assert isinstance(result, NotBillable), result
    assert (result.trace_id, result.span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    return result.reason, result.detail


# --- which spans bill ---


@pytest.mark.parametrize("operation", ["chat", "generate_content", "text_completion", "embeddings", "Chat"])
def test_inference_operations_bill(operation: str) -> None:
    result = extract(span_of({**BASE, "gen_ai.operation.name": operation}))
    assert isinstance(result, UsageRecord)
    assert result.operation == operation.lower()


@pytest.mark.parametrize(
    "operation", ["create_agent", "invoke_agent", "execute_tool", "invoke_workflow", "plan", "retrieval"]
)
def test_agent_and_tool_operations_never_bill(operation: str) -> None:
    reason, detail = reason_of({**BASE, "gen_ai.operation.name": operation})
    assert reason is NotBillableReason.NOT_INFERENCE
    assert operation in detail


def test_aggregated_usage_is_not_billed_whatever_else_the_span_says() -> None:
    attrs = {**BASE, "gen_ai.aggregated_usage.input_tokens": 100}
    assert reason_of(attrs) == (NotBillableReason.AGGREGATED_USAGE, "gen_ai.aggregated_usage.input_tokens")


@pytest.mark.parametrize("kind", ["CHAIN", "AGENT", "TOOL", "RETRIEVER", "RERANKER", "GUARDRAIL"])
def test_openinference_non_llm_kinds(kind: str) -> None:
    attrs = {"openinference.span.kind": kind, "llm.token_count.prompt": 10, "llm.token_count.completion": 2}
    assert reason_of(attrs)[0] is NotBillableReason.NOT_INFERENCE


@pytest.mark.parametrize(
    ("request_type", "operation"),
    [("chat", "chat"), ("completion", "text_completion"), ("embedding", "embeddings")],
)
def test_traceloop_request_types(request_type: str, operation: str) -> None:
    attrs = {k: v for k, v in BASE.items() if k != "gen_ai.operation.name"} | {
        "llm.request.type": request_type
    }
    result = extract(span_of(attrs, name="openai.chat"))
    assert isinstance(result, UsageRecord) and result.operation == operation


def test_traceloop_framework_spans_never_bill() -> None:
    attrs = {**BASE, "traceloop.span.kind": "workflow"}
    del attrs["gen_ai.operation.name"]
    assert reason_of(attrs)[0] is NotBillableReason.NOT_INFERENCE
    assert reason_of({**BASE, "llm.request.type": "rerank", "gen_ai.operation.name": ""})[0] is (
        NotBillableReason.NOT_INFERENCE
    )


def test_operation_from_span_name_when_no_attribute_names_it() -> None:
    attrs = {k: v for k, v in BASE.items() if k != "gen_ai.operation.name"}
    for name, op in [("openai.embeddings", "embeddings"), ("chat gpt-4o", "chat"), ("my span", "unknown")]:
        result = extract(span_of(attrs, name=name))
        assert isinstance(result, UsageRecord) and result.operation == op


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"http.method": "GET", "http.route": "/users", "db.system": "postgresql"},
        {"genai": 1, "llm": 2, "gen_ai": 3, "customer.id": "c1"},
    ],
)
def test_spans_without_genai_attributes(attrs: dict[str, Any]) -> None:
    assert reason_of(attrs) == (NotBillableReason.NOT_GENAI, "")


def test_genai_span_without_counts_is_no_usage() -> None:
    attrs = {k: v for k, v in BASE.items() if not k.startswith("gen_ai.usage")}
    assert reason_of(attrs)[0] is NotBillableReason.NO_USAGE
    # the anthropic SDK's count_tokens span: model and provider, no usage
    counting = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "anthropic.message.count_tokens.input_tokens": 1200,
    }
    assert reason_of(counting, name="anthropic.messages.count_tokens", scope="com.anthropic.sdk.python")[
        0
    ] is (NotBillableReason.NO_USAGE)
    zeros = {**BASE, "gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0}
    assert reason_of(zeros)[0] is NotBillableReason.NO_USAGE


def test_one_total_is_enough_and_missing_parts_are_zero() -> None:
    embeddings = {**BASE, "gen_ai.operation.name": "embeddings"}
    del embeddings["gen_ai.usage.output_tokens"]
    result = extract(span_of(embeddings))
    assert isinstance(result, UsageRecord)
    assert (result.input_tokens, result.output_tokens, result.cache_read_tokens, result.reasoning_tokens) == (
        100,
        0,
        0,
        0,
    )


def test_model_and_provider_fallbacks() -> None:
    no_model = {k: v for k, v in BASE.items() if k != "gen_ai.request.model"}
    result = extract(span_of(no_model))
    assert isinstance(result, UsageRecord) and result.model == "unknown"
    # no provider anywhere, but the model id names one
    prefixed = {k: v for k, v in BASE.items() if k != "gen_ai.provider.name"} | {
        "gen_ai.request.model": "anthropic/claude-sonnet-4-5"
    }
    result = extract(span_of(prefixed))
    assert isinstance(result, UsageRecord)
    assert (result.provider, result.model) == ("anthropic", "claude-sonnet-4-5")


# --- validation ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12), (0, 0), (12.0, 12), ("12", 12), (" 7 ", 7), (MAX_TOKENS, MAX_TOKENS)],
)
def test_accepted_token_values(value: object, expected: int) -> None:
    assert token_value("k", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        1.5,
        float("nan"),
        float("inf"),
        True,
        False,
        "12.0",
        "-3",
        "1e3",
        "",
        "٣",
        [1],
        (1, 2),
        {"a": 1},
        MAX_TOKENS + 1,
        "9" * 14,
        b"12",
    ],
)
def test_rejected_token_values(value: object) -> None:
    with pytest.raises(InvalidUsage, match=r"^k: "):
        token_value("k", value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"gen_ai.usage.input_tokens": -5}, "gen_ai.usage.input_tokens"),
        ({"gen_ai.usage.output_tokens": 2.5}, "gen_ai.usage.output_tokens"),
        ({"gen_ai.usage.input_tokens": True}, "gen_ai.usage.input_tokens"),
        ({"gen_ai.usage.cache_read.input_tokens": "lots"}, "gen_ai.usage.cache_read.input_tokens"),
        ({"gen_ai.usage.reasoning.output_tokens": [1, 2]}, "gen_ai.usage.reasoning.output_tokens"),
        ({"gen_ai.usage.input_tokens": 10**13}, "gen_ai.usage.input_tokens"),
        (
            {"gen_ai.usage.cache_read.input_tokens": 90, "gen_ai.usage.cache_write.input_tokens": 20},
            "cache read",
        ),
        ({"gen_ai.usage.reasoning.output_tokens": 21}, "reasoning"),
    ],
)
def test_invalid_usage_names_the_problem(change: dict[str, Any], named: str) -> None:
    reason, detail = reason_of({**BASE, **change})
    assert reason is NotBillableReason.INVALID_USAGE
    assert named in detail


def test_parts_equal_to_totals_are_valid() -> None:
    attrs = {
        **BASE,
        "gen_ai.usage.cache_read.input_tokens": 60,
        "gen_ai.usage.cache_write.input_tokens": 40,
        "gen_ai.usage.reasoning.output_tokens": 20,
    }
    result = extract(span_of(attrs))
    assert isinstance(result, UsageRecord)
    assert (result.cache_read_tokens, result.cache_write_tokens, result.reasoning_tokens) == (60, 40, 20)


def test_cache_write_split_cannot_exceed_cache_write() -> None:
    attrs = {
        **BASE,
        "gen_ai.usage.cache_write.input_tokens": 10,
        "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 8,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 8,
    }
    reason, detail = reason_of(attrs, scope="com.anthropic.sdk.python")
    assert reason is NotBillableReason.INVALID_USAGE and "cache write 5m" in detail


def test_unexpected_attribute_mapping_errors_become_invalid_usage() -> None:
    class Exploding(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("broken mapping")

    result = extract(span_of(Exploding(BASE)))
    assert isinstance(result, NotBillable)
    assert result.reason is NotBillableReason.INVALID_USAGE
    assert "broken mapping" in result.detail
