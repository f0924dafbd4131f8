"""Stripe export: usage in the ledger becomes Stripe meter events, exactly once.

``StripeExporter(ledger, store, config, client).run_once()`` does one pass; ``run_forever``
loops. ``make_client`` builds the SDK client from ``STRIPE_API_KEY`` (None: dry-run).
"""

from __future__ import annotations

from otel_aibill.stripe.config import StripeConfig, StripeEnv, stripe_config
from otel_aibill.stripe.exporter import ExportReport, StripeExporter
from otel_aibill.stripe.store import ExportStore
from otel_aibill.stripe.transport import make_client

__all__ = [
    "ExportReport",
    "ExportStore",
    "StripeConfig",
    "StripeEnv",
    "StripeExporter",
    "make_client",
    "stripe_config",
]
