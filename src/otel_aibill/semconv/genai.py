"""The OTel GenAI convention, current and deprecated names: the base every adapter extends.

Also accepts the underscore spellings of the cache counts
(``gen_ai.usage.cache_read_input_tokens``) and ``gen_ai.usage.reasoning_tokens`` that
OpenLLMetry, OpenLIT and others emitted before the convention named them: every known
emitter of those names counts them as parts of the input/output totals.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any

from .counts import Counts
from .tokens import MAX_TOKENS, token_value

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
if tuple(f.name for f in fields(Counts)) != COUNT_FIELDS:  # the compiled readers build it positionally
    raise ImportError("Counts fields changed: update COUNT_FIELDS")


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
    """(count, names) for the counts that have names, in field order."""
    read: Callable[[Mapping[str, object]], Counts] = field(init=False, repr=False, compare=False)
    """``read_counts`` for these keys, compiled (see :func:`_compile_reader`)."""

    def __post_init__(self) -> None:
        items = tuple((name, names) for name in COUNT_FIELDS if (names := getattr(self, name)))
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "read", _compile_reader(items))

    def extend(self, **more: tuple[str, ...]) -> TokenKeys:
        """These keys with ``more`` names appended (as fallbacks) per field."""
        return replace(self, **{name: getattr(self, name) + names for name, names in more.items()})

    def present(self, keys: Container[str]) -> TokenKeys:
        """Only the names in ``keys``, in the same order: reading an absent name finds nothing,
        so for spans with those keys the result reads the same counts with fewer lookups."""
        return TokenKeys(
            **{name: tuple(k for k in getattr(self, name) if k in keys) for name in COUNT_FIELDS}
        )


@lru_cache(maxsize=1024)  # many key sets share the same names: one function each
def _compile_reader(
    items: tuple[tuple[str, tuple[str, ...]], ...],
) -> Callable[[Mapping[str, object]], Counts]:
    """``read_counts`` for one set of names as straight-line code: one ``get`` per name, in the
    same order as the loop it replaces, and a plain in-range ``int`` taken as it is (what
    :func:`token_value` returns for it); any other value goes through ``token_value``, which
    converts it or raises the same ``InvalidUsage``."""
    lines = ["def read(attrs):"]
    defaults = Counts()
    named = dict(items)
    for count, names in items:
        lines.append(f"    {count} = {getattr(defaults, count)!r}")
        indent = "    "
        for key in names:
            k = repr(key)  # the names are this package's constants, filtered, never span data
            lines += [
                f"{indent}v = attrs.get({k})",
                f"{indent}if v is not None:",
                f"{indent}    {count} = v if v.__class__ is _int and 0 <= v <= _MAX else _value({k}, v)",
                f"{indent}else:",
            ]
            indent += "    "
        lines.append(f"{indent}pass")
    values = (count if count in named else repr(getattr(defaults, count)) for count in COUNT_FIELDS)
    lines.append(f"    return _Counts({', '.join(values)})")
    namespace: dict[str, Any] = {
        "_int": int,
        "_MAX": MAX_TOKENS,
        "_value": token_value,
        "_Counts": Counts,
    }
    exec(compile("\n".join(lines), "<token reader>", "exec"), namespace)
    reader: Callable[[Mapping[str, object]], Counts] = namespace["read"]
    return reader


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
    return keys.read(attrs)


def read(attrs: Mapping[str, object], provider: str, keys: TokenKeys = KEYS) -> Counts:
    return read_counts(attrs, keys)
