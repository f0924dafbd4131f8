"""Which customer pays for a span: configured attribute keys, span first, then resource.

Trace-level attribution (a usage span taking the customer of another span of its trace)
is stateful and lives in the pipeline; this module is the pure part.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_aibill.usage import MAX_TEXT_CHARS, Attributes, is_unicode

MAX_CUSTOMER_LEN = MAX_TEXT_CHARS


def _as_customer(value: object) -> str | None:
    # Ints are accepted because numeric tenant ids are common; bools and floats are not ids.
    if isinstance(value, str):
        value = value.strip()
        if 0 < len(value) <= MAX_CUSTOMER_LEN and (value.isascii() or is_unicode(value)):
            return value
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def customer_of(attributes: Attributes, resource: Attributes, keys: Sequence[str]) -> str | None:
    """The first usable customer id under ``keys``: every key on the span, then on the resource."""
    if attributes:
        for key in keys:
            value = attributes.get(key)
            if value is not None and (customer := _as_customer(value)) is not None:
                return customer
    if resource:
        for key in keys:
            value = resource.get(key)
            if value is not None and (customer := _as_customer(value)) is not None:
                return customer
    return None


def is_stripe_customer_id(customer: str) -> bool:
    return customer.startswith("cus_")
