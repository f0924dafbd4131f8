"""The OTel GenAI convention, current and deprecated names: the base every adapter extends.

Also accepts the underscore spellings of the cache counts
(``gen_ai.usage.cache_read_input_tokens``) and ``gen_ai.usage.reasoning_tokens`` that
OpenLLMetry, OpenLIT and others emitted before the convention named them: every known
emitter of those names counts them as parts of the input/output totals.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field, replace

from .counts import Counts
from .tokens import token_value

COUNT_FIELDS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
    "input_audio",
    "output_audio",
)
"""``Counts`` fields, in the order they are read (the first unusable value is the one reported)."""


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
    items: tuple[tuple[str, tuple[str, ...]], ...] = field(init=False, repr=False, compare=False)
    """(count, names) for the counts that have names, in field order: what ``read_counts`` walks."""

    def __post_init__(self) -> None:
        items = tuple((name, names) for name in COUNT_FIELDS if (names := getattr(self, name)))
        object.__setattr__(self, "items", items)

    def extend(self, **more: tuple[str, ...]) -> TokenKeys:
        """These keys with ``more`` names appended (as fallbacks) per field."""
        return replace(self, **{name: getattr(self, name) + names for name, names in more.items()})

    def present(self, keys: Container[str]) -> TokenKeys:
        """Only the names in ``keys``, in the same order: reading an absent name finds nothing,
        so for spans with those keys the result reads the same counts with fewer lookups."""
        return TokenKeys(
            **{name: tuple(k for k in getattr(self, name) if k in keys) for name in COUNT_FIELDS}
        )


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
    """The counts under ``keys``; raises InvalidUsage for a present but unusable value.

    For each count the first name present counts; a count nobody reported keeps the ``Counts``
    default (None for the two totals, 0 for the parts).
    """
    counts = Counts()
    for name, names in keys.items:
        for key in names:
            value = attrs.get(key)
            if value is not None:
                setattr(counts, name, token_value(key, value))
                break
    return counts


def read(attrs: Mapping[str, object], provider: str, keys: TokenKeys = KEYS) -> Counts:
    return read_counts(attrs, keys)
