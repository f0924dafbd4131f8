"""The Stripe half of the demo: the meter events its usage would become, as a dry run.

The demo's customers are given demo Stripe ids (``cus_demo_<name>``, only where a customer has
no Stripe id yet), so the exporter's own dry run plans real events for them; nothing is sent, no
key is needed. The events are listed with, per customer, their sum next to the billed amount
(cost mode) or the tokens (tokens mode) they come from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from otel_aibill.config import Config
from otel_aibill.display import cell, visible
from otel_aibill.ledger.base import Ledger, UsageQuery
from otel_aibill.report import decimal_text


def demo_stripe_id(customer: str) -> str:
    return f"cus_demo_{customer}"


def map_demo_customers(ledger: Ledger, config: Config, customers: Iterable[str]) -> dict[str, str]:
    """Give each demo customer without a Stripe id (in the configuration or the ledger) a demo one;
    returns every demo customer's Stripe id."""
    known = dict(config.customers)
    known.update({c.customer_id: c.stripe_customer_id for c in ledger.customers() if c.stripe_customer_id})
    out = {}
    for customer in customers:
        if customer not in known:
            ledger.set_customer(customer, demo_stripe_id(customer), f"{customer} (demo)")
            known[customer] = demo_stripe_id(customer)
        out[customer] = known[customer]
    return out


@dataclass(frozen=True, slots=True)
class CustomerTotal:
    customer: str
    stripe_customer: str
    events: int
    units: int  # sum of the event values
    source: Decimal  # billed amount (cost mode) or tokens (tokens mode) of the ledger rows


@dataclass(frozen=True, slots=True)
class DryRun:
    report: Any  # the exporter's ExportReport
    totals: list[CustomerTotal]
    held: dict[str, int]  # as ``stripe held`` counts it


def dry_run(db_url: str, config: Config, mode: str, customers: Iterable[str]) -> DryRun:
    """Map the demo customers and run the exporter's dry run in ``mode``, with per-customer totals
    (the ledger's side from its usage summary) and what is held back."""
    from otel_aibill.ledger import open_ledger
    from otel_aibill.stripe.config import stripe_config
    from otel_aibill.stripe.exporter import StripeExporter
    from otel_aibill.stripe.store import ExportStore

    sc = stripe_config(config).model_copy(update={"mode": mode})
    ledger = open_ledger(db_url)
    store = ExportStore(db_url)
    try:
        ids = map_demo_customers(ledger, config, customers)
        exporter = StripeExporter(ledger, store, config, None, stripe_settings=sc)
        report = exporter.run_once()
        held = exporter.held_counts()
        summary = ledger.usage_summary(UsageQuery(by=("customer",)))
    finally:
        store.close()
        ledger.close()
    source: dict[str, Decimal] = {}
    for row in summary:
        c = row.key["customer"]
        amount = row.billed if mode == "cost" else Decimal(row.input_tokens + row.output_tokens)
        source[c] = source.get(c, Decimal(0)) + amount
    totals = []
    for customer, stripe_id in ids.items():
        mine = [e for e in report.dry_run_events if e["payload"][sc.customer_payload_key] == stripe_id]
        units = sum(int(e["value"]) for e in mine)
        totals.append(CustomerTotal(customer, stripe_id, len(mine), units, source.get(customer, Decimal(0))))
    return DryRun(report, totals, held)


def render(run: DryRun, config: Config, mode: str, console: Console) -> None:
    from otel_aibill.stripe.config import currency_of, stripe_config

    report, totals = run.report, run.totals
    sc = stripe_config(config)
    names = {t.stripe_customer: t.customer for t in totals}
    table = Table(title=f"Stripe meter events (dry run, {mode} mode: nothing sent, no STRIPE_API_KEY)")
    columns = ["customer", "Stripe customer", "event", "hour (UTC)"]
    if mode == "tokens":
        columns.insert(3, "dimensions")
    for col in columns:
        table.add_column(col, overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    order = {"input": 0, "cached_input": 1, "cached_write": 2, "output": 3}

    def key(ev: dict[str, Any]) -> tuple[Any, ...]:
        p = ev["payload"]
        kind = p.get("token_type", "")
        return (p[sc.customer_payload_key], ev["timestamp"], p.get("model", ""), order.get(kind, 9), kind)

    for ev in sorted(report.dry_run_events, key=key):
        payload = ev["payload"]
        stripe_id = payload[sc.customer_payload_key]
        dims = {k: v for k, v in payload.items() if k not in (sc.customer_payload_key, sc.value_payload_key)}
        when = datetime.fromtimestamp(ev["timestamp"], UTC).strftime("%Y-%m-%d %H:00")
        cells: list[Any] = [cell(names.get(stripe_id, "")), cell(stripe_id), cell(ev["event_name"]), when]
        if mode == "tokens":
            cells.insert(3, cell(" ".join(f"{k}={v}" for k, v in dims.items())))
        table.add_row(*cells, f"{int(ev['value']):,}")
    console.print(table)
    currency = currency_of(config, sc)
    for t in totals:
        if mode == "cost":
            unit = Decimal(1).scaleb(-sc.unit_exponent)
            said = f"{t.units:,} units of {unit} {currency} = {Decimal(t.units) * unit} {currency}"
            source = f"billed {decimal_text(t.source.normalize())} {currency}"
        else:
            said, source = f"{t.units:,} tokens", f"{int(t.source):,} tokens in the ledger"
        events = f"{t.events} event{'' if t.events == 1 else 's'}"
        who = f"{visible(t.customer)} → {visible(t.stripe_customer)}"
        console.print(f"{escape(who)}: {events}, {said} ({source})")
    for reason, n in run.held.items():
        console.print(f"[yellow]held[/yellow] {n:,} rows: {escape(visible(reason))}")
