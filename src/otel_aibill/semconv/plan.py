"""What to read from a span, decided once per attribute *key set* instead of once per span.

Everything extraction decides from which keys a span has (is it GenAI at all, aggregated usage,
which convention wrote it, which of the fallback names for each field are there) depends only on
the scope and the keys, and the spans of one instrumentation all carry the same keys in the same
order. So the decisions are cached under ``(scope, tuple(keys))``; per span only the values are
read, through the names known to be present. Reading an absent name finds nothing, so dropping
the absent names from a fallback list reads exactly what the full list reads.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from ..usage import MAX_TEXT_CHARS, is_unicode
from . import (
    anthropic_sdk,
    bedrock,
    genai,
    litellm,
    openinference,
    openlit,
    pydantic_ai,
    traceloop,
    vercel_ai,
)
from .counts import Counts
from .genai import TokenKeys

Reader = Callable[[Mapping[str, object], str, TokenKeys], Counts]
Strings = tuple[
    str | None, str | None, str | None, str | None, str | None, str | None, str | None, str | None
]
StringsReader = Callable[[Mapping[str, object]], Strings]

GENAI_PREFIXES = ("gen_ai.", "llm.", "openinference.", vercel_ai.MARKER)
AGGREGATED_PREFIX = "gen_ai.aggregated_usage."

RESPONSE_MODEL_KEYS = ("gen_ai.response.model", *openinference.RESPONSE_MODEL_KEYS, "ai.response.model")
REQUEST_MODEL_KEYS = ("gen_ai.request.model", *openinference.REQUEST_MODEL_KEYS, "ai.model.id")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", *openinference.PROVIDER_KEYS, vercel_ai.MARKER)
ADDRESS_KEYS = ("server.address", "gen_ai.openai.api_base", "url.full")
SERVED_TIER_KEYS = (
    "gen_ai.response.service_tier",
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "anthropic.response.service_tier",
)
REQUESTED_TIER_KEYS = (
    "gen_ai.request.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
    "anthropic.request.service_tier",
)
OPERATION_KEY = "gen_ai.operation.name"
OPERATION_KEYS = ("openinference.span.kind", "traceloop.span.kind", OPERATION_KEY, "llm.request.type")
"""Every attribute ``operations.operation_of`` reads."""
RESPONSE_ID_KEYS = ("gen_ai.response.id", "llm.response.id", "ai.response.id")
SERVER_ADDRESS_KEYS = ("server.address",)
# Scopes that name their provider when the span does not.
SCOPE_PROVIDERS = (
    (anthropic_sdk.SCOPE, "anthropic"),
    ("openinference.instrumentation.anthropic", "anthropic"),
    ("opentelemetry.instrumentation.anthropic", "anthropic"),
    ("openinference.instrumentation.openai", "openai"),
    ("opentelemetry.instrumentation.openai", "openai"),
)


@dataclass(slots=True, frozen=True)
class Plan:
    """The key-only decisions for one (scope, key set); see the module doc."""

    is_genai: bool
    aggregated_key: str | None
    convention: str = ""
    reader: Reader = genai.read
    token_keys: TokenKeys = genai.KEYS
    plain_counts: Callable[[Mapping[str, object]], Counts] | None = None
    """``token_keys.read`` when ``reader`` is just that (no provider-dependent adjustment), so
    extraction calls it directly instead of through the adapter; None otherwise."""
    operation_by_value: bool = False
    """Of the attributes ``operation_of`` reads, only ``gen_ai.operation.name`` is present, so for
    a non-blank text value the result depends on that value alone (and can be memoised by it)."""
    response_model: tuple[str, ...] = ()
    request_model: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()
    scope_provider: str | None = None
    address: tuple[str, ...] = ()
    served_tier: tuple[str, ...] = ()
    requested_tier: tuple[str, ...] = ()
    response_id: tuple[str, ...] = ()
    server_address: tuple[str, ...] = ()
    strings: StringsReader = lambda attrs: (None,) * 8
    """``first_str`` of each of the name lists above, from ``response_model`` to ``server_address``
    (None for an empty list), in one compiled call (see :func:`_compile_strings`)."""


# Adapters whose ``read`` is exactly ``genai.read_counts(attrs, keys)``.
_PLAIN_READERS = frozenset({genai.read, traceloop.read, openinference.read, pydantic_ai.read})


def _scan(keys: tuple[str, ...]) -> tuple[bool, str | None]:
    """(any GenAI/LLM key, first aggregated-usage key)."""
    genai_seen = False
    for key in keys:
        if key.startswith(GENAI_PREFIXES):
            if key.startswith(AGGREGATED_PREFIX):
                return True, key
            genai_seen = True
    return genai_seen, None


def _adapter(scope: str, attrs: Container[str]) -> tuple[str, Reader, TokenKeys]:
    if openinference.matches(attrs):
        return "openinference", openinference.read, openinference.KEYS
    if litellm.matches(scope, attrs):
        return "litellm", litellm.read, litellm.KEYS
    if anthropic_sdk.matches(scope):
        return "anthropic-sdk", anthropic_sdk.read, anthropic_sdk.KEYS
    if pydantic_ai.matches(scope):
        return "pydantic-ai", pydantic_ai.read, pydantic_ai.KEYS
    if openlit.matches(scope):
        return "openlit", openlit.read, openlit.KEYS
    if bedrock.matches(scope):
        return "botocore-bedrock", bedrock.read, bedrock.KEYS
    if vercel_ai.matches(attrs):
        return "vercel-ai", vercel_ai.read, vercel_ai.KEYS
    if traceloop.matches(scope, attrs):
        return "traceloop", traceloop.read, traceloop.KEYS
    return "genai", genai.read, genai.KEYS


def make_plan(scope: str, keys: tuple[str, ...]) -> Plan:
    is_genai, aggregated_key = _scan(keys)
    if not is_genai or aggregated_key is not None:
        return Plan(is_genai, aggregated_key)
    present = frozenset(keys)

    def have(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(k for k in names if k in present)

    convention, reader, token_keys = _adapter(scope, present)
    token_keys = token_keys.present(present)
    names = (
        have(RESPONSE_MODEL_KEYS),
        have(REQUEST_MODEL_KEYS),
        have(PROVIDER_KEYS),
        have(ADDRESS_KEYS),
        have(SERVED_TIER_KEYS),
        have(REQUESTED_TIER_KEYS),
        have(RESPONSE_ID_KEYS),
        have(SERVER_ADDRESS_KEYS),
    )
    return Plan(
        is_genai=True,
        aggregated_key=None,
        convention=convention,
        reader=reader,
        token_keys=token_keys,
        plain_counts=token_keys.read if reader in _PLAIN_READERS else None,
        operation_by_value=have(OPERATION_KEYS) == (OPERATION_KEY,),
        response_model=names[0],
        request_model=names[1],
        provider=names[2],
        scope_provider=next((name for prefix, name in SCOPE_PROVIDERS if scope.startswith(prefix)), None),
        address=names[3],
        served_tier=names[4],
        requested_tier=names[5],
        response_id=names[6],
        server_address=names[7],
        strings=_compile_strings(names),
    )


@lru_cache(maxsize=1024)  # many key sets share the same names: one function each
def _compile_strings(names: tuple[tuple[str, ...], ...]) -> StringsReader:
    """``tuple(first_str(attrs, keys) for keys in names)`` as straight-line code: the same names
    read in the same order with the same test (a ``str`` that strips to non-empty valid Unicode
    of at most ``MAX_TEXT_CHARS``), without a call per field."""
    lines = ["def strings(attrs):"]
    results = []
    for index, keys in enumerate(names):
        result = f"s{index}"
        results.append(result)
        lines.append(f"    {result} = None")
        for n, key in enumerate(keys):
            indent = "    " if n == 0 else "        "
            if n:
                lines.append(f"    if {result} is None:")
            lines += [  # the names are this package's constants, filtered, never span data
                f"{indent}v = attrs.get({key!r})",
                f"{indent}if isinstance(v, _str) and (v := v.strip()) and len(v) <= {MAX_TEXT_CHARS}"
                " and (v.isascii() or _is_unicode(v)):",
                f"{indent}    {result} = v",
            ]
    lines.append(f"    return ({', '.join(results)},)")
    namespace: dict[str, Any] = {"_str": str, "_is_unicode": is_unicode}
    exec(compile("\n".join(lines), "<plan strings>", "exec"), namespace)
    reader: StringsReader = namespace["strings"]
    return reader


K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V], Generic[K, V]):
    """A pure function's results by argument; emptied when full so memory stays bounded.

    ``keep(key)`` false: the result is computed but not kept (a key too large to hold)."""

    __slots__ = ("_fn", "_keep", "_limit")

    def __init__(
        self, fn: Callable[[K], V], limit: int = 4096, keep: Callable[[K], bool] | None = None
    ) -> None:
        super().__init__()
        self._fn = fn
        self._limit = limit
        self._keep = keep

    def __missing__(self, key: K) -> V:
        value = self._fn(key)
        if self._keep is not None and not self._keep(key):
            return value
        if len(self) >= self._limit:
            self.clear()
        self[key] = value
        return value


MAX_PLAN_KEY_CHARS = 8192
"""Plans are kept for key sets (scope name and attribute keys) of at most this many characters
in all, so the memo holds at most ``4096 * 8192`` characters of client text; a larger key set
is planned for its span alone."""


def _small_key(key: tuple[str, tuple[str, ...]]) -> bool:
    return len(key[0]) + sum(map(len, key[1])) <= MAX_PLAN_KEY_CHARS


plans: Memo[tuple[str, tuple[str, ...]], Plan] = Memo(lambda key: make_plan(*key), keep=_small_key)
"""(scope, attribute keys in order) → Plan."""
