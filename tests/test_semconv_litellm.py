"""LiteLLM's ``litellm_request`` spans: the breakdown from ``metadata.usage_object``, read safely,
LiteLLM's own cost kept beside ours, and bad usage objects ignored (counted, logged), never fatal.

The attributes are those litellm 1.110 recorded for calls to the fake provider (trimmed to the
ones that matter; the real-library runs are in ``test_compat_libraries.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from otel_aibill import reported_cost
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import Ledger
from otel_aibill.pipeline import Pipeline
from otel_aibill.semconv import extract, litellm
from otel_aibill.usage import NotBillable, NotBillableReason, SpanView, UsageRecord

ANTHROPIC_USAGE = (
    "{'completion_tokens': 7, 'prompt_tokens': 1213, 'total_tokens': 1220, 'completion_tokens_details':"
    " {'reasoning_tokens': 0, 'text_tokens': 7}, 'prompt_tokens_details': {'audio_tokens': None,"
    " 'cache_write_tokens': 1208, 'cached_tokens': 0, 'image_tokens': None, 'text_tokens': 5,"
    " 'video_tokens': None, 'initial_prompt_tokens': None, 'cache_creation_tokens': 1208,"
    " 'cache_creation_token_details': {'ephemeral_5m_input_tokens': 1208, 'ephemeral_30m_input_tokens':"
    " None, 'ephemeral_1h_input_tokens': 0, 'ephemeral_12h_input_tokens': None}},"
    " 'cache_creation_input_tokens': 1208, 'cache_read_input_tokens': 0, 'iterations': None,"
    " 'inference_geo': None, 'speed': None, 'service_tier': 'standard'}"
)
OPENAI_USAGE = (
    "{'completion_tokens': 7, 'prompt_tokens': 1220, 'total_tokens': 1227, 'completion_tokens_details':"
    " {'accepted_prediction_tokens': 0, 'audio_tokens': 0, 'reasoning_tokens': 0,"
    " 'rejected_prediction_tokens': 0}, 'prompt_tokens_details': {'audio_tokens': 0, 'cached_tokens': 1152}}"
)


def request_attrs(provider: str = "openai", **extra: Any) -> dict[str, Any]:
    if provider == "anthropic":
        attrs: dict[str, Any] = {
            "gen_ai.cost.total_cost": 0.0046500000000000005,
            "gen_ai.openai.response.service_tier": "standard",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.id": "chatcmpl-b3b241f7-f076-4da8-b028-a291260671f5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.system": "anthropic",
            "gen_ai.usage.input_tokens": 1213,
            "gen_ai.usage.output_tokens": 7,
            "litellm.call_id": "60b718f4-ff70-4630-bded-2de3d1a5fe3a",
            "litellm.provider.model": "anthropic/claude-sonnet-4-5",
            "llm.request.type": "completion",
            "llm.user": "u-2",
            "metadata.user_api_key_end_user_id": "",
            "metadata.usage_object": ANTHROPIC_USAGE,
        }
    else:
        attrs = {
            "gen_ai.cost.total_cost": 0.0001008,
            "gen_ai.openai.response.service_tier": "default",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.id": "chatcmpl-77a66f0fc0e64df390fa10a0",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.system": "openai",
            "gen_ai.usage.input_tokens": 1220,
            "gen_ai.usage.output_tokens": 7,
            "litellm.call_id": "9a9c0d86-0f85-4c6c-9992-f35e2b1870d2",
            "litellm.provider.model": "openai/gpt-4o-mini",
            "llm.request.type": "completion",
            "llm.user": "u-1",
            "metadata.user_api_key_end_user_id": "",
            "metadata.usage_object": OPENAI_USAGE,
        }
    attrs.update(extra)
    return {k: v for k, v in attrs.items() if v is not None}


def span(attrs: dict[str, Any], name: str = "litellm_request", span_id: int = 1) -> SpanView:
    return SpanView(
        "0af7651916cd43dd8448eb211c80319c", f"{span_id:016x}", name, 10, 20, attrs, scope_name="litellm"
    )


def record(attrs: dict[str, Any]) -> UsageRecord:
    extracted = extract(span(attrs))
    assert isinstance(extracted, UsageRecord), extracted
    return extracted


def test_openai_cached_tokens_come_from_the_usage_object() -> None:
    u = record(request_attrs())
    assert (u.convention, u.provider, u.model) == ("litellm", "openai", "gpt-4o-mini-2024-07-18")
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (1220, 7, 1152, 0)
    assert u.reported_cost == Decimal("0.0001008")


def test_anthropic_cache_writes_and_their_ttl_come_from_the_usage_object() -> None:
    u = record(request_attrs("anthropic"))
    assert (u.provider, u.input_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
        "anthropic",
        1213,
        0,
        1208,
    )
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens, u.service_tier) == (1208, 0, "standard")
    # the same price LiteLLM reported (it charges the cache write at the 5-minute rate)
    ours = calc_price(
        Usage(input_tokens=1213, output_tokens=7, cache_write_tokens=1208),
        "claude-sonnet-4-5-20250929",
        provider_id="anthropic",
    ).total_price
    assert not reported_cost.disagree(Decimal(ours), u.reported_cost or Decimal(0))


def test_provider_from_the_litellm_model_when_gen_ai_system_is_missing() -> None:
    assert record(request_attrs("anthropic", **{"gen_ai.system": None})).provider == "anthropic"


RAW_ANTHROPIC = {
    "llm.anthropic.id": "msg_27eec8f135b84116a78bf272",
    "llm.anthropic.model": "claude-sonnet-4-5-20250929",
    "llm.anthropic.type": "message",
    "llm.anthropic.usage": "{'input_tokens': 5, 'cache_creation_input_tokens': 1208,"
    " 'cache_read_input_tokens': 0, 'cache_creation': {'ephemeral_5m_input_tokens': 1208,"
    " 'ephemeral_1h_input_tokens': 0}, 'output_tokens': 7, 'service_tier': 'standard'}",
}
RAW_OPENAI = {
    "llm.openai.id": "chatcmpl-77a66f0fc0e64df390fa10a0",
    "llm.openai.model": "gpt-4o-mini-2024-07-18",
    "llm.openai.object": "chat.completion",
    "llm.openai.service_tier": "default",
    "llm.openai.usage": OPENAI_USAGE,
}


def raw_span(attrs: dict[str, Any]) -> SpanView:
    return SpanView(
        "0af7651916cd43dd8448eb211c80319c",
        f"{2:016x}",
        "raw_gen_ai_request",
        11,
        19,
        attrs,
        scope_name="litellm",
        parent_span_id=f"{1:016x}",
    )


def test_the_raw_provider_response_is_read_in_the_canonical_accounting() -> None:
    """With an app span open, LiteLLM puts the call's attributes on the app span (lost when that
    span has ended): its raw_gen_ai_request child is then the only record of the call."""
    u = extract(raw_span(RAW_ANTHROPIC))
    assert isinstance(u, UsageRecord) and u.response_id is None
    assert (u.provider, u.model, u.input_tokens, u.output_tokens) == (
        "anthropic",
        "claude-sonnet-4-5-20250929",
        1213,
        7,
    )
    assert (u.cache_write_tokens, u.cache_write_5m_tokens, u.service_tier) == (1208, 1208, "standard")
    u = extract(raw_span(RAW_OPENAI))
    assert isinstance(u, UsageRecord)
    assert (u.provider, u.input_tokens, u.cache_read_tokens, u.service_tier) == (
        "openai",
        1220,
        1152,
        "default",
    )
    # not a chat call, a bad usage, nothing to read
    embedding = extract(raw_span({**RAW_OPENAI, "llm.openai.object": "list"}))
    assert isinstance(embedding, NotBillable) and embedding.reason is NotBillableReason.NOT_INFERENCE
    bad = extract(raw_span({**RAW_OPENAI, "llm.openai.usage": "{'prompt_tokens': -1}"}))
    assert isinstance(bad, NotBillable) and bad.reason is NotBillableReason.INVALID_USAGE


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_litellm_span_and_its_raw_child_are_one_call(provider: str, tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'raw.db'}")
    try:
        parent = span(request_attrs(provider))
        child = raw_span(RAW_OPENAI if provider == "openai" else RAW_ANTHROPIC)
        result = Pipeline(ledger).ingest([child, parent])
        assert result.billed == 1 and result.not_billable == {"duplicate_call": 1}
        (row,) = ledger.rows()
        assert row.priced.usage.response_id == parent.attributes["gen_ai.response.id"]
        assert row.priced.usage.customer == parent.attributes["llm.user"]
    finally:
        ledger.close()


BAD = [
    ("not_a_literal", "{'prompt_tokens': __import__('os').system('true')}"),
    ("not_a_literal", "{'prompt_tokens': 1220, "),
    ("not_a_dict", "[1, 2, 3]"),
    ("too_large", "{'prompt_tokens': 1220, 'x': '" + "a" * 9000 + "'}"),
    ("too_deep", "{'a': " * 50 + "1" + "}" * 50),
    ("too_deep", "[" * 4000),  # would exhaust the parser's recursion
    ("invalid_count", "{'prompt_tokens': 1220, 'prompt_tokens_details': {'cached_tokens': -5}}"),
    ("invalid_count", "{'prompt_tokens': 1220, 'prompt_tokens_details': {'cached_tokens': 1.5}}"),
    ("invalid_count", "{'prompt_tokens': 1220, 'prompt_tokens_details': {'cached_tokens': True}}"),
    ("invalid_count", "{'prompt_tokens': 1220, 'prompt_tokens_details': {'cached_tokens': '12'}}"),
    ("inconsistent", "{'prompt_tokens': 1220, 'prompt_tokens_details': {'cached_tokens': 5000}}"),
    ("not_text", 42),
]


@pytest.mark.parametrize(("reason", "value"), BAD, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD)])
def test_a_bad_usage_object_is_ignored_counted_and_logged(
    reason: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    before = litellm.IGNORED[reason]
    with caplog.at_level(logging.WARNING, logger="otel_aibill.semconv.litellm"):
        u = record(request_attrs(**{"metadata.usage_object": value}))
    assert litellm.IGNORED[reason] == before + 1
    assert any("usage_object ignored" in r.getMessage() for r in caplog.records)
    # billed from the plain attributes
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (1220, 7, 0)


def test_a_bad_usage_object_without_plain_counts_bills_nothing() -> None:
    attrs = request_attrs(**{"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None})
    attrs["metadata.usage_object"] = "not a literal"
    extracted = extract(span(attrs))
    assert isinstance(extracted, NotBillable) and extracted.reason is NotBillableReason.NO_USAGE
    # and the totals come from the usage object when only it has them
    attrs["metadata.usage_object"] = OPENAI_USAGE
    u = record(attrs)
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (1220, 7, 1152)


def test_parse_literal_never_evaluates() -> None:
    with pytest.raises(litellm.BadUsageObject):
        litellm.parse_literal("(lambda: 1)()")
    assert litellm.parse_literal("{'a': {'b': [1, 2]}}") == {"a": {"b": [1, 2]}}


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path / 'litellm.db'}")
    yield opened
    opened.close()


def test_pipeline_bills_the_end_user_and_compares_litellm_cost(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    before = dict(reported_cost.COUNTS)
    Pipeline(ledger).ingest([span(request_attrs())])
    (row,) = ledger.rows()
    assert row.priced.usage.customer == "u-1"  # llm.user, a default customer key
    assert row.priced.cost == Decimal(
        calc_price(
            Usage(input_tokens=1220, output_tokens=7, cache_read_tokens=1152),
            "gpt-4o-mini-2024-07-18",
            provider_id="openai",
        ).total_price
    )
    assert reported_cost.COUNTS["agree"] == before.get("agree", 0) + 1
    # a reported cost far from ours is counted and logged, and the bill is still ours
    with caplog.at_level(logging.WARNING, logger="otel_aibill.reported_cost"):
        Pipeline(ledger).ingest([span(request_attrs(**{"gen_ai.cost.total_cost": 0.5}), span_id=3)])
    assert reported_cost.COUNTS["disagree"] == before.get("disagree", 0) + 1
    assert any("reported 0.5" in r.getMessage() for r in caplog.records)
