"""Configuration: one TOML file (``--config`` / ``OTEL_AIBILL_CONFIG``) plus ``OTEL_AIBILL_*`` env.

Money values are written as strings in TOML ("0.25") and parsed to Decimal; floats are refused
so a price can never pick up binary rounding on its way in.
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_DB = "sqlite:///aibill.db"
BAGGAGE_CUSTOMER_KEYS = ("stripe.customer.id", "customer.id", "tenant.id", "enduser.id", "user.id")
DEFAULT_CUSTOMER_KEYS = (
    # set by the app for billing: always first
    "stripe.customer.id",
    "customer.id",
    # traceloop-sdk's documented customer field (Associations / AssociationProperty.CUSTOMER_ID)
    "traceloop.association.properties.customer_id",
    # the OpenTelemetry conventions for who is served
    "tenant.id",
    "enduser.id",
    "user.id",
    # the end user as instrumentation libraries record it
    "traceloop.association.properties.user_id",
    "langfuse.user.id",
    "llm.user",  # LiteLLM: the ``user=`` of the call
    "metadata.user_api_key_end_user_id",  # LiteLLM proxy: the end user of the key
)
"""Customer keys in order of precedence: the first one with a usable value names the customer (on
the span, then on its resource). A configured ``attribution.keys`` replaces the whole list."""


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError(f'write money as a string ("{value}"), not a float, to keep it exact')
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributionConfig(_Strict):
    keys: tuple[str, ...] = DEFAULT_CUSTOMER_KEYS
    """Attribute keys naming the customer, in order; span attributes first, then resource."""
    baggage_keys: tuple[str, ...] = BAGGAGE_CUSTOMER_KEYS
    """Baggage entries the in-process processor copies onto every span at start."""
    pending_grace_seconds: int = Field(default=900, ge=0)
    """How long usage waits for its trace's customer before it is kept as "unattributed"."""
    trace_customer_retention_seconds: int = Field(default=3_600, ge=0)
    """How long a trace's customer is remembered, for usage of the trace that comes later; the
    sweep forgets older ones, which keeps the ledger's trace customer table (and the cost of
    adding to it) bounded. At least ``pending_grace_seconds``: pending usage is attributed
    through it until then (when not set, a longer grace raises it to the grace)."""

    @model_validator(mode="after")
    def _retention_covers_grace(self) -> AttributionConfig:
        if "trace_customer_retention_seconds" not in self.model_fields_set:
            # frozen model: the default follows a grace set longer than it
            object.__setattr__(
                self,
                "trace_customer_retention_seconds",
                max(self.trace_customer_retention_seconds, self.pending_grace_seconds),
            )
        if self.trace_customer_retention_seconds < self.pending_grace_seconds:
            raise ValueError(
                "attribution.trace_customer_retention_seconds must be at least pending_grace_seconds"
                f" ({self.trace_customer_retention_seconds} < {self.pending_grace_seconds})"
            )
        return self


class PriceOverride(_Strict):
    """A custom model or an override of a catalog price, per million tokens.

    Input and output prices are required (write "0" for a free side, e.g. embeddings' output):
    a forgotten price must not quietly bill $0.
    """

    provider: str
    model: str
    effective_from: datetime | None = None
    input_mtok: Decimal = Field(ge=0)
    output_mtok: Decimal = Field(ge=0)
    cache_read_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_mtok: Decimal | None = Field(default=None, ge=0)
    request: Decimal | None = Field(default=None, ge=0)  # flat price per request
    service_tier: str | None = None  # applies only to this served tier when set

    _v = field_validator(
        "input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "request", mode="before"
    )(_no_float)


class MarkupRule(_Strict):
    """Percent and/or fixed fee per request, with an optional minimum charge.

    Scope is the most specific of customer > model > provider > global that is set.
    """

    id: str
    provider: str | None = None
    model: str | None = None
    customer: str | None = None
    percent: Decimal = Field(default=Decimal(0), ge=-100)  # a discount never makes a bill negative
    fixed_fee: Decimal = Field(default=Decimal(0), ge=0)
    minimum: Decimal | None = Field(default=None, ge=0)

    _v = field_validator("percent", "fixed_fee", "minimum", mode="before")(_no_float)


class PricingConfig(_Strict):
    currency: str = "USD"
    overrides: tuple[PriceOverride, ...] = ()
    markup: tuple[MarkupRule, ...] = ()


DEFAULT_PRICE_FEED = (
    "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/prices/new_data/v2/data.json"
)
"""The genai-prices v2 feed, as ``genai_prices.update_prices.DEFAULT_UPDATE_URL``."""


class PricesConfig(_Strict):
    """Where price updates come from, how often, and whether they apply at once or wait."""

    source: str = DEFAULT_PRICE_FEED
    """URL or file: genai-prices v2 data, or overrides ([[pricing.overrides]] TOML or JSON)."""
    update_interval_seconds: float = Field(default=3600.0, ge=0)
    """How often ``serve`` fetches the source (0: never; ``prices update`` still works)."""
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    policy: Literal["apply", "hold"] = "apply"
    """``apply``: new prices price usage from their effective time; ``hold``: they wait for
    ``prices approve``. ``policies`` sets it per provider (genai-prices provider ids)."""
    policies: dict[str, Literal["apply", "hold"]] = Field(default_factory=dict)
    second_opinion: str | None = None
    """A LiteLLM model_prices_and_context_window.json (URL or file) to compare prices with."""
    tolerance_percent: Decimal = Field(default=Decimal(1), ge=0)

    _v = field_validator("tolerance_percent", mode="before")(_no_float)

    def policy_for(self, provider: str) -> Literal["apply", "hold"]:
        return self.policies.get(provider, self.policy)


class ProcessorConfig(_Strict):
    queue_size: int = Field(default=8192, ge=1)
    on_full: Literal["drop", "block"] = "drop"
    batch_size: int = Field(default=512, ge=1)
    flush_interval_ms: int = Field(default=500, ge=1)
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    """How often the worker keeps pending usage past its grace as "unattributed" and forgets old
    trace customers (also done at shutdown)."""


class Config(BaseModel):
    """The whole configuration. Sections not shown here belong to optional components."""

    model_config = ConfigDict(extra="allow")

    db: str = DEFAULT_DB
    attribution: AttributionConfig = AttributionConfig()
    customers: dict[str, str] = Field(default_factory=dict)
    """App customer id -> Stripe customer id."""
    pricing: PricingConfig = PricingConfig()
    processor: ProcessorConfig = ProcessorConfig()
    prices: PricesConfig = PricesConfig()


class ConfigError(ValueError):
    pass


def load_config(path: str | os.PathLike[str] | None = None, *, db: str | None = None) -> Config:
    """Read the TOML file (if any), then apply ``OTEL_AIBILL_DB`` and an explicit ``db``."""
    path = path or os.environ.get("OTEL_AIBILL_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    env_db = os.environ.get("OTEL_AIBILL_DB")
    if db:
        data["db"] = db
    elif env_db:
        data["db"] = env_db
    try:
        return Config.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"invalid config{f' {path}' if path else ''}: {exc}") from exc
