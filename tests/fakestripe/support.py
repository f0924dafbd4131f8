"""Test helpers: the real ledger, priced rows, an SDK client pointed at the fake Stripe."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import stripe

from fakestripe.server import API_KEY, FakeStripe
from otel_aibill.ledger import open_ledger
from otel_aibill.stripe.config import StripeConfig, StripeEnv
from otel_aibill.stripe.transport import make_client
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord


def open_test_ledger(url: str) -> Any:
    return open_ledger(url)


def priced(
    n: int,
    customer: str | None,
    start_s: int,
    billed: Decimal | str,
    *,
    provider: str = "openai",
    model: str = "gpt-4o",
    input_tokens: int = 100,
    output_tokens: int = 20,
    cache_read: int = 0,
    cache_write: int = 0,
    currency: str = "USD",
) -> PricedUsage:
    usage = UsageRecord(
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        start_time_ns=start_s * 1_000_000_000,
        end_time_ns=start_s * 1_000_000_000 + 1,
        provider=provider,
        model=model,
        operation="chat",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        customer=customer,
    )
    b = Decimal(billed)
    return PricedUsage(usage, PriceStatus.PRICED, cost=b, billed=b, currency=currency)


def client_for(fake: FakeStripe, sc: StripeConfig) -> stripe.StripeClient:
    client = make_client(StripeEnv(API_KEY, fake.api_base, fake.meter_events_base, None), sc)
    assert client is not None
    return client
