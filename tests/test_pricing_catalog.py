"""Catalog: overrides and custom models with start dates, versions, unknowns, currency."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from otel_aibill.config import MarkupRule, PriceOverride, PricingConfig
from otel_aibill.pricing import Catalog, Pricer
from otel_aibill.pricing.clock import datetime_to_ns
from otel_aibill.usage import PriceStatus, UsageRecord

JAN = datetime(2026, 1, 1, tzinfo=UTC)
JUN = datetime(2026, 6, 1, tzinfo=UTC)


def rec(provider: str = "openai", model: str = "gpt-4o", at: datetime = JUN, **kw: object) -> UsageRecord:
    base: dict[str, object] = dict(input_tokens=1_000_000, output_tokens=1_000_000)
    base.update(kw)
    return UsageRecord(
        trace_id="a" * 32,
        span_id="b" * 16,
        start_time_ns=datetime_to_ns(at),
        end_time_ns=datetime_to_ns(at) + 1,
        provider=provider,
        model=model,
        operation="chat",
        **base,  # type: ignore[arg-type]
    )


def pricer(*overrides: PriceOverride, markup: tuple[MarkupRule, ...] = (), currency: str = "USD") -> Pricer:
    return Pricer(PricingConfig(overrides=overrides, markup=markup, currency=currency))


def test_catalog_price_without_overrides() -> None:
    got = pricer().price(rec())
    assert got.status is PriceStatus.PRICED
    assert got.cost == Decimal("12.5")  # gpt-4o: 2.5 in + 10 out per MTok
    assert got.billed is None and got.markup_rule is None and got.price_key == "openai/gpt-4o"


def test_override_applies_from_its_effective_date_on() -> None:
    p = pricer(
        PriceOverride(provider="openai", model="gpt-4o", effective_from=JUN, input_mtok="1", output_mtok="2")
    )
    assert p.price(rec(at=datetime(2026, 5, 31, 23, 59, 59, 999999, tzinfo=UTC))).cost == Decimal("12.5")
    assert p.price(rec(at=JUN)).cost == Decimal("3")
    assert p.price(rec(at=datetime(2027, 1, 1, tzinfo=UTC))).cost == Decimal("3")


def test_override_covers_dated_names_of_the_catalog_model_and_respects_provider() -> None:
    p = pricer(PriceOverride(provider="openai", model="gpt-4o", input_mtok="1", output_mtok="2"))
    assert p.price(rec(model="gpt-4o-2024-08-06")).cost == Decimal("3")
    # Azure serves the same model at its own price: an OpenAI override does not apply there.
    assert p.price(rec(provider="azure.ai.openai", model="gpt-4o")).cost == Decimal("12.5")


def test_override_history_latest_effective_wins() -> None:
    p = pricer(
        PriceOverride(provider="openai", model="gpt-4o", effective_from=JUN, input_mtok="3", output_mtok="0"),
        PriceOverride(provider="openai", model="gpt-4o", effective_from=JAN, input_mtok="2", output_mtok="0"),
        PriceOverride(provider="openai", model="gpt-4o", input_mtok="1", output_mtok="0"),
    )
    assert p.price(rec(at=datetime(2025, 6, 1, tzinfo=UTC))).cost == Decimal("1")
    assert p.price(rec(at=datetime(2026, 3, 1, tzinfo=UTC))).cost == Decimal("2")
    assert p.price(rec(at=datetime(2026, 7, 1, tzinfo=UTC))).cost == Decimal("3")


def test_service_tier_override_beats_untiered_for_that_tier_only() -> None:
    p = pricer(
        PriceOverride(provider="openai", model="gpt-4o", input_mtok="1", output_mtok="1"),
        PriceOverride(
            provider="openai", model="gpt-4o", service_tier="batch", input_mtok="0.5", output_mtok="0.5"
        ),
    )
    assert p.price(rec(service_tier="batch")).cost == Decimal("1.0")
    assert p.price(rec(service_tier="priority")).cost == Decimal("2")
    assert p.price(rec()).cost == Decimal("2")


def test_custom_model_with_cache_and_request_prices() -> None:
    p = pricer(
        PriceOverride(
            provider="my-vllm",
            model="llama-3.3-70b",
            effective_from=JAN,
            input_mtok="0.2",
            output_mtok="0.6",
            cache_read_mtok="0.05",
            request="0.001",
        )
    )
    # 1M input of which 400k cached: 600k*0.2 + 400k*0.05 + 1M*0.6 + 0.001
    got = p.price(rec(provider="my-vllm", model="Llama-3.3-70B", cache_read_tokens=400_000))
    assert got.status is PriceStatus.PRICED and got.cost == Decimal("0.741")
    assert got.price_key == "my-vllm/llama-3.3-70b"
    before = p.price(rec(provider="my-vllm", model="llama-3.3-70b", at=datetime(2025, 12, 31, tzinfo=UTC)))
    assert before.status is PriceStatus.UNPRICED and "before 2026-01-01" in before.unpriced_reason


def test_unknown_provider_and_model_are_unpriced_never_zero() -> None:
    p = pricer()
    for u in (rec(provider="acme-llm", model="x"), rec(model="gpt-nonexistent-9"), rec(model="")):
        got = p.price(replace(u, customer="c1"))
        assert got.status is PriceStatus.UNPRICED
        assert got.cost is None and got.billed is None and got.unpriced_reason
        assert got.price_version == p.version


def test_model_priced_only_per_audio_hour_is_unpriced() -> None:
    got = pricer().price(rec(model="whisper-1"))
    assert got.status is PriceStatus.UNPRICED and "audio_hours" in got.unpriced_reason


def test_misses_are_cached() -> None:
    p = pricer()
    u = rec(provider="acme-llm", model="x")
    p.price(u)
    line = p.catalog.line("acme-llm", "x")
    p.price(u)
    assert p.catalog.line("acme-llm", "x") is line


def test_api_host_decides_the_provider() -> None:
    # The OpenAI SDK pointed at Groq still says "openai"; Groq's price applies.
    got = pricer().price(rec(model="llama-3.3-70b-versatile", server_address="api.groq.com"))
    assert got.status is PriceStatus.PRICED and got.price_key is not None
    assert got.price_key.startswith("groq/")
    local = pricer().price(rec(model="gpt-4o", server_address="127.0.0.1"))
    assert local.price_key == "openai/gpt-4o"


def test_non_usd_currency_prices_only_from_overrides() -> None:
    p = pricer(
        PriceOverride(provider="openai", model="gpt-4o", input_mtok="2", output_mtok="8"), currency="EUR"
    )
    assert p.price(rec()).cost == Decimal("10") and p.price(rec()).currency == "EUR"
    other = p.price(rec(model="gpt-4o-mini"))
    assert other.status is PriceStatus.UNPRICED and "USD" in other.unpriced_reason


def test_version_is_content_hash_and_changes_with_overrides() -> None:
    a = Catalog.bundled()
    b = Catalog.bundled()
    c = Catalog.bundled(
        overrides=(PriceOverride(provider="openai", model="gpt-4o", input_mtok="1", output_mtok="0"),)
    )
    assert a.version == b.version != c.version
    assert len(a.content_hash) == 64 and a.content_hash.startswith(a.version)
    code = "from otel_aibill.pricing import Catalog; print(Catalog.bundled().version)"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == a.version


def test_catalog_resolve_api() -> None:
    cat = Catalog.bundled()
    rates = cat.resolve("openai", "gpt-5", datetime(2026, 11, 1, tzinfo=UTC), {"service_tier": "flex"})
    assert rates is not None and rates.prices["input_mtok"] == Decimal("0.625")
    assert rates.cost(rec(model="gpt-5")) == Decimal("5.625")
    assert cat.resolve("openai", "nope", JUN) is None


def test_float_money_in_config_is_refused() -> None:
    with pytest.raises(ValueError):
        PriceOverride(provider="openai", model="gpt-4o", input_mtok=0.1)  # type: ignore[arg-type]
