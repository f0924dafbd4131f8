"""Markup: what a customer is billed for a provider cost.

Rule precedence (most specific wins): a rule matches only if every scope it sets matches, and its
weight is customer=4 + model=2 + provider=1 for the scopes it sets. So customer beats model beats
provider beats global, a rule naming customer and model beats one naming only the customer, and a
customer-only rule beats a model-and-provider rule. Two rules with the same scopes and values are
ambiguous and refused when the rules are loaded.

Arithmetic is exact: ``billed = max(cost * (1 + percent/100) + fixed_fee, minimum)`` in a decimal
context of 60 digits with ``Inexact`` trapped, so the ledger never holds a silently rounded amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from otel_aibill.config import MarkupRule
from otel_aibill.pricing.providers import pricing_provider_id

MONEY = Context(prec=60, traps=[Inexact, InvalidOperation])
_HUNDRED = Decimal(100)
_MAX_CACHE = 200_000


class _Compiled:
    __slots__ = ("customer", "factor", "fee", "minimum", "models", "providers", "rule", "weight")

    def __init__(self, rule: MarkupRule) -> None:
        self.rule = rule
        self.providers = (
            None
            if rule.provider is None
            else {rule.provider.strip().lower(), pricing_provider_id(rule.provider) or ""} - {""}
        )
        self.models = None if rule.model is None else rule.model.strip().lower()
        self.customer = rule.customer
        self.weight = (
            4 * (rule.customer is not None) + 2 * (rule.model is not None) + (rule.provider is not None)
        )
        self.factor = MONEY.add(Decimal(1), MONEY.divide(rule.percent, _HUNDRED))
        self.fee = rule.fixed_fee
        self.minimum = rule.minimum

    def matches(self, provider: str, provider_id: str, models: tuple[str, str], customer: str) -> bool:
        if self.customer is not None and self.customer != customer:
            return False
        if self.models is not None and self.models not in models:
            return False
        return self.providers is None or provider in self.providers or provider_id in self.providers

    def apply(self, cost: Decimal) -> Decimal:
        billed = cost.fma(self.factor, self.fee, MONEY)  # one exact multiply-add
        if self.minimum is not None and billed < self.minimum:
            return self.minimum
        return billed


_MISSING: Any = object()


class MarkupBook:
    """The configured markup rules, with the chosen rule cached per (provider, model, customer)."""

    def __init__(self, rules: Sequence[MarkupRule]) -> None:
        seen_ids: set[str] = set()
        seen_scopes: dict[tuple[str | None, str | None, str | None], str] = {}
        for r in rules:
            if r.id in seen_ids:
                raise ValueError(f"markup rule id {r.id!r} is used twice")
            seen_ids.add(r.id)
            scope = (
                pricing_provider_id(r.provider) or r.provider.strip().lower() if r.provider else None,
                r.model.strip().lower() if r.model else None,
                r.customer,
            )
            if scope in seen_scopes:
                raise ValueError(f"markup rules {seen_scopes[scope]!r} and {r.id!r} have the same scope")
            seen_scopes[scope] = r.id
        # Heaviest first; a stable sort keeps config order among equal weights (they cannot both match).
        self._rules = sorted((_Compiled(r) for r in rules), key=lambda c: -c.weight)
        self.cache: dict[tuple[str, str, str, str], _Compiled | None] = {}

    def rule_for(self, provider: str, model: str, price_key: str, customer: str) -> _Compiled | None:
        """The most specific rule for this usage; ``price_key`` ("provider/model") names the catalog model.

        A rule's provider matches the span's provider name or the pricing provider id; its model
        matches the span's model or the catalog model it resolved to (``gpt-4o`` covers
        ``gpt-4o-2024-08-06``).
        """
        key = (provider, model, price_key, customer)
        cached = self.cache.get(key, _MISSING)  # one lookup: another thread may clear the cache
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        provider_id, _, catalog_model = price_key.partition("/")
        models = (model.strip().lower(), catalog_model.lower())
        name = provider.strip().lower()
        found = next((c for c in self._rules if c.matches(name, provider_id, models, customer)), None)
        if len(self.cache) >= _MAX_CACHE:
            self.cache.clear()
        self.cache[key] = found
        return found
