"""Compare what Stripe counted with what we sent, using meter event summaries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import combinations
from typing import Any

import stripe

from otel_aibill.config import Config
from otel_aibill.ledger.base import Ledger, UsageQuery
from otel_aibill.stripe.config import StripeConfig
from otel_aibill.stripe.customers import customer_map, resolve
from otel_aibill.stripe.store import ExportStore


def minute_floor(ts: int) -> int:
    return ts - ts % 60


def minute_ceil(ts: int) -> int:
    return -(-ts // 60) * 60


def meter_ids(client: stripe.StripeClient) -> dict[str, tuple[str, str]]:
    """event_name -> (meter id, status), newest active meter first."""
    found: dict[str, tuple[str, str]] = {}
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = client.v1.billing.meters.list(params)  # type: ignore[arg-type]
        for meter in page.data:
            current = found.get(meter.event_name)
            if current is None or (current[1] != "active" and meter.status == "active"):
                found[meter.event_name] = (meter.id, meter.status)
        if not page.has_more or not page.data:
            return found
        params["starting_after"] = page.data[-1].id


def summary_total(client: stripe.StripeClient, meter_id: str, customer: str, start: int, end: int) -> Decimal:
    """Stripe's aggregated value for [start, end), minute-aligned as the API requires."""
    params: dict[str, Any] = {
        "customer": customer,
        "start_time": minute_floor(start),
        "end_time": minute_ceil(end),
        "limit": 100,
    }
    total = Decimal(0)
    while True:
        page = client.v1.billing.meters.event_summaries.list(meter_id, params)  # type: ignore[arg-type]
        for item in page.data:
            total += Decimal(str(item.aggregated_value))
        if not page.has_more or not page.data:
            return total
        params["starting_after"] = page.data[-1].id


def committed_subset(values: Sequence[int], missing: int, limit: int = 16) -> list[int] | None:
    """Indexes of the only subset of ``values`` summing to ``missing``, else None (ambiguous).

    Used when some events of unknown fate must be in Stripe: if exactly one combination explains
    Stripe's total, those were committed and the rest were not.
    """
    if missing == 0:
        return []
    if missing == sum(values):
        return list(range(len(values)))
    if len(values) > limit:
        return None
    found: list[int] | None = None
    for size in range(1, len(values)):
        for combo in combinations(range(len(values)), size):
            if sum(values[i] for i in combo) == missing:
                if found is not None:
                    return None
                found = list(combo)
    return found


@dataclass(frozen=True, slots=True)
class ReconcileLine:
    """One (Stripe customer, meter) over a range: what the ledger says, what we sent, what Stripe counted."""

    stripe_customer: str
    event_name: str
    ledger_units: Decimal
    sent_units: int
    unsent_units: int  # pending, under review or in error
    stripe_units: Decimal | None  # None: no such meter in Stripe

    @property
    def ok(self) -> bool:
        if self.stripe_units is None or self.stripe_units != self.sent_units:
            return False
        return abs(self.ledger_units - self.sent_units - self.unsent_units) < 1


def ledger_units(
    ledger: Ledger, config: Config, sc: StripeConfig, start: datetime, end: datetime
) -> dict[tuple[str, str], Decimal]:
    """Meter units the ledger's usage in [start, end) is worth, per (Stripe customer, event name)."""
    mapping = customer_map(ledger, config)
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    by = ("customer",) if sc.mode == "cost" else ("customer", "provider", "model")
    for s in ledger.usage_summary(UsageQuery(since=start, until=end, by=by)):
        stripe_id = resolve(s.key.get("customer"), mapping)
        if stripe_id is None:
            continue
        if sc.mode == "cost":
            out[(stripe_id, sc.cost_event_name)] += s.billed.scaleb(sc.unit_exponent)
        else:
            out[(stripe_id, sc.tokens_event_name)] += s.input_tokens + s.output_tokens
    return dict(out)


def reconcile_range(
    ledger: Ledger,
    store: ExportStore,
    client: stripe.StripeClient,
    config: Config,
    sc: StripeConfig,
    start: datetime,
    end: datetime,
) -> list[ReconcileLine]:
    """Per customer and meter; use window-aligned ranges (remainders move < 1 unit across edges)."""
    t0, t1 = minute_floor(int(start.timestamp())), minute_ceil(int(end.timestamp()))
    expected = ledger_units(ledger, config, sc, start, end)
    sent: dict[tuple[str, str], int] = defaultdict(int)
    unsent: dict[tuple[str, str], int] = defaultdict(int)
    for ev in store.events(ts_from=t0, ts_to=t1):
        key = (ev.stripe_customer, ev.event_name)
        if ev.state == "sent":
            sent[key] += ev.value
        elif ev.state in ("pending", "review", "error"):
            unsent[key] += ev.value
        else:
            sent[key] += 0
    meters = meter_ids(client)
    lines = []
    for key in sorted(set(expected) | set(sent) | set(unsent)):
        meter = meters.get(key[1])
        stripe_units = summary_total(client, meter[0], key[0], t0, t1) if meter else None
        lines.append(
            ReconcileLine(key[0], key[1], expected.get(key, Decimal(0)), sent[key], unsent[key], stripe_units)
        )
    return lines
