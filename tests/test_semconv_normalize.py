"""Provider and model normalisation, checked against the genai-prices catalog it feeds."""

from __future__ import annotations

import pytest
from genai_prices import Usage, calc_price

from otel_aibill.pricing import pricing_provider_id
from otel_aibill.semconv import normalize_model, normalize_provider
from otel_aibill.semconv.providers import host_provider


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # current names are kept
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("aws.bedrock", "aws.bedrock"),
        ("gcp.vertex_ai", "gcp.vertex_ai"),
        # deprecated gen_ai.system values
        ("xai", "x_ai"),
        ("az.ai.inference", "azure.ai.inference"),
        ("az.ai.openai", "azure.ai.openai"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("gemini", "gcp.gemini"),
        # OpenInference llm.provider / llm.system values
        ("mistralai", "mistral_ai"),
        ("google", "gcp.gen_ai"),
        ("vertexai", "gcp.vertex_ai"),
        ("azure", "azure.ai.openai"),
        ("aws", "aws.bedrock"),
        ("xAI", "x_ai"),
        # capitalised spellings of older instrumentations
        ("OpenAI", "openai"),
        ("Anthropic", "anthropic"),
        (" Bedrock ", "aws.bedrock"),
        # unknown names are kept, lowercased
        ("SomeNewLab", "somenewlab"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_provider_names(name: str | None, expected: str) -> None:
    assert normalize_provider(name, None) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("api.openai.com", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("contoso.openai.azure.com", "azure.ai.openai"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "aws.bedrock"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("us-central1-aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("api.x.ai", "x_ai"),
        ("api.together.xyz", "together"),
        ("openrouter.ai", "openrouter"),
        ("api.cohere.com", "cohere"),
        ("api.perplexity.ai", "perplexity"),
        ("https://api.groq.com/openai/v1/", "groq"),
        ("API.OPENAI.COM:443", "openai"),
        ("127.0.0.1", None),
        ("bedrock.us-east-1.amazonaws.com", None),  # the control plane, not inference
        ("evil-api.openai.com.example.net", None),
    ],
)
def test_hosts(address: str, expected: str | None) -> None:
    assert host_provider(address) == expected
    assert normalize_provider(None, address) == (expected or "unknown")


def test_declared_provider_beats_host_except_generic_openai() -> None:
    assert normalize_provider("anthropic", "api.openai.com") == "anthropic"
    assert normalize_provider("openai", "contoso.openai.azure.com") == "azure.ai.openai"
    assert normalize_provider("openai", "api.deepseek.com") == "deepseek"
    assert normalize_provider("openai", "127.0.0.1") == "openai"
    assert normalize_provider("somenewlab", "api.openai.com") == "openai"


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        (
            "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
            "aws.bedrock",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
        ("gemini/gemini-2.5-flash", "gcp.gemini", "gemini-2.5-flash"),
        ("models/gemini-2.5-flash", "gcp.gemini", "gemini-2.5-flash"),
        (
            "projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001",
            "gcp.vertex_ai",
            "gemini-2.0-flash-001",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "aws.bedrock",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        # kept: dates, Bedrock region and version, vendor parts of slash-named catalogs
        ("gpt-4o-2024-08-06", "openai", "gpt-4o-2024-08-06"),
        (
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "aws.bedrock",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        ("anthropic/claude-sonnet-4.5", "openrouter", "anthropic/claude-sonnet-4.5"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ("anthropic/claude-3-haiku", "openai", "anthropic/claude-3-haiku"),
        ("  gpt-4o ", "openai", "gpt-4o"),
    ],
)
def test_models(model: str, provider: str, expected: str) -> None:
    assert normalize_model(model, provider) == expected


# (span provider, span model, catalog model id genai-prices must resolve to)
PRICED = [
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
    ("openai", "openai/gpt-4o", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("az.ai.openai", "gpt-4o-mini", "gpt-4o-mini"),
    ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("vertex_ai", "publishers/google/models/gemini-2.0-flash-001", "gemini-2.0-flash"),
    (
        "aws.bedrock",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "regional.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (
        "aws.bedrock",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (
        "aws.bedrock",
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "regional.anthropic.claude-3-5-sonnet-20240620-v1:0",
    ),
    ("aws.bedrock", "us.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ("xai", "grok-3", "grok-3"),
    ("mistralai", "mistral-large-latest", "mistral-large"),
    ("groq", "llama-3.3-70b-versatile", "llama-3.3-70b-versatile"),
    ("deepseek", "deepseek-chat", "deepseek-chat"),
    ("openrouter", "anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4.5"),
]


@pytest.mark.parametrize(("declared", "model", "catalog_id"), PRICED)
def test_normalised_ids_resolve_in_genai_prices(declared: str, model: str, catalog_id: str) -> None:
    provider = normalize_provider(declared, None)
    price = calc_price(
        Usage(input_tokens=1000, output_tokens=100),
        normalize_model(model, provider),
        provider_id=pricing_provider_id(provider),
    )
    assert price.model.id == catalog_id
    assert price.total_price > 0
