"""Extraction of the GenAI spans of more instrumentations: google-genai, botocore Bedrock and
the Vercel AI SDK.

google_genai.json and botocore_bedrock.json were recorded by tests/data/semconv/capture.py from
the real packages against a local server; vercel_ai.json is transcribed from the ``ai`` package
source (a JS package), as each of its spans says. Every billed record must also be priceable by
genai-prices under the normalised provider and model.
"""

from __future__ import annotations

import pytest
from genai_prices import Usage, calc_price

from otel_aibill.pricing import pricing_provider_id
from otel_aibill.semconv import extract, normalize_provider
from otel_aibill.usage import NotBillable, NotBillableReason, SpanView, UsageRecord
from semconv_fixtures import load_spans


def tokens(rec: UsageRecord) -> tuple[int, int, int, int, int]:
    return (
        rec.input_tokens,
        rec.output_tokens,
        rec.cache_read_tokens,
        rec.cache_write_tokens,
        rec.reasoning_tokens,
    )


def billed(span: SpanView) -> UsageRecord:
    rec = extract(span)
    assert isinstance(rec, UsageRecord), rec
    price = calc_price(
        Usage(
            input_tokens=rec.input_tokens,
            output_tokens=rec.output_tokens,
            cache_read_tokens=rec.cache_read_tokens,
        ),
        rec.model,
        provider_id=pricing_provider_id(rec.provider),
    )
    assert price.total_price > 0
    return rec


def refused(span: SpanView, reason: NotBillableReason) -> NotBillable:
    result = extract(span)
    assert isinstance(result, NotBillable), result
    assert result.reason == reason, result
    return result


def test_google_genai_generate_content() -> None:
    (span,) = load_spans("google_genai")
    rec = billed(span)
    assert (rec.provider, rec.model, rec.operation, rec.convention) == (
        "gcp.gemini",
        "gemini-2.5-flash",
        "generate_content",
        "genai",
    )
    # Gemini's prompt count includes the cached content; output = candidates 180 + thoughts 120.
    assert tokens(rec) == (1200, 300, 1024, 0, 120)
    assert rec.response_id == "gemini-fixture-1"


def test_botocore_bedrock_converse_adds_cache_to_uncached_input() -> None:
    converse, invoke = load_spans("botocore_bedrock")
    rec = billed(converse)
    assert (rec.provider, rec.model, rec.operation, rec.convention) == (
        "aws.bedrock",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "chat",
        "botocore-bedrock",
    )
    # Bedrock's inputTokens (100) leaves out the cache read (1000) and write (200).
    assert tokens(rec) == (1300, 300, 1000, 200, 0)
    # InvokeModel reports only the body's uncached input_tokens: cache counts are not in the span.
    assert tokens(billed(invoke)) == (100, 300, 0, 0, 0)


def test_vercel_ai_bills_steps_not_the_calls_that_sum_them() -> None:
    outer, step1, tool, step2, stream, do_stream, *_, embed, _do_embed = load_spans("vercel_ai")
    for span in (outer, stream, embed):
        assert "sum of its step spans" in refused(span, NotBillableReason.AGGREGATED_USAGE).detail
    refused(tool, NotBillableReason.NOT_GENAI)

    first, second = billed(step1), billed(step2)
    assert (first.provider, first.model, first.request_model, first.operation, first.convention) == (
        "openai",
        "gpt-4o-2024-08-06",
        "gpt-4o",
        "chat",
        "vercel-ai",
    )
    assert tokens(first) == (1200, 300, 1024, 0, 120)
    assert tokens(second) == (1400, 50, 0, 0, 0)
    assert (first.response_id, second.response_id) == ("chatcmpl-step-1", "chatcmpl-step-2")
    # the outer span's totals are exactly the steps' sum, so billing it too would double them
    assert outer.attributes["ai.usage.inputTokens"] == first.input_tokens + second.input_tokens

    rec = billed(do_stream)
    assert (rec.provider, rec.model) == ("anthropic", "claude-sonnet-4-5-20250929")
    assert tokens(rec) == (1300, 300, 1000, 200, 0)  # AI SDK 6: input already includes the cache


def test_vercel_ai_before_6_corrects_provider_totals() -> None:
    spans = load_spans("vercel_ai")
    v5_anthropic, v5_google, v4_openai = spans[6], spans[7], spans[8]
    rec = billed(v5_anthropic)
    assert rec.provider == "anthropic"
    # uncached 100 + cache read 1000 + cache write 200 (from the provider metadata)
    assert tokens(rec) == (1300, 300, 1000, 200, 0)
    rec = billed(v5_google)
    assert (rec.provider, rec.model) == ("gcp.gemini", "gemini-2.5-flash")
    assert tokens(rec) == (1200, 300, 1024, 0, 120)  # candidates 180 + thinking 120
    rec = billed(v4_openai)
    assert (rec.provider, rec.model, rec.operation) == ("openai", "gpt-4o-2024-08-06", "chat")
    assert tokens(rec) == (1200, 300, 0, 0, 0)


def test_vercel_ai_embedding_step() -> None:
    rec = billed(load_spans("vercel_ai")[10])
    assert (rec.provider, rec.model, rec.operation) == ("openai", "text-embedding-3-small", "embeddings")
    assert tokens(rec) == (8, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("declared", "provider"),
    [
        ("openai.chat", "openai"),
        ("openai.responses", "openai"),
        ("anthropic.messages", "anthropic"),
        ("google.generative-ai", "gcp.gemini"),
        ("google.vertex.chat", "gcp.vertex_ai"),
        ("amazon-bedrock", "aws.bedrock"),
        ("azure.chat", "azure.ai.openai"),
        ("mistral.chat", "mistral_ai"),
        ("xai.chat", "x_ai"),
        ("aws.bedrock", "aws.bedrock"),
        ("my.custom", "my.custom"),
    ],
)
def test_vercel_provider_ids_normalise(declared: str, provider: str) -> None:
    assert normalize_provider(declared, None) == provider
