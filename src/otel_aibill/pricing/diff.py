"""Prices as rows, and the difference between two catalogs, per (provider, model, unit, tier,
variant, effective date) (pure). What ``prices show`` and ``prices diff`` print and alerts carry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

from otel_aibill.pricing.feed import price_values
from otel_aibill.pricing.merge import period_key

Key = tuple[str, str, str, str, str, str]
"""(provider, model, unit, tier, variant, effective)."""

_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class PriceRow:
    provider: str
    model: str
    unit: str  # a genai-prices price key, e.g. input_mtok
    tier: str  # "" for the base price, ">200000" for the price past that many input tokens
    variant: str  # "" for standard requests, e.g. "service_tier=flex"
    effective: str  # "" from the start, a start date, or "daily 16:30-00:30"
    price: Decimal

    @property
    def key(self) -> Key:
        return (self.provider, self.model, self.unit, self.tier, self.variant, self.effective)


@dataclass(frozen=True, slots=True)
class DiffRow:
    provider: str
    model: str
    unit: str
    tier: str
    variant: str
    effective: str
    change: str  # "added" | "removed" | "changed"
    old: Decimal | None
    new: Decimal | None

    @property
    def percent(self) -> Decimal | None:
        """Change of a changed price in percent of the old one (None when it was 0 or is new)."""
        if self.old is None or self.new is None or self.old == 0:
            return None
        return ((self.new - self.old) * _HUNDRED / self.old).quantize(Decimal("0.01"))


def effective_label(key: Any) -> str:
    if key is None:
        return ""
    if isinstance(key, tuple):
        return f"daily {key[1][:5]}-{key[2][:5]}"
    return str(key)


def _price_rows(pid: str, mid: str, prices: ModelPrice, variant: str, effective: str) -> Iterator[PriceRow]:
    for unit, value in price_values(prices):
        if isinstance(value, TieredPrices):
            yield PriceRow(pid, mid, unit, "", variant, effective, value.base)
            for tier in value.tiers:
                yield PriceRow(pid, mid, unit, f">{tier.start}", variant, effective, tier.price)
        elif isinstance(value, Decimal):
            yield PriceRow(pid, mid, unit, "", variant, effective, value)


def model_rows(provider: str, model: ModelInfo) -> Iterator[PriceRow]:
    """Every price of a model: each period, tier and request variant."""
    own: list[tuple[ModelPrice, Any]] = (
        [(model.prices, None)]
        if isinstance(model.prices, ModelPrice)
        else [(cp.prices, cp.constraint) for cp in model.prices]
    )
    for prices, constraint in own:
        yield from _price_rows(provider, model.id, prices, "", effective_label(period_key(constraint)))
    for v in model.price_variants or ():
        label = ",".join(f"{k}={val}" for k, val in sorted(v.when.items()))
        yield from _price_rows(provider, model.id, v.prices, label, effective_label(period_key(v.constraint)))


def catalog_rows(providers: Sequence[Provider], provider: str | None = None) -> Iterator[PriceRow]:
    for p in providers:
        if provider is None or p.id == provider:
            for m in p.models:
                yield from model_rows(p.id, m)


def diff(old: Sequence[Provider], new: Sequence[Provider]) -> list[DiffRow]:
    """Added, removed and changed prices from ``old`` to ``new`` (models that are equal are skipped
    without being flattened)."""
    old_models = {(p.id, m.id): m for p in old for m in p.models}
    new_models = {(p.id, m.id): m for p in new for m in p.models}
    out: list[DiffRow] = []
    for ident in sorted(old_models.keys() | new_models.keys()):
        a, b = old_models.get(ident), new_models.get(ident)
        if a is not None and b is not None and a == b:
            continue
        before = {r.key: r.price for r in model_rows(ident[0], a)} if a is not None else {}
        after = {r.key: r.price for r in model_rows(ident[0], b)} if b is not None else {}
        for key in sorted(before.keys() | after.keys()):
            was, now = before.get(key), after.get(key)
            if was == now:
                continue
            change = "added" if was is None else "removed" if now is None else "changed"
            out.append(DiffRow(*key, change=change, old=was, new=now))
    return out
