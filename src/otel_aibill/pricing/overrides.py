"""User prices from config: overrides of catalog prices and custom models, each with a start date."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from otel_aibill.config import PriceOverride
from otel_aibill.pricing.clock import datetime_to_ns
from otel_aibill.pricing.rates import PriceValue

NEVER = -(2**63)
"""Effective-from instant of an override without a date: always in force."""


@dataclass(frozen=True, slots=True)
class Override:
    """One configured price, in genai-prices price keys, in force from ``from_ns``."""

    index: int  # position in the config, the tie-breaker between equal dates
    from_ns: int
    service_tier: str | None
    prices: Mapping[str, PriceValue]

    @property
    def label(self) -> str:
        return f"override#{self.index}"


def compile_override(index: int, o: PriceOverride) -> Override:
    prices: dict[str, PriceValue] = {"input_mtok": o.input_mtok, "output_mtok": o.output_mtok}
    if o.cache_read_mtok is not None:
        prices["cache_read_mtok"] = o.cache_read_mtok
    if o.cache_write_mtok is not None:
        prices["cache_write_mtok"] = o.cache_write_mtok
    if o.request is not None:
        prices["requests_kcount"] = o.request.scaleb(3)  # genai-prices prices requests per thousand
    return Override(
        index=index,
        from_ns=NEVER if o.effective_from is None else datetime_to_ns(o.effective_from),
        service_tier=o.service_tier.lower() if o.service_tier else None,
        prices=prices,
    )


def override_in_force(history: Sequence[Override], tier: str | None, ns: int) -> Override | None:
    """The override that prices a call at ``ns`` served on ``tier``.

    Overrides for that exact tier come first; untiered overrides apply to every tier without one.
    Within each, the latest ``effective_from`` at or before ``ns`` wins, then the later config entry.
    """
    best: Override | None = None
    for want in (tier, None) if tier is not None else (None,):
        for o in history:
            if (
                o.service_tier == want
                and o.from_ns <= ns
                and (best is None or (o.from_ns, o.index) > (best.from_ns, best.index))
            ):
                best = o
        if best is not None:
            return best
    return None
