"""LiteLLM's OpenTelemetry callback (``litellm.callbacks = ["otel"]``, the SDK and the proxy).

Measured with litellm 1.110: one ``litellm_request`` span per call (scope ``litellm``) with
``gen_ai.usage.input_tokens`` as the whole prompt (OpenAI: cached tokens included; Anthropic:
uncached + cache read + cache write summed, which is the GenAI total) and the output, but the
breakdown only inside ``metadata.usage_object``: the usage as a Python literal (``str(dict)``),
e.g. ``{'prompt_tokens': 1213, 'prompt_tokens_details': {'cached_tokens': 0,
'cache_write_tokens': 1208, 'cache_creation_token_details': {'ephemeral_5m_input_tokens': 1208,
...}}, 'completion_tokens_details': {'reasoning_tokens': 0}, ...}``.

When the app has a span open, LiteLLM writes those attributes onto the app's span instead of a
``litellm_request`` span of its own (unless ``USE_OTEL_LITELLM_REQUEST_SPAN`` is set) — for a
synchronous call after that span may have ended, when they are lost. Its child
``raw_gen_ai_request`` (scope ``litellm``) is always made, with the provider's raw response:
``llm.openai.usage`` / ``llm.anthropic.usage``, again a Python literal. So that child is read as
a usage span too (:func:`read_raw`, OpenAI and Anthropic shapes; other providers' raw spans are
not billed), without a response id (LiteLLM's parent span carries its own, not the provider's):
where the parent also carries the usage, the two are parent and child with the same totals, one
call for the same-call rule, billed once with the best of both.

The literal is parsed with ``ast.literal_eval`` (never ``eval``) after a size cap and a nesting
cap, so a hostile value costs a bounded amount of work. A usage object that cannot be used (not
a literal, too large, too deep, counts that are negative, not integers or do not fit the totals)
is ignored, counted in :data:`IGNORED` by reason and logged: the span is billed from its plain
attributes. LiteLLM's own cost (``gen_ai.cost.total_cost``) is kept as the reported cost (see
``reported_cost.py``).
"""

from __future__ import annotations

import ast
import logging
from collections import Counter
from collections.abc import Container, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from . import genai
from .counts import Counts
from .providers import provider_alias
from .tokens import MAX_TOKENS, InvalidUsage

log = logging.getLogger(__name__)

SCOPE = "litellm"
USAGE_OBJECT = "metadata.usage_object"
REPORTED_COST = "gen_ai.cost.total_cost"
PROVIDER_MODEL = "litellm.provider.model"
RAW_SPAN = "raw_gen_ai_request"
MAX_LITERAL_CHARS = 8192
MAX_DEPTH = 8

KEYS = genai.KEYS

IGNORED: Counter[str] = Counter()
"""``metadata.usage_object`` values ignored, by reason (the spans were billed from their plain
attributes)."""
_LOG_FIRST = 10  # per reason, then every 1000th, so a bad producer cannot flood the log


