"""The anthropic SDK's own spans (scope ``com.anthropic.sdk.python`` and its platform variants).

Measured with anthropic 2.14: GenAI names with ``input_tokens`` already including cache
reads and writes, ``cache_write.input_tokens``, ``reasoning.output_tokens`` (thinking
tokens), the 5-minute / 1-hour split of cache writes under
``anthropic.usage.cache_creation.ephemeral_{5m,1h}_input_tokens``, the served tier in
``anthropic.response.service_tier``, and for beta compaction the tokens of the compaction
iterations in ``anthropic.usage.compaction.{input,output}_tokens`` — which the SDK leaves
out of the usage totals although they are billed, so they are added to the totals here.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import genai
from .counts import Counts
from .tokens import first_count

SCOPE = "com.anthropic.sdk.python"

KEYS = genai.KEYS.extend(
    cache_write_5m=("anthropic.usage.cache_creation.ephemeral_5m_input_tokens",),
    cache_write_1h=("anthropic.usage.cache_creation.ephemeral_1h_input_tokens",),
)


def matches(scope_name: str) -> bool:
    return scope_name.startswith(SCOPE)


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    counts = genai.read_counts(attrs, keys)
    compaction_in = first_count(attrs, ("anthropic.usage.compaction.input_tokens",))
    compaction_out = first_count(attrs, ("anthropic.usage.compaction.output_tokens",))
    if compaction_in:
        counts.input = (counts.input or 0) + compaction_in
    if compaction_out:
        counts.output = (counts.output or 0) + compaction_out
    return counts
