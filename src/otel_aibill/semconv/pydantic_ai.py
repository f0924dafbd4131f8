"""pydantic-ai (scope ``pydantic-ai``).

Model-request spans use the GenAI totals (input includes cache, as genai-prices'
usage extraction computes it) and put the parts under ``gen_ai.usage.details.*``.
Agent-run spans repeat the run's summed usage: under ``gen_ai.aggregated_usage.*`` by
default, but under the plain ``gen_ai.usage.*`` names when
``use_aggregated_usage_attribute_names=False`` or in older releases — so run spans are
recognised by their own attributes too. Its ``operation.cost`` is ignored: prices come
from our catalog.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import genai
from .counts import Counts

SCOPE = "pydantic-ai"

_DETAILS = "gen_ai.usage.details."
KEYS = genai.KEYS.extend(
    cache_read=(_DETAILS + "cache_read_tokens",),
    cache_write=(_DETAILS + "cache_write_tokens",),
    reasoning=(_DETAILS + "reasoning_tokens",),
    input_audio=(_DETAILS + "input_audio_tokens",),
    output_audio=(_DETAILS + "output_audio_tokens",),
)

# Attributes that only agent-run spans carry.
_RUN_SPAN_KEYS = ("pydantic_ai.all_messages", "all_messages_events", "agent_name", "final_result")


def matches(scope_name: str) -> bool:
    return scope_name == SCOPE


def is_run_span(name: str, attrs: Mapping[str, object]) -> bool:
    return name.startswith(("invoke_agent", "agent run")) or any(key in attrs for key in _RUN_SPAN_KEYS)


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    return genai.read_counts(attrs, keys)