class BadUsageObject(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def matches(scope_name: str, attrs: Container[str]) -> bool:
    return scope_name == SCOPE or "litellm.call_id" in attrs or PROVIDER_MODEL in attrs


def is_raw_span(name: str) -> bool:
    return name == RAW_SPAN


def provider_of(attrs: Mapping[str, object]) -> str | None:
    """The provider named by ``litellm.provider.model`` (``openai/gpt-4o-mini``), if known."""
    value = attrs.get(PROVIDER_MODEL)
    if not isinstance(value, str) or "/" not in value:
        return None
    return provider_alias(value.partition("/")[0])


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    counts = genai.read_counts(attrs, keys)
    text = attrs.get(USAGE_OBJECT)
    if text is None:
        return counts
    try:
        return with_usage_object(counts, parse_literal(text))
    except BadUsageObject as exc:
        _ignored(exc)
        return counts


def parse_literal(text: object) -> dict[object, object]:
    """The dict written as a Python literal in ``text``, within the caps; raises BadUsageObject."""
    if not isinstance(text, str):
        raise BadUsageObject("not_text", type(text).__name__)
    if len(text) > MAX_LITERAL_CHARS:
        raise BadUsageObject("too_large", f"{len(text)} characters > {MAX_LITERAL_CHARS}")
    depth = deepest = 0
    for char in text:  # brackets inside strings count too: a cap, not a parser
        if char in "{[(":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif char in "}])":
            depth -= 1
    if deepest > MAX_DEPTH:
        raise BadUsageObject("too_deep", f"nesting {deepest} > {MAX_DEPTH}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise BadUsageObject("not_a_literal", f"{type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise BadUsageObject("not_a_dict", type(value).__name__)
    return value


def _count(usage: Mapping[object, object], *path: str) -> int:
    """The count at ``path`` in the usage object; 0 when absent or None."""
    value: object = usage
    for key in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(key)
    if value is None:
        return 0
    if type(value) is not int:
        raise BadUsageObject("invalid_count", f"{'.'.join(path)}: {type(value).__name__} {str(value)[:40]}")
    if not 0 <= value <= MAX_TOKENS:
        raise BadUsageObject("invalid_count", f"{'.'.join(path)}: {value}")
    return value


def with_usage_object(counts: Counts, usage: Mapping[object, object]) -> Counts:
    """The plain counts with the breakdown of LiteLLM's usage object; the totals of the plain
    attributes win, the usage object's are the fallback."""
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    details = ("prompt_tokens_details",)
    split = (*details, "cache_creation_token_details")
    merged = Counts(
        input=counts.input if counts.input is not None else prompt,
        output=counts.output if counts.output is not None else completion,
        cache_read=_count(usage, *details, "cached_tokens") or _count(usage, "cache_read_input_tokens"),
        cache_write=_count(usage, *details, "cache_write_tokens")
        or _count(usage, "cache_creation_input_tokens"),
        cache_write_5m=_count(usage, *split, "ephemeral_5m_input_tokens"),
        cache_write_1h=_count(usage, *split, "ephemeral_1h_input_tokens"),
        reasoning=_count(usage, "completion_tokens_details", "reasoning_tokens"),
        input_audio=_count(usage, *details, "audio_tokens"),
        output_audio=_count(usage, "completion_tokens_details", "audio_tokens"),
    )
    try:
        merged.validate()
    except InvalidUsage as exc:
        raise BadUsageObject("inconsistent", str(exc)) from None
    return merged


def reported_cost(attrs: Mapping[str, object]) -> Decimal | None:
    """LiteLLM's own cost of the call, from the decimal text of the float it recorded."""
    value = attrs.get(REPORTED_COST)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        cost = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


# (attribute prefix, provider) of the raw responses read, with the object type of a model call
_RAW = (("llm.openai.", "openai", "chat.completion"), ("llm.anthropic.", "anthropic", "message"))


@dataclass(slots=True, frozen=True)
class Raw:
    """A ``raw_gen_ai_request`` span's call: the provider's own usage, in the canonical counts."""

    provider: str
    model: str | None
    counts: Counts
    service_tier: str | None


def read_raw(attrs: Mapping[str, object]) -> Raw | None:
    """The call in a ``raw_gen_ai_request`` span, None when it has no usage this reads; raises
    :class:`BadUsageObject` for a usage that cannot be used (the caller holds it as invalid)."""
    for prefix, provider, call_object in _RAW:
        text = attrs.get(prefix + "usage")
        if text is None:
            continue
        kind = attrs.get(prefix + ("object" if provider == "openai" else "type"))
        if kind is not None and kind != call_object:
            return None  # not a chat call (an embedding, a batch...): not read here
        usage = parse_literal(text)
        if provider == "openai":
            counts = Counts(
                input=_count(usage, "prompt_tokens"),
                output=_count(usage, "completion_tokens"),
                cache_read=_count(usage, "prompt_tokens_details", "cached_tokens"),
                reasoning=_count(usage, "completion_tokens_details", "reasoning_tokens"),
                input_audio=_count(usage, "prompt_tokens_details", "audio_tokens"),
                output_audio=_count(usage, "completion_tokens_details", "audio_tokens"),
            )
        else:  # Anthropic's input_tokens excludes the cache reads and writes
            read, write = (
                _count(usage, "cache_read_input_tokens"),
                _count(usage, "cache_creation_input_tokens"),
            )
            counts = Counts(
                input=_count(usage, "input_tokens") + read + write,
                output=_count(usage, "output_tokens"),
                cache_read=read,
                cache_write=write,
                cache_write_5m=_count(usage, "cache_creation", "ephemeral_5m_input_tokens"),
                cache_write_1h=_count(usage, "cache_creation", "ephemeral_1h_input_tokens"),
            )
        try:
            counts.validate()
        except InvalidUsage as exc:
            raise BadUsageObject("inconsistent", str(exc)) from None
        model = attrs.get(prefix + "model")
        tier = usage.get("service_tier") if provider == "anthropic" else attrs.get(prefix + "service_tier")
        return Raw(
            provider,
            model if isinstance(model, str) and model.strip() else None,
            counts,
            tier.lower() if isinstance(tier, str) and tier.strip() else None,
        )
    return None


def ignored(exc: BadUsageObject) -> None:
    """Count and log a usage object that was not used."""
    _ignored(exc)


def _ignored(exc: BadUsageObject) -> None:
    IGNORED[exc.reason] += 1
    seen = IGNORED[exc.reason]
    if seen <= _LOG_FIRST or seen % 1000 == 0:
        log.warning(
            "otel-aibill: LiteLLM %s ignored (%s, %d so far); billed from the span's plain attributes",
            USAGE_OBJECT,
            exc,
            seen,
        )
