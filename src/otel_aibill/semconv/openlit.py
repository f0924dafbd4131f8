"""OpenLIT (scopes ``openlit...``).

GenAI names, but its Anthropic spans report Anthropic's own ``input_tokens``, which
EXCLUDES cache reads and writes (against the convention): the cache counts are added to
make the total. It also estimates tokens for streams without usage, with no marker;
those estimates cannot be told apart and are billed as reported.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import genai
from .counts import Counts


def matches(scope_name: str) -> bool:
    return scope_name.startswith("openlit")


KEYS = genai.KEYS


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    counts = genai.read_counts(attrs, keys)
    if provider == "anthropic" and counts.input is not None:
        counts.input += counts.cache_read + counts.cache_write
    return counts
