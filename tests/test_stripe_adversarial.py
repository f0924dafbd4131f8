"""Failure paths of the Stripe export found by review: each test once failed against the code."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe._http_client
from starlette.applications import Starlette
from starlette.testclient import TestClient

from fakestripe import FakeStripe
from fakestripe.support import client_for, priced
from otel_aibill.stripe import StripeExporter
from otel_aibill.stripe.plan import token_types
from otel_aibill.stripe.setup import SetupError, ensure_meters
from otel_aibill.stripe.store import StoredEvent
from otel_aibill.stripe.transport import Outcome, SendResult, isolate, rfc3339
from otel_aibill.stripe.webhook import webhook_route
from test_stripe_export import Harness, make_rows, settings, store_execute


@pytest.fixture(autouse=True)
def _fast_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe._http_client.HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(stripe._http_client.HTTPClient, "MAX_DELAY", 0.02)


def test_a_row_with_impossible_token_parts_is_held_not_blocking_the_export(
    tmp_path: Path, store_url: str
) -> None:
    """Cache reads above the prompt total (a provider convention the normalizer missed) must not
    stop every later row from being exported: the row is held, the rest goes out."""
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(mode="tokens"), store_url=store_url)
        now = int(fake.clock())
        h.add(
            [
                priced(1, "acme", now - 100, "1", input_tokens=10, output_tokens=5, cache_read=60),
                priced(2, "acme", now - 90, "1", input_tokens=100, output_tokens=20),
            ]
        )
        h.settle()
        assert fake.totals(h.sc.tokens_event_name) == {"cus_acme": 120}
        assert [(d.row.seq, d.reason) for d in h.store.held()] == [(1, "invalid_tokens")]
        h.add([priced(3, "acme", now - 80, "1", input_tokens=7, output_tokens=3)])
        h.settle()
        assert fake.totals(h.sc.tokens_event_name) == {"cus_acme": 130}


class _Interleaved:
    """A store whose first ``known_seqs`` lets another exporter run before answering: two
    exporters (``serve`` and a manual ``stripe export``) between reading rows and staging them."""

    def __init__(self, store: Any, other: Any, at: int) -> None:
        self._store, self._other, self._calls, self._at = store, other, 0, at

    def known_seqs(self, seqs: Any) -> Any:
        found = self._store.known_seqs(seqs)
        self._calls += 1
        if self._calls == self._at:
            self._other()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("at", [1, 2])  # before the first page is staged; between two pages
def test_two_exporters_reading_the_same_rows_bill_them_once(tmp_path: Path, at: int, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(page_rows=2), store_url=store_url)
        now = int(fake.clock())
        h.add([priced(i, "acme", now - 100 - i, "1.5") for i in range(1, 5)])
        other = h.exporter()
        reports: list[Any] = []
        racing = StripeExporter(
            h.ledger,
            _Interleaved(h.store, lambda: reports.append(other.run_once()), at),  # type: ignore[arg-type]
            h.config,
            h.client,
            stripe_settings=h.sc,
            clock=fake.clock,
        )
        racing.run_once()
        assert reports[0].errors == ["another exporter is running on this database; nothing done"]
        h.settle()
        assert fake.totals(h.sc.cost_event_name) == {"cus_acme": 6_000_000}
        assert len(h.store.events(states=["sent"])) == 1
        h.check()


@pytest.mark.parametrize(
    ("field", "existing"),
    [
        ("value_settings", {"event_payload_key": "tokens"}),
        ("customer_mapping", {"event_payload_key": "customer", "type": "by_id"}),
        ("default_aggregation", {"formula": "last"}),
    ],
)
def test_setup_refuses_an_existing_meter_that_counts_differently(field: str, existing: Any) -> None:
    """A meter for our event name that reads another payload key (or does not sum) would silently
    drop or misprice every event; setup says so instead of reusing it."""
    with FakeStripe() as fake:
        sc = settings()
        client = client_for(fake, sc)
        params: dict[str, Any] = {
            "display_name": "someone else's",
            "event_name": sc.cost_event_name,
            "default_aggregation": {"formula": "sum"},
        }
        params[field] = existing
        client.v1.billing.meters.create(params)  # type: ignore[arg-type]
        with pytest.raises(SetupError, match=field.split("_")[0]):
            ensure_meters(client, sc)


def test_a_rejected_customer_holds_only_the_rows_of_the_events_taken_back(
    tmp_path: Path, store_url: str
) -> None:
    """Events of one batch sent before the rejection's start stay counted in Stripe; holding their
    rows too would send them a second time once the customer is released."""
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(), store_url=store_url)
        now = int(fake.clock())
        h.add([priced(1, "acme", now - 2 * 3600, "1"), priced(2, "acme", now - 60, "2")])
        h.settle()
        early, late = sorted(h.store.events(states=["sent"]), key=lambda e: e.window_start)
        # The earlier window's event went out two hours before the later one (retries in between).
        store_execute(
            h.store,
            "UPDATE stripe_event SET sent_at = ? WHERE identifier = ?",
            (now - 7200, early.identifier),
        )
        h.store.reject_customer("cus_acme", "meter_event_customer_not_found", "gone", now - 3600, now)
        assert h.store.event(early.identifier).state == "sent"  # type: ignore[union-attr]
        held = {d.row.seq for d in h.store.held()}
        assert held == set(h.store.event_members(late.identifier)) == {2}


def _reject_after_first_send(h: Harness, fake: FakeStripe, customer: str) -> list[str]:
    """Export with Stripe losing ``customer`` right after the first event went out (two hours
    before the others): the later events of the same batch fail asynchronously, the first stays
    counted."""
    first: list[str] = []

    def hook(point: str, ids: Any) -> None:
        if point == "sent" and not first:
            first.extend(ids)
            fake.state.customers.discard(customer)

    exp = h.exporter(hook=hook)
    for _ in range(5):
        if exp.run_once().settled:
            break
    store_execute(
        h.store, "UPDATE stripe_event SET sent_at = sent_at - 7200 WHERE identifier = ?", (first[0],)
    )
    secret = "whsec_test"
    fake.webhook_secret, fake.webhook_url = secret, "http://testserver/stripe/webhook"
    web = TestClient(Starlette(routes=[webhook_route(h.store, secret, h.client)]))
    assert set(fake.deliver_webhooks(post=web.post)) == {200}
    assert customer in h.store.rejected_customers()
    return first


def test_rejected_then_released_customer_is_billed_exactly_once_with_its_remainder(
    tmp_path: Path, store_url: str
) -> None:
    """Sub-unit amounts: the carry taken back with the rejected events and applied again when their
    rows are re-planned must neither count twice nor vanish."""
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(concurrency=1), store_url=store_url)
        now = int(fake.clock())
        h.add([priced(i, "acme", now - 2 * 3600 - i, "0.3333336") for i in range(1, 4)])
        h.add([priced(i, "acme", now - 60 - i, "0.6666668") for i in range(4, 7)])
        first = _reject_after_first_send(h, fake, "cus_acme")
        kept = h.store.event(first[0])
        assert kept is not None and kept.state == "sent"
        rejected = h.store.events(states=["rejected"])
        assert len(rejected) == 1
        held = {d.row.seq for d in h.store.held()}
        assert held == set(h.store.event_members(rejected[0].identifier))
        assert held.isdisjoint(h.store.event_members(kept.identifier)) and len(held) == 3
        fake.add_customer("cus_acme")
        h.store.clear_rejections("cus_acme")
        h.settle()
        # floor(3 * 333333.6 + 3 * 666666.8) = floor(3000001.2); dropping the carry of the events
        # taken back would give 3_000_000 or 3_000_002 depending on which window went out first
        assert fake.totals(h.sc.cost_event_name) == {"cus_acme": 3_000_001} == h.expected()
        h.check()


def test_rejected_token_types_hold_only_their_part_of_a_row(tmp_path: Path, store_url: str) -> None:
    """Tokens mode: one row is several events (one per token type). When only some of them are
    taken back, the row is held reduced to those types, so the counted ones are not sent again."""
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(mode="tokens", concurrency=1), store_url=store_url)
        now = int(fake.clock())
        h.add(
            [
                priced(1, "acme", now - 60, "1", input_tokens=100, output_tokens=20, cache_read=30),
                priced(
                    2,
                    "acme",
                    now - 50,
                    "1",
                    provider="anthropic",
                    model="claude-sonnet-4",
                    input_tokens=90,
                    output_tokens=9,
                    cache_read=40,
                    cache_write=20,
                ),
            ]
        )
        first = _reject_after_first_send(h, fake, "cus_acme")
        counted = h.store.event(first[0])
        assert counted is not None and counted.state == "sent"
        [held_kind] = [v for k, v in counted.dims if k == "token_type"]
        by_seq = {d.row.seq: d.row for d in h.store.held()}
        assert set(by_seq) == {1, 2}
        model = dict(counted.dims)["model"]
        seq = 1 if model == "openai/gpt-4o" else 2
        kinds = {k for k, _ in token_types(by_seq[seq], ("anthropic",))}
        assert held_kind not in kinds and kinds  # the counted type is not held again
        fake.add_customer("cus_acme")
        h.store.clear_rejections("cus_acme")
        h.settle()
        assert fake.totals(h.sc.tokens_event_name) == {"cus_acme": 120 + 99} == h.expected()
        h.check()


def test_two_rejections_of_one_row_hold_the_union_of_their_parts(tmp_path: Path, store_url: str) -> None:
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings(mode="tokens"), store_url=store_url)
        now = int(fake.clock())
        h.add([priced(1, "acme", now - 60, "1", input_tokens=100, output_tokens=20, cache_read=30)])
        h.settle()
        events = {dict(e.dims)["token_type"]: e for e in h.store.events(states=["sent"])}
        assert set(events) == {"input", "cached_input", "output"}
        for at, kind in enumerate(("input", "cached_input", "output")):
            store_execute(
                h.store,
                "UPDATE stripe_event SET sent_at = ? WHERE identifier = ?",
                (now + 100 * at, events[kind].identifier),
            )
        h.store.reject_customer("cus_acme", "meter_event_customer_not_found", "gone", now + 200, now)
        [dl] = h.store.held()
        assert token_types(dl.row, ()) == [("output", 20)]
        h.store.reject_customer("cus_acme", "meter_event_customer_not_found", "gone", now + 100, now)
        [dl] = h.store.held()
        assert token_types(dl.row, ()) == [("cached_input", 30), ("output", 20)]
        assert h.store.event(events["input"].identifier).state == "sent"  # type: ignore[union-attr]


class _Stop(Exception):
    pass


def _finalize_only(h: Harness) -> list[Any]:
    """Plan and persist a batch without sending it; its events, pending."""

    def hook(point: str, ids: Any) -> None:
        if point == "finalized":
            raise _Stop

    with pytest.raises(_Stop):
        h.exporter(hook=hook).run_once()
    pending = h.store.events(states=["pending"])
    assert len(pending) > 8
    return pending


def test_v2_duplicate_in_a_chunk_is_isolated_not_taken_for_the_whole_chunk(
    tmp_path: Path, store_url: str
) -> None:
    """One event of a chunk reached Stripe before (its answer was lost). A 400 duplicate_meter_event
    for the request refuses all of it: taken for every event, the others would never be sent."""
    with FakeStripe(stream_sync_errors=True) as fake:
        h = Harness(tmp_path, fake, settings(api="v2"), store_url=store_url)
        h.add(make_rows(int(fake.clock()), n=40))
        pending = _finalize_only(h)
        delivered = pending[len(pending) // 3]
        # Delivered by an earlier, differently composed request (so under another idempotency key).
        token = h.client.v2.billing.meter_event_session.create().authentication_token
        body = {
            "event_name": delivered.event_name,
            "identifier": delivered.identifier,
            "timestamp": rfc3339(delivered.timestamp),
            "payload": delivered.payload(h.sc.customer_payload_key, h.sc.value_payload_key),
        }
        h.client.v2.billing.meter_event_stream.create(
            {"events": [body]},  # type: ignore[list-item]
            {"api_key": token, "idempotency_key": "an-earlier-request"},
        )
        exp = h.exporter()
        report = exp.run_once()
        assert report.events_already_in_stripe == 1
        assert report.events_sent == len(pending) - 1
        assert h.store.events(states=["error", "pending"]) == []
        h.check()


def test_v2_one_bad_event_in_a_chunk_is_the_only_one_marked(tmp_path: Path, store_url: str) -> None:
    with FakeStripe(stream_sync_errors=True) as fake:
        h = Harness(tmp_path, fake, settings(api="v2"), store_url=store_url)
        h.add(make_rows(int(fake.clock()), n=40))
        pending = _finalize_only(h)
        bad = pending[-2]
        store_execute(h.store, "UPDATE stripe_event SET value = -5 WHERE identifier = ?", (bad.identifier,))
        report = h.exporter().run_once()
        [marked] = h.store.events(states=["error"])
        assert (marked.identifier, marked.error_code) == (bad.identifier, "payload_invalid_value")
        assert report.events_sent == len(pending) - 1 and report.rejected == 1
        # Halving: one bad event costs about 2·log2(n) requests, not one per event.
        assert report.requests <= 2 * math.ceil(math.log2(len(pending))) + 1
        sent = h.store.events(states=["sent"])
        by_customer: dict[str, int] = {}
        for e in sent:
            by_customer[e.stripe_customer] = by_customer.get(e.stripe_customer, 0) + e.value
        assert fake.totals(h.sc.cost_event_name) == by_customer


def test_isolate_sends_a_lone_event_once_and_keeps_meter_errors_of_one_name_whole() -> None:
    events = [_stored(i, "aibill_cost") for i in range(8)]
    calls: list[int] = []

    def meter_down(evs: Any) -> SendResult:
        calls.append(len(evs))
        return SendResult(Outcome.METER, "archived_meter", "archived", 400)

    assert [len(p) for p, _ in isolate(events, meter_down)] == [8] and calls == [8]
    calls.clear()

    def refuse_all(evs: Any) -> SendResult:
        calls.append(len(evs))
        return SendResult(Outcome.REJECTED, "invalid_request", "bad", 400)

    parts = list(isolate(events, refuse_all))
    assert [len(p) for p, _ in parts] == [1] * 8 and len(calls) == 15
    calls.clear()

    def not_found(evs: Any) -> SendResult:  # not a 400: about the request, not its events
        calls.append(len(evs))
        return SendResult(Outcome.REJECTED, "resource_missing", "no such path", 404)

    assert [len(p) for p, _ in isolate(events, not_found)] == [8] and calls == [8]


def _stored(i: int, name: str) -> StoredEvent:
    return StoredEvent(
        f"id-{i}", "b", 0, "cus_a", name, (), 0, 0, Decimal(1), 1, "pending", 0, None, None, None, None
    )
