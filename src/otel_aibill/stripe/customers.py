"""Which Stripe customer pays for an app customer's usage."""

from __future__ import annotations

from collections.abc import Mapping

from otel_aibill.config import Config
from otel_aibill.ledger.base import Ledger
from otel_aibill.usage import UNATTRIBUTED


def customer_map(ledger: Ledger, config: Config) -> dict[str, str]:
    """The configured ``[customers]`` mapping, overridden by the ledger's customer table."""
    mapping = dict(config.customers)
    for c in ledger.customers():
        if c.stripe_customer_id:
            mapping[c.customer_id] = c.stripe_customer_id
    return mapping


def resolve(customer: str | None, mapping: Mapping[str, str]) -> str | None:
    """A ``cus_`` id is already Stripe's; anything else goes through the mapping."""
    if not customer or customer == UNATTRIBUTED:
        return None
    if customer in mapping:
        return mapping[customer]
    if customer.startswith("cus_"):
        return customer
    return None
