"""Settings of the Stripe export, read from the ``[stripe]`` section of the configuration file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from otel_aibill.config import Config

TOKEN_BILLING_EVENT = "token-billing-tokens"
"""The event name of Stripe's LLM token billing."""


class StripeConfig(BaseModel):
    """How usage becomes meter events. Every duration is in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["cost", "tokens"] = "cost"
    """cost: one meter of billed money in integer sub-units; tokens: Stripe's LLM token billing shape."""
    api: Literal["v1", "v2"] = "v1"
    """v1: one request per event (low volume); v2: session + meter_event_stream (high volume)."""
    unit_exponent: int = Field(default=6, ge=0, le=12)
    """A cost-mode unit is 10**-unit_exponent of the currency (6: micro-dollars)."""
    currency: str | None = None
    """Currency of the cost meter; defaults to ``[pricing] currency``. Rows in another currency are held."""
    cost_event_name: str = Field(default="aibill_cost", max_length=100)
    tokens_event_name: str = Field(default=TOKEN_BILLING_EVENT, max_length=100)
    customer_payload_key: str = "stripe_customer_id"
    value_payload_key: str = "value"
    cache_token_providers: tuple[str, ...] = ("anthropic",)
    """Tokens mode: providers whose cache writes are their own token type (``cached_write``); for
    the others they are counted as ``input``, as those providers bill them."""
    models: dict[str, str] = Field(default_factory=dict)
    """Tokens mode, ``[stripe.models]``: ledger ``provider/model`` -> the model name Stripe's token
    billing lists, for names its normalisation does not produce (fine-tunes, other hosts)."""
    window: Literal["hour", "day"] = "hour"
    """Usage is summed per customer, meter and dimensions within one such UTC window."""
    max_events_per_request: int = Field(default=100, ge=1, le=100)
    page_rows: int = Field(default=10_000, ge=1)
    """Ledger rows read per page."""
    batch_rows: int = Field(default=1_000_000, ge=1)
    """At most this many rows go into one export batch (one set of events)."""
    concurrency: int = Field(default=4, ge=1, le=32)
    """v1 sender threads; each owns a disjoint set of (customer, meter) pairs."""
    poll_interval: float = Field(default=30.0, gt=0)
    max_network_retries: int = Field(default=2, ge=0)
    """SDK retries of connection errors, 409 and 5xx (same idempotency key)."""
    timeout: float = Field(default=30.0, gt=0)
    backoff_initial: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=60.0, ge=0)
    rate_limit_retries: int = Field(default=5, ge=0)
    """Our own retries after a 429 (the SDK does not retry those), per call and run."""
    dedupe_window: int = Field(default=23 * 3600, ge=0)
    """Stripe keeps identifiers unique for at least 24 h; an event attempted earlier than this is
    reconciled against event summaries before it is sent again."""
    max_event_age: int = Field(default=34 * 86400, ge=0)
    """Usage older than this is held (Stripe refuses events older than 35 days)."""
    future_skew: int = Field(default=300, ge=0)
    lease_ttl: int = Field(default=600, ge=1)
    """One exporter at a time per store: a run holds a lease this long, renewed as it goes."""
    product_name: str = "AI usage"
    create_price: bool = True
    """``stripe setup`` in cost mode also creates a product and a per-unit price."""


def stripe_config(config: Config) -> StripeConfig:
    extra = config.model_extra or {}
    return StripeConfig.model_validate(extra.get("stripe", {}))


def currency_of(config: Config, sc: StripeConfig) -> str:
    return (sc.currency or config.pricing.currency).upper()


@dataclass(frozen=True, slots=True)
class StripeEnv:
    """Where to reach Stripe; an absent key means dry-run."""

    api_key: str | None
    api_base: str | None
    meter_events_base: str | None
    webhook_secret: str | None

    @classmethod
    def from_env(cls) -> StripeEnv:
        return cls(
            api_key=os.environ.get("STRIPE_API_KEY") or None,
            api_base=os.environ.get("OTEL_AIBILL_STRIPE_API_BASE") or None,
            meter_events_base=os.environ.get("OTEL_AIBILL_STRIPE_METER_EVENTS_BASE") or None,
            webhook_secret=os.environ.get("STRIPE_WEBHOOK_SECRET") or None,
        )
