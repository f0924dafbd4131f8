"""Which genai-prices provider prices a span: from the OTel provider name, or the API host it called.

This is the one OTel provider name → genai-prices id table. Its keys are the names
:func:`otel_aibill.semconv.normalize_provider` yields; any other spelling (deprecated
``gen_ai.system`` values, other instrumentations' names) is first turned into one by the
conventions' alias table. genai-prices' fuzzy provider matching is deliberately not used for names:
``azure.ai.openai`` "contains openai" and would be priced as OpenAI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from genai_prices.types import Provider

from otel_aibill.semconv.providers import provider_alias

GENAI_PRICES_IDS: dict[str, str | None] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "x_ai": "x-ai",
    "mistral_ai": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "together": "together",
    "openrouter": "openrouter",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
    "moonshot": "moonshotai",
    # known providers genai-prices has no prices for: unpriced unless an override prices them
    "ibm.watsonx.ai": None,
    "ollama": None,
}
"""OTel provider name → genai-prices provider id (None: genai-prices does not price it)."""


def pricing_provider_id(provider: str, known_ids: Sequence[str] = ()) -> str | None:
    """The genai-prices provider id for a provider name in any spelling, or None when it has no prices.

    A name that is no OTel provider name but one of ``known_ids`` (genai-prices' own ids, such as
    ``huggingface_groq``) is its own id.
    """
    name = provider.strip().lower()
    otel_name = provider_alias(name) or name
    if otel_name in GENAI_PRICES_IDS:
        return GENAI_PRICES_IDS[otel_name]
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
