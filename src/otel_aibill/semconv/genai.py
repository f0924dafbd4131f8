"""The OTel GenAI convention, current and deprecated names: the base every adapter extends.

Also accepts the underscore spellings of the cache counts
(``gen_ai.usage.cache_read_input_tokens``) and ``gen_ai.usage.reasoning_tokens`` that
OpenLLMetry, OpenLIT and others emitted before the convention named them: every known
emitter of those names counts them as parts of the input/output totals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .counts import Counts
from .tokens import first_count


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """For each canonical count, the attribute names that carry it, most preferred first."""

    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    cache_read: tuple[str, ...] = ()
    cache_write: tuple[str, ...] = ()
    cache_write_5m: tuple[str, ...] = ()
    cache_write_1h: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    input_audio: tuple[str, ...] = ()
    output_audio: tuple[str, ...] = ()

    def extend(self, **more: tuple[str, ...]) -> TokenKeys:
        """These keys with ``more`` names appended (as fallbacks) per field."""
        return replace(self, **{field: getattr(self, field) + names for field, names in more.items()})


KEYS = TokenKeys(
    input=("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    output=("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    cache_read=("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"),
    cache_write=(
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    reasoning=("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens"),
)


def read_counts(attrs: Mapping[str, object], keys: TokenKeys) -> Counts:
    """The counts under ``keys``; raises InvalidUsage for a present but unusable value."""
    return Counts(
        input=first_count(attrs, keys.input),
        output=first_count(attrs, keys.output),
        cache_read=first_count(attrs, keys.cache_read) or 0,
        cache_write=first_count(attrs, keys.cache_write) or 0,
        cache_write_5m=first_count(attrs, keys.cache_write_5m) or 0,
        cache_write_1h=first_count(attrs, keys.cache_write_1h) or 0,
        reasoning=first_count(attrs, keys.reasoning) or 0,
        input_audio=first_count(attrs, keys.input_audio) or 0,
        output_audio=first_count(attrs, keys.output_audio) or 0,
    )


def read(attrs: Mapping[str, object], provider: str) -> Counts:
    return read_counts(attrs, KEYS)
