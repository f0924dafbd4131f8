"""OpenInference (Arize) spans: ``llm.*`` attributes and ``openinference.span.kind``.

Measured with openinference-instrumentation-openai 0.1.66 / -anthropic 3.1: the prompt
count includes cache reads and writes (Anthropic's cache counts are added since 2025),
the served model is ``llm.model_name`` (``embedding.model_name`` for embeddings), and the
provider is ``llm.provider`` when known, else ``llm.system``. No response id is recorded.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from . import genai
from .counts import Counts

_PROMPT = "llm.token_count.prompt_details."
_COMPLETION = "llm.token_count.completion_details."

KEYS = genai.TokenKeys(
    input=("llm.token_count.prompt",),
    output=("llm.token_count.completion",),
    cache_read=(_PROMPT + "cache_read", _PROMPT + "cache_input"),
    cache_write=(_PROMPT + "cache_write",),
    reasoning=(_COMPLETION + "reasoning",),
    input_audio=(_PROMPT + "audio",),
    output_audio=(_COMPLETION + "audio",),
)

RESPONSE_MODEL_KEYS = ("llm.response.model_name", "llm.model_name", "embedding.model_name")
REQUEST_MODEL_KEYS = ("llm.request.model_name",)
PROVIDER_KEYS = ("llm.provider", "llm.system")


def matches(attrs: Container[str]) -> bool:
    return "openinference.span.kind" in attrs or "llm.token_count.prompt" in attrs


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    return genai.read_counts(attrs, keys)
