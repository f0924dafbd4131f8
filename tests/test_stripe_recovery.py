"""Stale batches, Stripe-rejected customers via the webhook, held rows, dry-run, old usage, carry."""

from __future__ import annotations

import json
import random
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe._http_client
from starlette.applications import Starlette
from starlette.testclient import TestClient

from fakestripe import Clock, FakeStripe, Faults
from fakestripe.support import priced
from otel_aibill.stripe import StripeExporter
from otel_aibill.stripe.plan import carry_units
from otel_aibill.stripe.webhook import webhook_route
from test_stripe_export import CUSTOMERS, Harness, make_rows, settings


@pytest.fixture(autouse=True)
def _fast_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe._http_client.HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(stripe._http_client.HTTPClient, "MAX_DELAY", 0.02)


def test_carry_one_million_sub_unit_amounts_never_drifts() -> None:
    rng = random.Random(42)
    remainder, sent, total = Decimal(0), 0, Decimal(0)
    for _ in range(1_000_000):
        amount = Decimal(rng.randint(0, 999_999)).scaleb(-6)  # all below one unit
        total += amount
        units, remainder = carry_units(amount, remainder)
        sent += units
    assert sent == int(total.to_integral_value(rounding=ROUND_FLOOR))
    assert 0 <= remainder < 1


