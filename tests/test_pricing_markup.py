"""Markup rules: precedence, percent/fee/minimum arithmetic, and billing after attribution."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from otel_aibill.config import MarkupRule, PricingConfig
from otel_aibill.pricing import Pricer
from otel_aibill.usage import PriceStatus, UsageRecord

NOV_2026 = 1_793_534_400_000_000_000  # 2026-11-02T12:00Z


def rec(
    provider: str = "openai", model: str = "gpt-4o", customer: str | None = "acme", **kw: int
) -> UsageRecord:
    return UsageRecord(
        trace_id="a" * 32,
        span_id="b" * 16,
        start_time_ns=NOV_2026,
        end_time_ns=NOV_2026 + 1,
        provider=provider,
        model=model,
        operation="chat",
        input_tokens=kw.get("input_tokens", 1_000_000),
        output_tokens=kw.get("output_tokens", 0),
        customer=customer,
    )


RULES = (
    MarkupRule(id="global", percent="10"),
    MarkupRule(id="openai", provider="openai", percent="20"),
    MarkupRule(id="gpt4o", model="gpt-4o", percent="30"),
    MarkupRule(id="gpt4o-openai", provider="openai", model="gpt-4o", percent="35"),
    MarkupRule(id="acme", customer="acme", percent="40"),
    MarkupRule(id="acme-gpt4o", customer="acme", model="gpt-4o", percent="50"),
)


@pytest.mark.parametrize(
    ("usage", "rule", "billed"),
    [
        (rec(customer="other", provider="anthropic", model="claude-sonnet-4-5"), "global", "6.6"),
        (rec(customer="other", model="gpt-4o-mini"), "openai", "0.18"),
        (rec(customer="other", provider="azure.ai.openai"), "gpt4o", "3.25"),
        (rec(customer="other"), "gpt4o-openai", "3.375"),
        (rec(model="gpt-4o-mini"), "acme", "0.21"),
        # 1M input is past claude-sonnet-4-5's 200k tier: $6/MTok
        (rec(provider="anthropic", model="claude-sonnet-4-5"), "acme", "8.4"),
        (rec(), "acme-gpt4o", "3.75"),
        (rec(model="gpt-4o-2024-08-06"), "acme-gpt4o", "3.75"),  # the catalog model's dated name
    ],
)
def test_most_specific_rule_wins(usage: UsageRecord, rule: str, billed: str) -> None:
    got = Pricer(PricingConfig(markup=RULES)).price(usage)
    assert got.markup_rule == rule
    assert got.billed == Decimal(billed)
    assert got.margin == got.billed - got.cost  # type: ignore[operator]


def test_fixed_fee_and_minimum() -> None:
    rules = (MarkupRule(id="r", percent="25", fixed_fee="0.002", minimum="0.01"),)
    p = Pricer(PricingConfig(markup=rules))
    big = p.price(rec(input_tokens=1_000_000))  # 2.5 * 1.25 + 0.002
    assert big.billed == Decimal("3.127")
    small = p.price(rec(input_tokens=100))  # 0.00025 * 1.25 + 0.002 < 0.01
    assert small.billed == Decimal("0.01") and small.markup_rule == "r"


def test_no_rule_bills_cost() -> None:
    got = Pricer(PricingConfig()).price(rec())
    assert got.billed == got.cost == Decimal("2.5") and got.markup_rule is None


def test_no_customer_means_no_billed_amount_until_bill() -> None:
    p = Pricer(PricingConfig(markup=RULES))
    pending = p.price(rec(customer=None))
    assert pending.status is PriceStatus.PRICED and pending.cost == Decimal("2.5")
    assert pending.billed is None and pending.markup_rule is None
    billed = p.bill(pending, "acme")
    assert billed.usage.customer == "acme" and billed.markup_rule == "acme-gpt4o"
    assert billed.billed == Decimal("3.75") and billed.cost == pending.cost
    assert billed.price_version == pending.price_version and billed.price_key == pending.price_key
    assert billed == p.price(replace(pending.usage, customer="acme"))


def test_bill_unpriced_keeps_it_unpriced() -> None:
    p = Pricer(PricingConfig(markup=RULES))
    unpriced = p.price(rec(customer=None, model="no-such-model"))
    billed = p.bill(unpriced, "acme")
    assert billed.status is PriceStatus.UNPRICED and billed.billed is None and billed.cost is None
    assert billed.usage.customer == "acme"


def test_full_precision_no_rounding() -> None:
    p = Pricer(PricingConfig(markup=(MarkupRule(id="r", percent="33.333"),)))
    got = p.price(rec(input_tokens=7, output_tokens=3))  # 7*2.5e-6 + 3*10e-6 = 0.0000475
    assert got.cost == Decimal("0.0000475")
    assert got.billed == Decimal("0.0000475") * Decimal("1.33333")
    assert got.billed == Decimal("0.000063333175")


def test_ambiguous_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="same scope"):
        Pricer(PricingConfig(markup=(MarkupRule(id="a", model="gpt-4o"), MarkupRule(id="b", model="GPT-4o"))))
    with pytest.raises(ValueError, match="used twice"):
        Pricer(PricingConfig(markup=(MarkupRule(id="a", model="x"), MarkupRule(id="a", model="y"))))
