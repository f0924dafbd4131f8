"""Span → canonical usage record, or the reason it bills nothing. Pure and total.

The decisions that depend only on which attribute keys a span has are made once per key set
(:mod:`.plan`); provider and model normalisation are memoised by their inputs. Per span, only
the values of the attributes known to be present are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..records import slot_constructor
from ..usage import MAX_TEXT_CHARS, TOKEN_FIELDS, NotBillable, NotBillableReason, SpanView, UsageRecord
from . import litellm, pydantic_ai, vercel_ai
from .models import model_prefix_provider, normalize_model
from .operations import operation_of
from .plan import OPERATION_KEY, Memo, plans
from .providers import UNKNOWN, normalize_provider
from .tokens import InvalidUsage

_RECORD_FIELDS = (
    "trace_id",
    "span_id",
    "start_time_ns",
    "end_time_ns",
    "provider",
    "model",
    "operation",
    *TOKEN_FIELDS,
    "request_model",
    "response_model",
    "service_tier",
    "response_id",
    "server_address",
    "scope_name",
    "convention",
    "customer",
    "parent_span_id",
    "reported_cost",
)
if tuple(f.name for f in fields(UsageRecord)) != _RECORD_FIELDS:  # the record is built positionally
    raise ImportError("UsageRecord fields changed: update _RECORD_FIELDS and the call in _extract")
_usage_record = slot_constructor(UsageRecord)
_new_not_billable = slot_constructor(NotBillable)  # most spans a receiver sees are not GenAI
_providers: Memo[tuple[str | None, str | None], str] = Memo(lambda key: normalize_provider(*key))
_models: Memo[tuple[str, str], str] = Memo(lambda key: normalize_model(*key))
_operations: dict[str, tuple[str | None, str]] = {}  # operation value -> operation_of's result
_OPERATIONS_LIMIT = 4096  # values come from clients: emptied when full, like the other memos
_NOT_GENAI = NotBillableReason.NOT_GENAI
_AGGREGATED = NotBillableReason.AGGREGATED_USAGE


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
    return _new_not_billable(reason, detail, span.trace_id, span.span_id)


def _litellm_raw(span: SpanView, customer: str | None) -> UsageRecord | NotBillable:
    """A LiteLLM ``raw_gen_ai_request`` span: the provider's raw response (see ``litellm.py``)."""
    try:
        raw = litellm.read_raw(span.attributes)
    except litellm.BadUsageObject as exc:
        litellm.ignored(exc)
        return _not_billable(span, NotBillableReason.INVALID_USAGE, f"litellm raw usage: {exc}")
    if raw is None:
        return _not_billable(
            span, NotBillableReason.NOT_INFERENCE, "litellm raw_gen_ai_request without a usage"
        )
    counts = raw.counts
    if not counts.input and not counts.output:
        return _not_billable(span, NotBillableReason.NO_USAGE, "litellm: token counts are zero")
    model = _models[raw.model, raw.provider] if raw.model else UNKNOWN
    return _usage_record(
        span.trace_id,
        span.span_id,
        span.start_time_ns,
        span.end_time_ns,
        raw.provider,
        model,
        "chat",
        counts.input or 0,
        counts.output or 0,
        counts.cache_read,
        counts.cache_write,
        counts.cache_write_5m,
        counts.cache_write_1h,
        counts.reasoning,
        counts.input_audio,
        counts.output_audio,
        None,
        raw.model,
        raw.service_tier,
        None,  # LiteLLM's own span names the call by its own id, not the provider's
        None,
        span.scope_name,
        "litellm",
        customer,
        span.parent_span_id,
        None,
    )


def _extract(span: SpanView, customer: str | None) -> UsageRecord | NotBillable:
    attrs: Mapping[str, object] = span.attributes
    scope = span.scope_name
    plan = plans[scope, tuple(attrs)]
    if not plan.is_genai:
        return _not_billable(span, _NOT_GENAI)
    if plan.aggregated_key is not None:
        return _not_billable(span, _AGGREGATED, plan.aggregated_key)

    # Memoised by the operation value where the key set allows it (see Plan.operation_by_value).
    value: Any = attrs.get(OPERATION_KEY) if plan.operation_by_value else None
    if type(value) is str:
        found = _operations.get(value)
        if found is None:
            found = operation_of(attrs, span.name)
            # a blank value falls back to the span name: not by value alone; client text keys
            # the memo, so only text of a bounded length is kept
            if value.strip() and len(value) <= MAX_TEXT_CHARS:
                if len(_operations) >= _OPERATIONS_LIMIT:
                    _operations.clear()
                _operations[value] = found
    else:
        found = operation_of(attrs, span.name)
    operation, not_inference = found
    if not_inference:
        return _not_billable(span, NotBillableReason.NOT_INFERENCE, not_inference)

    convention = plan.convention
    if convention == "pydantic-ai" and pydantic_ai.is_run_span(span.name, attrs):
        return _not_billable(span, _AGGREGATED, "pydantic-ai agent run span")
    if convention == "vercel-ai" and not vercel_ai.is_step_span(span.name, attrs):
        return _not_billable(span, _AGGREGATED, f"vercel ai {span.name}: sum of its step spans")
    if convention == "litellm" and litellm.is_raw_span(span.name):
        return _litellm_raw(span, customer)

    # Every string field at once (pure reads: reading them before the counts changes nothing).
    response_model, request_model, declared, address, served_tier, requested_tier, response_id, server = (
        plan.strings(attrs)
    )
    raw_model = response_model or request_model or ""
    if declared is None:
        declared = plan.scope_provider
    provider = _providers[declared, address]
    if provider == UNKNOWN:
        provider = (
            (convention == "litellm" and litellm.provider_of(attrs))
            or model_prefix_provider(raw_model)
            or UNKNOWN
        )

    try:
        plain = plan.plain_counts
        counts = plain(attrs) if plain is not None else plan.reader(attrs, provider, plan.token_keys)
        if not counts.has_totals:
            return _not_billable(span, NotBillableReason.NO_USAGE, f"{convention}: no token counts")
        counts.validate()
    except InvalidUsage as exc:
        return _not_billable(span, NotBillableReason.INVALID_USAGE, str(exc))
    if not counts.input and not counts.output:
        return _not_billable(span, NotBillableReason.NO_USAGE, f"{convention}: token counts are zero")

    served_tier = served_tier or requested_tier
    return _usage_record(
        span.trace_id,
        span.span_id,
        span.start_time_ns,
        span.end_time_ns,
        provider,
        _models[raw_model, provider] if raw_model else UNKNOWN,
        operation or "unknown",
        counts.input or 0,
        counts.output or 0,
        counts.cache_read,
        counts.cache_write,
        counts.cache_write_5m,
        counts.cache_write_1h,
        counts.reasoning,
        counts.input_audio,
        counts.output_audio,
        request_model,
        response_model,
        served_tier.lower() if served_tier else None,
        response_id,
        server,
        scope,
        convention,
        customer,
        span.parent_span_id,
        litellm.reported_cost(attrs) if convention == "litellm" else None,
    )
