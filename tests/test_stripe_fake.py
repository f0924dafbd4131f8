"""The fake Stripe refuses what Stripe documents it refuses (driven through the real SDK)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from fakestripe import API_KEY, Clock, FakeStripe
from fakestripe.support import client_for
from otel_aibill.stripe import StripeConfig
from otel_aibill.stripe.setup import ensure_meters


@pytest.fixture
def env() -> Any:
    with FakeStripe(clock=Clock()) as fake:
        sc = StripeConfig(timeout=5, max_network_retries=0)
        client = client_for(fake, sc)
        ensure_meters(client, sc)
        fake.add_customer("cus_a")
        yield fake, client


def _event(fake: FakeStripe, **kw: Any) -> dict[str, Any]:
    base = {
        "event_name": "aibill_cost",
        "identifier": "id-1",
        "timestamp": int(fake.clock()),
        "payload": {"stripe_customer_id": "cus_a", "value": "5"},
    }
    base.update(kw)
    return base


def test_unknown_parameter_is_refused_with_stripes_error_shape(env: Any) -> None:
    fake, client = env
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meter_events.create({**_event(fake), "valeu": "1"})
    assert err.value.code == "parameter_unknown" and err.value.param == "valeu"


def test_wrong_key_is_refused(env: Any) -> None:
    fake, _ = env
    other = stripe.StripeClient("sk_test_wrong", base_addresses={"api": fake.api_base})
    with pytest.raises(stripe.AuthenticationError):
        other.v1.billing.meters.list()


def test_value_timestamp_meter_and_duplicate_rules(env: Any) -> None:
    fake, client = env
    for bad in (
        {"payload": {"stripe_customer_id": "cus_a", "value": "1.5"}},
        {"timestamp": int(fake.clock()) - 36 * 86400},
        {"timestamp": int(fake.clock()) + 600},
        {"event_name": "no_such_meter"},
    ):
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.billing.meter_events.create(_event(fake, **bad))
    client.v1.billing.meter_events.create(_event(fake))
    with pytest.raises(stripe.InvalidRequestError) as dup:
        client.v1.billing.meter_events.create(_event(fake))
    assert dup.value.code == "resource_already_exists"
    fake.clock.advance(86400 + 1)  # dedupe window is over: the same identifier counts again
    client.v1.billing.meter_events.create(_event(fake))
    assert fake.totals("aibill_cost") == {"cus_a": 10}


def test_inactive_meter_refuses_events(env: Any) -> None:
    fake, client = env
    meter = client.v1.billing.meters.list().data[0]
    client.v1.billing.meters.deactivate(meter.id)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meter_events.create(_event(fake))
    assert err.value.param == "event_name"


def test_unknown_customer_is_accepted_but_not_counted(env: Any) -> None:
    fake, client = env
    client.v1.billing.meter_events.create(
        _event(fake, payload={"stripe_customer_id": "cus_zz", "value": "3"})
    )
    assert fake.totals("aibill_cost") == {}
    assert [r.code for r in fake.state.error_reports] == ["meter_event_customer_not_found"]


def test_session_expiry_and_stream_cap(env: Any) -> None:
    fake, client = env
    session = client.v2.billing.meter_event_session.create()
    ev = {
        "event_name": "aibill_cost",
        "identifier": "s-1",
        "timestamp": "2030-01-01T00:00:00.000Z",
        "payload": {"stripe_customer_id": "cus_a", "value": "1"},
    }
    with pytest.raises(stripe.StripeError) as cap:
        client.v2.billing.meter_event_stream.create(
            {"events": [ev] * 101}, {"api_key": session.authentication_token}
        )
    assert cap.value.http_status == 400
    fake.clock.advance(15 * 60 + 1)
    with pytest.raises(stripe.TemporarySessionExpiredError):
        client.v2.billing.meter_event_stream.create(
            {"events": [ev]}, {"api_key": session.authentication_token}
        )
    with pytest.raises(stripe.StripeError):  # the secret key is not a session token
        client.v2.billing.meter_event_stream.create({"events": [ev]}, {"api_key": API_KEY})


def test_one_concurrent_call_per_customer_and_meter(env: Any) -> None:
    fake, client = env
    fake.hold = 0.3
    errors: list[Exception] = []

    def send(i: int) -> None:
        try:
            client.v1.billing.meter_events.create(_event(fake, identifier=f"c-{i}"))
        except stripe.StripeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors and all(e.http_status == 409 for e in errors)
    assert fake.conflicts == len(errors)


def test_summaries_are_minute_aligned_with_exclusive_end(env: Any) -> None:
    fake, client = env
    meter = client.v1.billing.meters.list().data[0]
    t = int(fake.clock()) // 3600 * 3600 - 3600
    client.v1.billing.meter_events.create(_event(fake, identifier="a", timestamp=t))
    client.v1.billing.meter_events.create(_event(fake, identifier="b", timestamp=t + 60))
    summaries = client.v1.billing.meters.event_summaries
    first = summaries.list(meter.id, {"customer": "cus_a", "start_time": t, "end_time": t + 60})
    assert [s.aggregated_value for s in first.data] == [5]
    with pytest.raises(stripe.InvalidRequestError):
        summaries.list(meter.id, {"customer": "cus_a", "start_time": t + 1, "end_time": t + 60})
    hourly = summaries.list(
        meter.id,
        {"customer": "cus_a", "start_time": t, "end_time": t + 3600, "value_grouping_window": "hour"},
    )
    assert [s.aggregated_value for s in hourly.data] == [10]


def test_cancel_adjustment_within_24h_only(env: Any) -> None:
    fake, client = env
    client.v1.billing.meter_events.create(_event(fake, identifier="x"))
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "aibill_cost", "type": "cancel", "cancel": {"identifier": "x"}}
    )
    assert fake.totals("aibill_cost") == {}
    client.v1.billing.meter_events.create(_event(fake, identifier="y"))
    fake.clock.advance(86400 + 5)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": "aibill_cost", "type": "cancel", "cancel": {"identifier": "y"}}
        )


def _stream_event(fake: FakeStripe, ident: str, value: str = "1") -> dict[str, Any]:
    ts = int(fake.clock()) - 60
    return {
        "event_name": "aibill_cost",
        "identifier": ident,
        "timestamp": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "payload": {"stripe_customer_id": "cus_a", "value": value},
    }


@pytest.mark.parametrize("sync_errors", [False, True])
def test_stream_validates_asynchronously_unless_asked_for_sync_errors(sync_errors: bool) -> None:
    """As documented, the stream answers ``{}`` and reports bad events later; the opt-in mode refuses
    the whole request with the sync endpoint's 400 for its first bad event and records nothing."""
    with FakeStripe(stream_sync_errors=sync_errors) as fake:
        sc = StripeConfig(timeout=5, max_network_retries=0)
        client = client_for(fake, sc)
        ensure_meters(client, sc)
        fake.add_customer("cus_a")
        token = client.v2.billing.meter_event_session.create().authentication_token
        client.v2.billing.meter_event_stream.create(
            {"events": [_stream_event(fake, "a")]}, {"api_key": token}
        )
        for bad, code in (
            (_stream_event(fake, "a"), "duplicate_meter_event"),
            (_stream_event(fake, "c", "-3"), "payload_invalid_value"),
        ):
            events = [_stream_event(fake, "b"), bad]
            if not sync_errors:
                client.v2.billing.meter_event_stream.create({"events": events}, {"api_key": token})
                continue
            with pytest.raises(stripe.StripeError) as err:
                client.v2.billing.meter_event_stream.create({"events": events}, {"api_key": token})
            assert (err.value.http_status, err.value.code) == (400, code)
        counted = fake.counted_identifiers("aibill_cost")
        assert sorted(counted) == (["a"] if sync_errors else ["a", "b"])
        reported = {r.identifier: r.code for r in fake.state.error_reports}
        assert reported == ({} if sync_errors else {"c": "meter_event_invalid_value"})
