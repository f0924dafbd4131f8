"""Which genai-prices provider prices a span: from the OTel provider name, or the API host it called.

The OTel name → genai-prices id table belongs with the conventions: ``semconv.pricing_provider_id``
is asked first; the table here only adds spellings it does not (deprecated ``gen_ai.system`` values,
other instrumentations' names) and genai-prices' own ids. genai-prices' fuzzy provider matching is
deliberately not used for names: ``azure.ai.openai`` "contains openai" and would be priced as OpenAI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from genai_prices.types import Provider

from otel_aibill.semconv import pricing_provider_id as _semconv_pricing_provider_id

_OTEL_TO_GENAI_PRICES: dict[str, str | None] = {
    # current gen_ai.provider.name values
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "groq": "groq",
    "ibm.watsonx.ai": None,
    "mistral_ai": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
    # deprecated gen_ai.system values and common spellings of other instrumentations
    "xai": "x-ai",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "azure": "azure",
    "vertex_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "google": "google",
    "bedrock": "aws",
    "aws": "aws",
    "mistralai": "mistral",
    "mistral": "mistral",
    "together_ai": "together",
    "together-ai": "together",
    "fireworks_ai": "fireworks",
    "moonshot": "moonshotai",
}


def pricing_provider_id(provider: str, known_ids: Sequence[str] = ()) -> str | None:
    """The genai-prices provider id for an OTel provider name, or None when it has no prices."""
    name = provider.strip().lower()
    if found := _semconv_pricing_provider_id(name):
        return found
    if name in _OTEL_TO_GENAI_PRICES:
        return _OTEL_TO_GENAI_PRICES[name]
    return name if name in known_ids else None


def provider_for_host(server_address: str, providers: Sequence[Provider]) -> str | None:
    """The provider whose API lives at ``server_address``, if the catalog knows that host.

    OpenAI-compatible SDKs report ``openai`` whatever they call (Groq, DeepSeek, Azure, ...);
    the host says who actually served, and so who charges.
    """
    host = server_address.strip().lower()
    if not host:
        return None
    url = f"https://{host}"
    for provider in providers:
        if re.match(provider.api_pattern, url):
            return provider.id
    return None
