"""The data that flows through the pipeline: span in, usage record, priced usage out.

Everything here is plain data with no I/O, so every stage (extract, attribute, price,
ledger) can be tested and benchmarked on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

AttrValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
Attributes = Mapping[str, AttrValue]

MAX_TEXT_CHARS = 256
"""The longest id or name billing reads from a span (customer id, provider, models, operation,
service tier, response id, server address). Longer text is read as absent, like text that is not
valid Unicode: no real id is that long, and these values key caches and fill ledger columns."""


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode, so the ledger can store it.

    A lone surrogate (an OTLP/JSON ``\\ud800`` escape, bytes decoded with ``surrogateescape``)
    is not, and one such value would fail the ledger write of its whole batch.
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


UNATTRIBUTED = "unattributed"
"""The customer that usage is kept under when no customer can be found for it."""


@dataclass(slots=True, frozen=True)
class SpanView:
    """A finished span, whatever it came from (SDK ReadableSpan, OTLP protobuf or JSON).

    Ids are lowercase hex (32 chars for a trace, 16 for a span), the OTLP/JSON form.
    """

    trace_id: str
    span_id: str
    name: str
    start_time_ns: int
    end_time_ns: int
    attributes: Attributes
    resource: Attributes = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str | None = None
    parent_span_id: str | None = None


class NotBillableReason(StrEnum):
    """Why a span produced no billable usage. Every reason is counted, none is silent."""

    NOT_GENAI = "not_genai"  # no GenAI / LLM attributes at all
    NOT_INFERENCE = "not_inference"  # agent, workflow, tool, retrieval... spans
    AGGREGATED_USAGE = "aggregated_usage"  # totals repeated from child spans
    NO_USAGE = "no_usage"  # an inference span without token counts (e.g. stream without include_usage)
    INVALID_USAGE = "invalid_usage"  # negative, non-integer, inconsistent or absurd token counts
    DUPLICATE_RESPONSE = "duplicate_response"  # a sibling span already billed the same response id
    DUPLICATE_SPAN = "duplicate_span"  # the same (trace_id, span_id) was already in the ledger
    DUPLICATE_CALL = "duplicate_call"  # another span of the same provider call (another instrumentation)


@dataclass(slots=True, frozen=True)
class NotBillable:
    reason: NotBillableReason
    detail: str = ""
    trace_id: str = ""
    span_id: str = ""
    customer: str | None = None  # a non-billable span may still name the customer of its trace


@dataclass(slots=True, frozen=True)
class UsageRecord:
    """One LLM call's usage in the canonical (OTel GenAI) token accounting.

    ``input_tokens`` is the TOTAL prompt, including cache reads and writes;
    ``cache_read_tokens`` and ``cache_write_tokens`` are parts of it
    (``cache_write_5m_tokens`` + ``cache_write_1h_tokens`` <= ``cache_write_tokens`` where known).
    ``output_tokens`` includes ``reasoning_tokens``. Audio counts are parts of their totals.
    """

    trace_id: str
    span_id: str
    start_time_ns: int
    end_time_ns: int
    provider: str  # normalised provider name, e.g. "openai", "anthropic", "aws.bedrock"
    model: str  # normalised served model (response model, else request model)
    operation: str  # "chat", "text_completion", "embeddings", "generate_content", ...
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    request_model: str | None = None
    response_model: str | None = None
    service_tier: str | None = None  # served tier: "batch", "flex", "priority", "default"...
    response_id: str | None = None
    server_address: str | None = None
    scope_name: str = ""
    convention: str = ""  # which adapter read it: "genai", "traceloop", "openinference", ...
    customer: str | None = None  # the app's customer id, None while unknown (pending)
    parent_span_id: str | None = None
    reported_cost: Decimal | None = None  # the instrumentation's own cost estimate (LiteLLM), for comparison


TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)
"""The token counts of a ``UsageRecord``, in field order."""


class PriceStatus(StrEnum):
    PRICED = "priced"
    UNPRICED = "unpriced"  # usage with no known price: stored with its tokens, never $0


@dataclass(slots=True, frozen=True)
class PricedUsage:
    """A usage record with its provider cost and the amount billed to the customer.

    ``billed`` is None while the customer is unknown (markup can depend on the customer)
    and while the record is unpriced.
    """

    usage: UsageRecord
    status: PriceStatus
    cost: Decimal | None
    billed: Decimal | None
    currency: str = "USD"
    price_version: str | None = None  # catalog version id the cost came from
    price_key: str | None = None  # resolved "provider/model" in the catalog
    markup_rule: str | None = None  # id of the markup rule applied
    unpriced_reason: str = ""

    @property
    def margin(self) -> Decimal | None:
        if self.cost is None or self.billed is None:
            return None
        return self.billed - self.cost
