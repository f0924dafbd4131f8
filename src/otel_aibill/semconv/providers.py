"""Provider names: every spelling seen in spans → the OTel GenAI provider name.

Deprecated ``gen_ai.system`` values, OpenInference ``llm.provider`` / ``llm.system`` values
and ad-hoc spellings all map to one name, so usage from two instrumentations of the same
provider lands in the same bucket. Which genai-prices provider prices each name is
:data:`otel_aibill.pricing.providers.GENAI_PRICES_IDS`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

UNKNOWN = "unknown"

_ALIASES: dict[str, str] = {
    # current OTel names map to themselves
    **{
        name: name
        for name in (
            "openai",
            "anthropic",
            "aws.bedrock",
            "azure.ai.openai",
            "azure.ai.inference",
            "gcp.gemini",
            "gcp.vertex_ai",
            "gcp.gen_ai",
            "mistral_ai",
            "groq",
            "deepseek",
            "x_ai",
            "cohere",
            "perplexity",
            "ibm.watsonx.ai",
        )
    },
    # deprecated gen_ai.system values
    "xai": "x_ai",
    "az.ai.inference": "azure.ai.inference",
    "az.ai.openai": "azure.ai.openai",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    # OpenInference llm.provider / llm.system values
    "mistralai": "mistral_ai",
    "google": "gcp.gen_ai",
    "vertexai": "gcp.vertex_ai",
    "azure": "azure.ai.openai",
    "aws": "aws.bedrock",
    "moonshot": "moonshot",
    # spellings seen in other instrumentations and model-id prefixes
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "azure_openai": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "google_genai": "gcp.gen_ai",
    "google-genai": "gcp.gen_ai",
    "google_vertexai": "gcp.vertex_ai",
    "vertex-ai": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "x-ai": "x_ai",
    "grok": "x_ai",
    "together_ai": "together",
    "togetherai": "together",
    "together": "together",
    "together-ai": "together",
    "fireworks_ai": "fireworks",
    "fireworks-ai": "fireworks",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
    "ollama": "ollama",
    "watsonx": "ibm.watsonx.ai",
    "moonshotai": "moonshot",
    # Vercel AI SDK provider ids ("openai.chat", "google.vertex.chat"... are matched by prefix)
    "google.generative-ai": "gcp.gemini",
    "google.vertex": "gcp.vertex_ai",
    "amazon-bedrock": "aws.bedrock",
}

_EXACT_HOSTS: dict[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "aiplatform.googleapis.com": "gcp.vertex_ai",
    "api.mistral.ai": "mistral_ai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "x_ai",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "openrouter.ai": "openrouter",
    "api.cohere.com": "cohere",
    "api.cohere.ai": "cohere",
    "api.perplexity.ai": "perplexity",
    "api.fireworks.ai": "fireworks",
    "api.cerebras.ai": "cerebras",
    "api.moonshot.ai": "moonshot",
    "api.moonshot.cn": "moonshot",
}

# (suffix, provider) checked in order; the first match wins.
_HOST_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
    (".models.ai.azure.com", "azure.ai.inference"),
    ("-aiplatform.googleapis.com", "gcp.vertex_ai"),
)

KNOWN_PROVIDERS: frozenset[str] = frozenset(
    [*_ALIASES.values(), *_EXACT_HOSTS.values(), *(p for _, p in _HOST_SUFFIXES), "aws.bedrock"]
)
"""Every provider name :func:`normalize_provider` can yield for a spelling or host it knows."""


def provider_alias(name: str | None) -> str | None:
    """The OTel provider name for a spelling, None when the spelling is not known.

    A dotted spelling that is not known whole is looked up without its last parts, so the
    Vercel AI SDK's ``openai.chat`` or ``anthropic.messages`` name their provider."""
    if not name:
        return None
    key = name.strip().lower()
    alias = _ALIASES.get(key)
    while alias is None and "." in key:  # "openai.chat", "google.vertex.chat": the provider's part
        key = key.rpartition(".")[0]
        alias = _ALIASES.get(key)
    return alias


def host_provider(server_address: str | None) -> str | None:
    """The provider that serves ``server_address`` (a host name or a URL), if known."""
    if not server_address:
        return None
    host = server_address.strip().lower()
    if "/" in host:
        host = urlsplit(host if "//" in host else "//" + host).hostname or ""
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if not host:
        return None
    exact = _EXACT_HOSTS.get(host)
    if exact is not None:
        return exact
    if host.startswith("bedrock-runtime") and host.endswith(".amazonaws.com"):
        return "aws.bedrock"
    for suffix, provider in _HOST_SUFFIXES:
        if host.endswith(suffix):
            return provider
    return None


def normalize_provider(name: str | None, server_address: str | None) -> str:
    """The OTel GenAI provider name for a declared name and the host that was called.

    The declared name wins, except that a generic ``openai`` (what OpenAI-SDK
    instrumentations say for every OpenAI-compatible endpoint) yields to a known host
    such as Azure, Groq or DeepSeek. Unknown names are kept lowercased; with neither a
    name nor a known host the result is ``"unknown"``.
    """
    declared = provider_alias(name)
    host = host_provider(server_address)
    if declared is None:
        if host is not None:
            return host
        cleaned = name.strip().lower() if name else ""
        return cleaned or UNKNOWN
    if declared == "openai" and host is not None:
        return host
    return declared
