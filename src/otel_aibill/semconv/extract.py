"""Span → canonical usage record, or the reason it bills nothing. Pure and total."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..usage import NotBillable, NotBillableReason, SpanView, UsageRecord
from . import anthropic_sdk, genai, openinference, openlit, pydantic_ai, traceloop
from .counts import Counts
from .models import model_prefix_provider, normalize_model
from .operations import operation_of
from .providers import UNKNOWN, normalize_provider
from .tokens import InvalidUsage, first_str

Reader = Callable[[Mapping[str, object], str], Counts]

_GENAI_PREFIXES = ("gen_ai.", "llm.", "openinference.")
_AGGREGATED_PREFIX = "gen_ai.aggregated_usage."

_RESPONSE_MODEL_KEYS = ("gen_ai.response.model", *openinference.RESPONSE_MODEL_KEYS)
_REQUEST_MODEL_KEYS = ("gen_ai.request.model", *openinference.REQUEST_MODEL_KEYS)
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", *openinference.PROVIDER_KEYS)
_ADDRESS_KEYS = ("server.address", "gen_ai.openai.api_base", "url.full")
_SERVED_TIER_KEYS = (
    "gen_ai.response.service_tier",
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "anthropic.response.service_tier",
)
_REQUESTED_TIER_KEYS = (
    "gen_ai.request.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
    "anthropic.request.service_tier",
)
_RESPONSE_ID_KEYS = ("gen_ai.response.id", "llm.response.id")
# Scopes that name their provider when the span does not.
_SCOPE_PROVIDERS = (
    (anthropic_sdk.SCOPE, "anthropic"),
    ("openinference.instrumentation.anthropic", "anthropic"),
    ("opentelemetry.instrumentation.anthropic", "anthropic"),
    ("openinference.instrumentation.openai", "openai"),
    ("opentelemetry.instrumentation.openai", "openai"),
)


def extract(span: SpanView, customer: str | None = None) -> UsageRecord | NotBillable:
    """The span's usage in the canonical accounting, or why it is not billable.

    ``customer``, when already known, goes straight into the record (copying a frozen record
    to add it later costs more than extracting it). Never raises: an unexpected failure on odd
    data is reported as INVALID_USAGE.
    """
    try:
        return _extract(span, customer)
    except Exception as exc:  # totality: the pipeline must never fail on one span
        return _not_billable(span, NotBillableReason.INVALID_USAGE, f"{type(exc).__name__}: {exc}")


def _not_billable(span: SpanView, reason: NotBillableReason, detail: str = "") -> NotBillable:
    return NotBillable(reason=reason, detail=detail, trace_id=span.trace_id, span_id=span.span_id)


def _scan(attrs: Mapping[str, object]) -> tuple[bool, str | None]:
    """One pass over the keys: (any GenAI/LLM key, first aggregated-usage key)."""
    genai_seen = False
    for key in attrs:
        if key.startswith(_GENAI_PREFIXES):
            if key.startswith(_AGGREGATED_PREFIX):
                return True, key
            genai_seen = True
    return genai_seen, None


def _extract(span: SpanView, customer: str | None) -> UsageRecord | NotBillable:
    attrs: Mapping[str, object] = span.attributes
    is_genai, aggregated_key = _scan(attrs)
    if not is_genai:
        return _not_billable(span, NotBillableReason.NOT_GENAI)
    if aggregated_key is not None:
        return _not_billable(span, NotBillableReason.AGGREGATED_USAGE, aggregated_key)

    operation, not_inference = operation_of(attrs, span.name)
    if not_inference:
        return _not_billable(span, NotBillableReason.NOT_INFERENCE, not_inference)

    scope = span.scope_name
    convention, reader = _adapter(scope, attrs)
    if convention == "pydantic-ai" and pydantic_ai.is_run_span(span.name, attrs):
        return _not_billable(span, NotBillableReason.AGGREGATED_USAGE, "pydantic-ai agent run span")

    response_model = first_str(attrs, _RESPONSE_MODEL_KEYS)
    request_model = first_str(attrs, _REQUEST_MODEL_KEYS)
    raw_model = response_model or request_model or ""
    provider = _provider(attrs, scope, raw_model)

    try:
        counts = reader(attrs, provider)
        if not counts.has_totals:
            return _not_billable(span, NotBillableReason.NO_USAGE, f"{convention}: no token counts")
        counts.validate()
    except InvalidUsage as exc:
        return _not_billable(span, NotBillableReason.INVALID_USAGE, str(exc))
    if not counts.input and not counts.output:
        return _not_billable(span, NotBillableReason.NO_USAGE, f"{convention}: token counts are zero")

    served_tier = first_str(attrs, _SERVED_TIER_KEYS) or first_str(attrs, _REQUESTED_TIER_KEYS)
    return UsageRecord(
        trace_id=span.trace_id,
        span_id=span.span_id,
        start_time_ns=span.start_time_ns,
        end_time_ns=span.end_time_ns,
        provider=provider,
        model=normalize_model(raw_model, provider) if raw_model else UNKNOWN,
        operation=operation or "unknown",
        input_tokens=counts.input or 0,
        output_tokens=counts.output or 0,
        cache_read_tokens=counts.cache_read,
        cache_write_tokens=counts.cache_write,
        cache_write_5m_tokens=counts.cache_write_5m,
        cache_write_1h_tokens=counts.cache_write_1h,
        reasoning_tokens=counts.reasoning,
        input_audio_tokens=counts.input_audio,
        output_audio_tokens=counts.output_audio,
        request_model=request_model,
        response_model=response_model,
        service_tier=served_tier.lower() if served_tier else None,
        response_id=first_str(attrs, _RESPONSE_ID_KEYS),
        server_address=first_str(attrs, ("server.address",)),
        scope_name=scope,
        convention=convention,
        customer=customer,
        parent_span_id=span.parent_span_id,
    )


def _adapter(scope: str, attrs: Mapping[str, object]) -> tuple[str, Reader]:
    if openinference.matches(attrs):
        return "openinference", openinference.read
    if anthropic_sdk.matches(scope):
        return "anthropic-sdk", anthropic_sdk.read
    if pydantic_ai.matches(scope):
        return "pydantic-ai", pydantic_ai.read
    if openlit.matches(scope):
        return "openlit", openlit.read
    if traceloop.matches(scope, attrs):
        return "traceloop", traceloop.read
    return "genai", genai.read


def _provider(attrs: Mapping[str, object], scope: str, model: str) -> str:
    declared = first_str(attrs, _PROVIDER_KEYS)
    if declared is None:
        declared = next((name for prefix, name in _SCOPE_PROVIDERS if scope.startswith(prefix)), None)
    provider = normalize_provider(declared, first_str(attrs, _ADDRESS_KEYS))
    if provider == UNKNOWN:
        provider = model_prefix_provider(model) or UNKNOWN
    return provider