def test_carry_end_to_end_sub_unit_rows(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(
            tmp_path, fake, settings(unit_exponent=2), store_url=store_url
        )  # cents: every row is a fraction of a unit
        now = int(fake.clock())
        rows = [priced(i, "acme", now - 7200 + i * 20, Decimal("0.00333")) for i in range(1, 301)]
        for chunk in range(0, 300, 50):  # several batches, so the remainder crosses batches
            h.add(rows[chunk : chunk + 50])
            h.settle()
        assert fake.totals(h.sc.cost_event_name) == {"cus_acme": 99}  # floor(300 * 0.333) = 99


@pytest.mark.parametrize(("kind", "committed"), [("lost", True), ("reset", False)])
def test_unconfirmed_past_dedupe_window_is_reconciled_not_blindly_resent(
    tmp_path: Path, kind: str, committed: bool, store_url: str
) -> None:
    clock = Clock()
    with FakeStripe(clock=clock, faults=Faults(rate=1.0, kinds=(kind,))) as fake:
        h = Harness(tmp_path, fake, settings(max_network_retries=0), store_url=store_url)
        h.add([priced(i, "acme", int(clock()) - 600 - i, "0.5") for i in range(1, 4)])
        report = h.exporter().run_once()
        assert report.pending == 1  # one event, attempted, fate unknown
        assert fake.totals(h.sc.cost_event_name) == ({"cus_acme": 1_500_000} if committed else {})
        fake.faults.rate = 0.0
        clock.advance(25 * 3600)  # Stripe has forgotten the identifier and the idempotency key
        report = h.exporter().run_once()
        assert report.reconciled == 1 and report.pending == 0
        assert report.events_sent == (0 if committed else 1)
        assert fake.totals(h.sc.cost_event_name) == {"cus_acme": 1_500_000}


def test_rejected_customer_is_held_and_is_sent_when_fixed(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(api="v2"), store_url=store_url)
        fake.state.customers.discard("cus_globex")  # Stripe does not know this one
        secret = "whsec_test"
        app = Starlette(routes=[webhook_route(h.store, secret, h.client)])
        web = TestClient(app)
        fake.webhook_secret = secret
        fake.webhook_url = "http://testserver/stripe/webhook"
        h.add(make_rows(int(fake.clock()), n=40))
        h.settle()
        assert "cus_globex" not in fake.totals(h.sc.cost_event_name)

        statuses = fake.deliver_webhooks(post=web.post)
        assert statuses and set(statuses) == {200}
        assert "cus_globex" in h.store.rejected_customers()
        errors = h.store.webhook_errors()
        assert {e.code for e in errors} == {"meter_event_customer_not_found"}
        dead = [d for d in h.store.held() if d.reason == "rejected_customer"]
        assert dead and all(d.row.stripe_customer == "cus_globex" for d in dead)

        # Still rejected: nothing is sent for it.
        h.settle()
        assert "cus_globex" not in fake.totals(h.sc.cost_event_name)
        # The customer is created in Stripe and the operator clears the rejection: sent, exactly.
        fake.add_customer("cus_globex")
        h.store.clear_rejections("cus_globex")
        h.settle()
        h.check()


def test_webhook_refuses_a_bad_signature(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(), store_url=store_url)
        web = TestClient(Starlette(routes=[webhook_route(h.store, "whsec_right")]))
        body = json.dumps(
            {"id": "evt_1", "object": "v2.core.event", "type": "v1.billing.meter.no_meter_found"}
        )
        assert (
            web.post("/stripe/webhook", content=body, headers={"Stripe-Signature": "t=1,v1=00"}).status_code
            == 400
        )
        assert h.store.webhook_errors() == []


def test_mapping_added_later_releases_held_rows(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(), store_url=store_url)
        fake.add_customer("cus_nomap")
        now = int(fake.clock())
        h.add([priced(1, "nomap", now - 100, "1.25"), priced(2, "acme", now - 50, "2")])
        h.settle()
        assert [d.reason for d in h.store.held()] == ["no_stripe_mapping"]
        h.ledger.set_customer("nomap", "cus_nomap")
        h.settle()
        assert h.store.held() == []
        assert fake.totals(h.sc.cost_event_name) == {"cus_acme": 2_000_000, "cus_nomap": 1_250_000}


def test_usage_older_than_stripe_accepts_is_held_not_sent(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(), store_url=store_url)
        now = int(fake.clock())
        h.add([priced(1, "acme", now - 40 * 86400, "3"), priced(2, "acme", now - 60, "1")])
        report = h.exporter().run_once()
        assert report.held == {"too_old": 1}
        assert [(d.row.seq, d.reason) for d in h.store.held()] == [(1, "too_old")]
        assert fake.totals(h.sc.cost_event_name) == {"cus_acme": 1_000_000}


def test_dry_run_records_and_lists_without_consuming(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(), store_url=store_url)
        now = int(fake.clock())
        h.add([priced(1, "acme", now - 100, "0.0000015"), priced(2, "cus_direct", now - 90, "2")])
        exp = StripeExporter(h.ledger, h.store, h.config, None, stripe_settings=h.sc, clock=fake.clock)
        report = exp.run_once()
        assert report.dry_run
        payloads = sorted(
            (e["payload"]["stripe_customer_id"], e["payload"]["value"]) for e in report.dry_run_events
        )
        assert payloads == [("cus_acme", "1"), ("cus_direct", "2000000")]
        assert h.store.dry_run() == report.dry_run_events
        assert len(h.ledger.exportable()) == 2  # nothing was consumed
        before = len(fake.requests)
        h.settle()
        assert len(fake.requests) > before
        assert fake.totals(h.sc.cost_event_name) == {"cus_acme": 1, "cus_direct": 2_000_000}


def test_audit_event_members_are_the_rows_summed(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(mode="tokens"), store_url=store_url)
        h.add(make_rows(int(fake.clock()), n=30))
        h.settle()
        seqs_by_customer: dict[str, set[int]] = {}
        for ev in h.store.events(states=["sent"]):
            members = h.store.event_members(ev.identifier)
            assert members
            seqs_by_customer.setdefault(ev.stripe_customer, set()).update(members)
        expected: dict[str, set[int]] = {}
        for i, p in enumerate(h.rows, start=1):
            if p.usage.customer in CUSTOMERS:
                expected.setdefault(CUSTOMERS[p.usage.customer], set()).add(i)
        assert seqs_by_customer == expected


def _unused(*_: Any) -> None:
    pass
