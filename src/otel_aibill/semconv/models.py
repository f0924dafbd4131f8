"""Model ids: the served id as the pricing catalog can match it.

genai-prices already matches date suffixes (``gpt-4o-2024-08-06``), Vertex ``@`` versions
and Bedrock ids with their region prefix and ``-v1:0`` suffix. The Bedrock region prefix is
kept on purpose: the catalog prices ``global.`` cross-region inference differently from
regional (``us.``, ``eu.``, ``apac.``, ``jp.``) endpoints. What it cannot match is removed:
a ``provider/`` prefix naming the provider itself, resource paths (Bedrock ARNs,
``models/…``, ``projects/…/models/…``) and surrounding whitespace.
"""

from __future__ import annotations

from .providers import provider_alias

# Providers whose own model ids contain a "vendor/" part that must be kept.
_SLASHED_IDS = frozenset({"openrouter", "together", "fireworks", "groq", "cerebras", "ollama"})


def model_prefix_provider(model: str) -> str | None:
    """The provider named by a ``provider/`` prefix of ``model``, if it names one."""
    head, sep, _ = model.partition("/")
    return provider_alias(head) if sep else None


def normalize_model(model: str, provider: str) -> str:
    """The served model id as the pricing catalog can match it (see module doc)."""
    name = model.strip()
    if name.startswith("arn:"):
        name = name.rsplit("/", 1)[-1]
    if "models/" in name and (
        provider.startswith("gcp.") or name.startswith(("models/", "projects/", "publishers/"))
    ):
        name = name.rsplit("models/", 1)[-1]
    if "/" in name and provider not in _SLASHED_IDS and model_prefix_provider(name) == provider:
        name = name.partition("/")[2]
    return name or model
