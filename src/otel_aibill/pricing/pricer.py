"""Pricer: ``UsageRecord`` → ``PricedUsage`` (provider cost, then the customer's billed amount)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from otel_aibill.config import PricingConfig
from otel_aibill.pricing.catalog import Catalog, Line, Miss, PriceContext, price_context
from otel_aibill.pricing.markup import MarkupBook
from otel_aibill.pricing.rates import UsageError
from otel_aibill.records import slot_constructor
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

_row = slot_constructor(PricedUsage)
_UNKNOWN: Any = object()
_PRICED = PriceStatus.PRICED
_UNPRICED = PriceStatus.UNPRICED
_MAX_LINES = 100_000


class Pricer:
    """Prices usage against one catalog version; pure apart from its caches."""

    def __init__(self, config: PricingConfig | None = None, catalog: Catalog | None = None) -> None:
        config = config or PricingConfig()
        self.currency = config.currency
        self.catalog = catalog or Catalog.bundled(overrides=config.overrides, currency=config.currency)
        self.version = self.catalog.version
        self.markup = MarkupBook(config.markup)
        self._rule_cache = self.markup.cache
        self._lines: dict[tuple[str, str, str | None, str | None], Line] = {}
        self._contexts: dict[str | None, PriceContext] = {}

    def price(self, usage: UsageRecord) -> PricedUsage:
        """Provider cost always (or UNPRICED with a reason); billed too when the customer is known."""
        key = (usage.provider, usage.model, usage.service_tier, usage.server_address)
        line = self._lines.get(key)
        if line is None:
            line = self._line(key)
        rates = line.single or line.at(usage.start_time_ns)
        if isinstance(rates, Miss):
            return self._unpriced(usage, rates.reason)
        try:
            cost = rates.cost_fn(usage)
        except UsageError as exc:
            return self._unpriced(usage, f"usage cannot be priced for {rates.key}: {exc}")
        customer = usage.customer
        if customer is None:
            return _row(usage, _PRICED, cost, None, self.currency, self.version, rates.key)
        return self._billed(usage, cost, rates.key, customer)

    def bill(self, priced: PricedUsage, customer: str) -> PricedUsage:
        """The same priced usage, now attributed to ``customer`` and marked up for them."""
        usage = replace(priced.usage, customer=customer)
        if priced.cost is None or priced.price_key is None:
            return replace(priced, usage=usage, billed=None, markup_rule=None)
        return self._billed(usage, priced.cost, priced.price_key, customer, priced)

    def _billed(
        self,
        usage: UsageRecord,
        cost: Decimal,
        price_key: str,
        customer: str,
        priced: PricedUsage | None = None,
    ) -> PricedUsage:
        rule = self._rule_cache.get((usage.provider, usage.model, price_key, customer), _UNKNOWN)
        if rule is _UNKNOWN:
            rule = self.markup.rule_for(usage.provider, usage.model, price_key, customer)
        billed = cost if rule is None else rule.apply(cost)
        rule_id = None if rule is None else rule.rule.id
        if priced is not None:
            return replace(priced, usage=usage, billed=billed, markup_rule=rule_id)
        return _row(usage, _PRICED, cost, billed, self.currency, self.version, price_key, rule_id)

    def _unpriced(self, usage: UsageRecord, reason: str) -> PricedUsage:
        return PricedUsage(usage, _UNPRICED, None, None, self.currency, self.version, unpriced_reason=reason)

    def _line(self, key: tuple[str, str, str | None, str | None]) -> Line:
        provider, model, tier, host = key
        context = self._contexts.get(tier)
        if context is None:
            context = self._contexts[tier] = price_context(tier)
        if len(self._lines) >= _MAX_LINES:
            self._lines.clear()
        line = self._lines[key] = self.catalog.line(provider, model, context, host)
        return line
