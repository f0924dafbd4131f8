"""Pricing: usage → provider cost (genai-prices catalog + overrides) → billed amount (markup rules).

Pure: no I/O beyond reading the bundled price data. Money is ``Decimal`` throughout and never rounded.
"""

from __future__ import annotations

from otel_aibill.pricing.catalog import Catalog, Line, Miss, price_context
from otel_aibill.pricing.pricer import Pricer
from otel_aibill.pricing.providers import pricing_provider_id
from otel_aibill.pricing.rates import Rates, UsageError

__all__ = ["Catalog", "Line", "Miss", "Pricer", "Rates", "UsageError", "price_context", "pricing_provider_id"]
