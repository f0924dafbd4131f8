"""Pricer: ``UsageRecord`` → ``PricedUsage`` (provider cost, then the customer's billed amount)."""

from __future__ import annotations

from typing import Any

from otel_aibill.config import PricingConfig
from otel_aibill.pricing.catalog import Catalog, Line, Miss, PriceContext, price_context
from otel_aibill.pricing.markup import MarkupBook
from otel_aibill.pricing.rates import UsageError
from otel_aibill.records import replacer, slot_constructor
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

_row = slot_constructor(PricedUsage)
_with_customer = replacer(UsageRecord, "customer")
_with_billing = replacer(PricedUsage, "usage", "billed", "markup_rule")
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
        # the markup rule (as in ``bill``), inlined: this is the per-span path when the customer is known
        rule = self._rule_cache.get((usage.provider, usage.model, rates.key, customer), _UNKNOWN)
        if rule is _UNKNOWN:
            rule = self.markup.rule_for(usage.provider, usage.model, rates.key, customer)
        if rule is None:
            return _row(usage, _PRICED, cost, cost, self.currency, self.version, rates.key, None)
        return _row(
            usage, _PRICED, cost, rule.apply(cost), self.currency, self.version, rates.key, rule.rule.id
        )

    def bill(self, priced: PricedUsage, customer: str) -> PricedUsage:
        """The same priced usage, now attributed to ``customer`` and marked up for them."""
        usage = _with_customer(priced.usage, customer)
        cost, price_key = priced.cost, priced.price_key
        if cost is None or price_key is None:
            return _with_billing(priced, usage, None, None)
        rule = self._rule_cache.get((usage.provider, usage.model, price_key, customer), _UNKNOWN)
        if rule is _UNKNOWN:
            rule = self.markup.rule_for(usage.provider, usage.model, price_key, customer)
        if rule is None:
            return _with_billing(priced, usage, cost, None)
        return _with_billing(priced, usage, rule.apply(cost), rule.rule.id)

    def _unpriced(self, usage: UsageRecord, reason: str) -> PricedUsage:
        return _row(usage, _UNPRICED, None, None, self.currency, self.version, None, None, reason)

    def _line(self, key: tuple[str, str, str | None, str | None]) -> Line:
        provider, model, tier, host = key
        context = self._contexts.get(tier)
        if context is None:
            if len(self._contexts) >= _MAX_LINES:  # tiers are client text: bounded like the lines
                self._contexts.clear()
            context = self._contexts[tier] = price_context(tier)
        if len(self._lines) >= _MAX_LINES:
            self._lines.clear()
        line = self._lines[key] = self.catalog.line(provider, model, context, host)
        return line
