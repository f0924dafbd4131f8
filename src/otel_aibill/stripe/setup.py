"""``otel-aibill stripe setup``: the meters (and, in cost mode, product and price) the export needs.

Idempotent: existing meters are found by event name first, the product has a fixed id and the
price a lookup key, so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import stripe

from otel_aibill.stripe.config import StripeConfig
from otel_aibill.stripe.reconcile import meter_ids

_ZERO_DECIMAL = {
    "BIF",
    "CLP",
    "DJF",
    "GNF",
    "JPY",
    "KMF",
    "KRW",
    "MGA",
    "PYG",
    "RWF",
    "UGX",
    "VND",
    "VUV",
    "XAF",
    "XOF",
    "XPF",
}
_THREE_DECIMAL = {"BHD", "JOD", "KWD", "OMR", "TND"}


class SetupError(RuntimeError):
    """Stripe already has something under our name that would count usage differently."""


@dataclass(frozen=True, slots=True)
class SetupAction:
    kind: str  # meter | product | price
    id: str
    action: str  # created | exists | reactivated
    detail: str


def unit_amount_decimal(currency: str, unit_exponent: int) -> str:
    """Price of one meter unit in the currency's minor unit: 1e-6 USD is "0.0001" cents."""
    code = currency.upper()
    minor = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    return format(Decimal(1).scaleb(minor - unit_exponent), "f")


TOKEN_DIMENSIONS = ("model", "token_type")
"""Tokens mode: the payload keys Stripe's LLM token billing prices by, grouped on by the meter."""


def event_names(sc: StripeConfig) -> list[str]:
    return [sc.cost_event_name if sc.mode == "cost" else sc.tokens_event_name]


def dimension_keys(sc: StripeConfig) -> list[str]:
    return list(TOKEN_DIMENSIONS) if sc.mode == "tokens" else []


def meter_mismatches(meter: Any, sc: StripeConfig) -> list[str]:
    """How an existing meter differs from what the export sends (only its name can change later)."""
    wanted = {
        "default_aggregation.formula": "sum",
        "customer_mapping.event_payload_key": sc.customer_payload_key,
        "customer_mapping.type": "by_id",
        "value_settings.event_payload_key": sc.value_payload_key,
    }
    data = meter.to_dict() if isinstance(meter, stripe.StripeObject) else meter
    out = []
    for path, want in wanted.items():
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != want:
            out.append(f"{path} is {node!r}, the export needs {want!r}")
    have = data.get("dimension_payload_keys") if isinstance(data, dict) else None
    missing = [k for k in dimension_keys(sc) if k not in (have or ())]
    if missing:
        out.append(f"dimension_payload_keys is {have!r}, the export needs {dimension_keys(sc)!r}")
    return out


def ensure_meters(client: stripe.StripeClient, sc: StripeConfig) -> list[SetupAction]:
    existing = meter_ids(client)
    actions = []
    for name in event_names(sc):
        found = existing.get(name)
        if found:
            problems = meter_mismatches(client.v1.billing.meters.retrieve(found[0]), sc)
            if problems:
                raise SetupError(
                    f"meter {found[0]} for event {name!r} cannot be used: {'; '.join(problems)}."
                    " A meter's settings cannot change: archive it in Stripe, or set another"
                    " event name in [stripe]"
                )
        if found and found[1] == "active":
            actions.append(SetupAction("meter", found[0], "exists", name))
        elif found:
            client.v1.billing.meters.reactivate(found[0])
            actions.append(SetupAction("meter", found[0], "reactivated", name))
        else:
            params: dict[str, Any] = {
                "display_name": "AI usage cost" if sc.mode == "cost" else "LLM tokens",
                "event_name": name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": sc.customer_payload_key, "type": "by_id"},
                "value_settings": {"event_payload_key": sc.value_payload_key},
            }
            if dimension_keys(sc):
                params["dimension_payload_keys"] = dimension_keys(sc)
            meter = client.v1.billing.meters.create(params)  # type: ignore[arg-type]
            actions.append(SetupAction("meter", meter.id, "created", name))
    return actions


def ensure_price(
    client: stripe.StripeClient, sc: StripeConfig, currency: str, meter_id: str
) -> list[SetupAction]:
    """A product and a metered per-unit price for the cost meter."""
    actions = []
    product_id = f"otel_aibill_{sc.cost_event_name}"
    try:
        client.v1.products.retrieve(product_id)
        actions.append(SetupAction("product", product_id, "exists", sc.product_name))
    except stripe.InvalidRequestError as exc:
        if exc.code != "resource_missing":
            raise
        client.v1.products.create({"id": product_id, "name": sc.product_name})
        actions.append(SetupAction("product", product_id, "created", sc.product_name))
    lookup = f"{product_id}_{currency.lower()}_e{sc.unit_exponent}"
    amount = unit_amount_decimal(currency, sc.unit_exponent)
    found = client.v1.prices.list({"lookup_keys": [lookup], "limit": 1})
    if found.data:
        actions.append(
            SetupAction("price", found.data[0].id, "exists", f"{amount} {currency} minor units/unit")
        )
        return actions
    price = client.v1.prices.create(
        {
            "currency": currency.lower(),
            "product": product_id,
            "unit_amount_decimal": Decimal(amount),
            "billing_scheme": "per_unit",
            "lookup_key": lookup,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        }
    )
    actions.append(SetupAction("price", price.id, "created", f"{amount} {currency} minor units/unit"))
    return actions
