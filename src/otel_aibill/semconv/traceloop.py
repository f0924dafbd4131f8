"""OpenLLMetry (traceloop) instrumentations.

Measured with 0.62: the GenAI names plus non-standard ``gen_ai.usage.reasoning_tokens``,
``gen_ai.usage.total_tokens``, ``gen_ai.is_streaming``; its Anthropic spans report
``input_tokens`` INCLUDING cache reads and writes (it adds them itself since 2024), so no
correction is needed. Older releases used ``gen_ai.usage.prompt_tokens`` /
``completion_tokens``, ``gen_ai.usage.cache_*_input_tokens``, ``llm.usage.total_tokens``
and ``llm.request.type`` instead of ``gen_ai.operation.name`` — all read by the base keys
and the operation rules.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from . import genai
from .counts import Counts

# Scopes of the packages in the openllmetry repository. Its openai package is
# ".openai.v1"; upstream contrib's is ".openai_v2", which is plain GenAI.
_SCOPES = (
    "opentelemetry.instrumentation.openai.",
    "opentelemetry.instrumentation.anthropic",
    "opentelemetry.instrumentation.bedrock",
    "opentelemetry.instrumentation.cohere",
    "opentelemetry.instrumentation.mistralai",
    "opentelemetry.instrumentation.groq",
    "opentelemetry.instrumentation.together",
    "opentelemetry.instrumentation.ollama",
    "opentelemetry.instrumentation.google_generativeai",
    "opentelemetry.instrumentation.watsonx",
    "opentelemetry.instrumentation.replicate",
    "opentelemetry.instrumentation.sagemaker",
    "opentelemetry.instrumentation.alephalpha",
    "opentelemetry.instrumentation.writer",
)
# Attributes only OpenLLMetry sets.
_MARKERS = ("llm.request.type", "llm.usage.total_tokens", "gen_ai.is_streaming", "traceloop.span.kind")

KEYS = genai.KEYS


def matches(scope_name: str, attrs: Container[str]) -> bool:
    return scope_name.startswith(_SCOPES) or any(key in attrs for key in _MARKERS)


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    return genai.read_counts(attrs, keys)
