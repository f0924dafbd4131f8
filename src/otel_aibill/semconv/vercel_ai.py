"""Vercel AI SDK (npm ``ai``) telemetry: ``ai.*`` attributes, marked by ``ai.model.provider``.

Read from the package source (``packages/ai`` of vercel/ai, AI SDK 4 to 6):

- ``ai.generateText``, ``ai.streamText``, ``ai.generateObject``, ``ai.streamObject``, ``ai.embed``
  and ``ai.embedMany`` wrap the whole call and carry the SUM of their steps' usage; each step is a
  child ``….doGenerate`` / ``….doStream`` / ``….doEmbed`` span with its own usage. Only the
  children are billed.
- Step spans carry ``gen_ai.system`` = ``ai.model.provider`` (``openai.chat``,
  ``anthropic.messages``, ``google.generative-ai``, ``amazon-bedrock``…), ``gen_ai.request.model``
  and ``gen_ai.response.model``, and the usage under both ``gen_ai.usage.*`` and ``ai.usage.*``:
  4 wrote ``prompt_tokens`` / ``promptTokens``; 5 ``input_tokens`` / ``inputTokens`` plus
  ``ai.usage.cachedInputTokens`` and ``ai.usage.reasoningTokens``; 6 adds
  ``ai.usage.inputTokenDetails.*`` / ``ai.usage.outputTokenDetails.*``. Embedding steps only
  have ``ai.usage.tokens``.
- 6 defines input as the whole prompt (no-cache + cache read + cache write) and output as text
  + reasoning. Before 6 the totals were whatever each provider package reported: Anthropic and
  Bedrock gave the UNCACHED input (cache reads in ``ai.usage.cachedInputTokens``, Anthropic's
  cache writes only in ``ai.response.providerMetadata``) and Google gave output WITHOUT thinking
  tokens; those are corrected here. AI SDK 4's Anthropic cache counts are not in any attribute.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping

from . import genai
from .counts import Counts
from .tokens import token_value

MARKER = "ai.model.provider"
_IN = "ai.usage.inputTokenDetails."
_OUT = "ai.usage.outputTokenDetails."

KEYS = genai.KEYS.extend(
    input=("ai.usage.inputTokens", "ai.usage.promptTokens", "ai.usage.tokens"),
    output=("ai.usage.outputTokens", "ai.usage.completionTokens"),
    cache_read=(_IN + "cacheReadTokens", "ai.usage.cachedInputTokens"),
    cache_write=(_IN + "cacheWriteTokens",),
    reasoning=(_OUT + "reasoningTokens", "ai.usage.reasoningTokens"),
)

# Keys that only AI SDK 6 writes: their presence means the totals are already canonical.
_V6_KEYS = (_IN + "noCacheTokens", _IN + "cacheReadTokens", _IN + "cacheWriteTokens", _OUT + "textTokens")
_UNCACHED_INPUT_PROVIDERS = frozenset({"anthropic", "aws.bedrock"})


def matches(attrs: Container[str]) -> bool:
    return MARKER in attrs


def is_step_span(name: str, attrs: Mapping[str, object]) -> bool:
    """Whether the span is one model call (``ai.x.doGenerate``), not the call that wraps them."""
    operation = attrs.get("ai.operationId")
    return ".do" in (operation if isinstance(operation, str) else name)


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    counts = genai.read_counts(attrs, keys)
    if any(key in attrs for key in _V6_KEYS):
        return counts
    if provider in _UNCACHED_INPUT_PROVIDERS and counts.input is not None:
        counts.cache_write = _anthropic_cache_write(attrs) if provider == "anthropic" else 0
        counts.input += counts.cache_read + counts.cache_write
    elif provider.startswith("gcp.") and counts.output is not None:
        counts.output += counts.reasoning
    return counts


def _anthropic_cache_write(attrs: Mapping[str, object]) -> int:
    raw = attrs.get("ai.response.providerMetadata")
    if not isinstance(raw, str) or "cacheCreationInputTokens" not in raw:
        return 0
    try:
        value = json.loads(raw)["anthropic"]["cacheCreationInputTokens"]
    except (ValueError, KeyError, TypeError):
        return 0
    return 0 if value is None else token_value("ai.response.providerMetadata", value)
