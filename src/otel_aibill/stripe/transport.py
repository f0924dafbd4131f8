"""Sending meter events with the ``stripe`` SDK, and what each Stripe answer means for us.

The SDK retries connection errors, 409 and 5xx itself, reusing the idempotency key we derive from
the event identifier; 429 is left to the exporter's own backoff.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import stripe

from otel_aibill.stripe.config import StripeConfig, StripeEnv
from otel_aibill.stripe.store import StoredEvent


class Outcome(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"  # Stripe already holds this identifier: it was delivered before
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"  # transient: connection, timeout, 5xx, 409 after the SDK's retries
    SESSION_EXPIRED = "session_expired"
    METER = "meter"  # no active meter for the event name: held until `stripe setup`
    REJECTED = "rejected"  # this event will never be accepted as it is


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    code: str | None = None
    message: str = ""
    status: int | None = None  # Stripe's HTTP status, when it answered with an error


class StripeAuthError(RuntimeError):
    """The API key is refused: nothing can be sent until it is fixed."""


def make_client(env: StripeEnv, sc: StripeConfig) -> stripe.StripeClient | None:
    """The SDK client, or None (dry-run) when no key is configured."""
    if not env.api_key:
        return None
    bases: dict[str, str] = {}
    if env.api_base:
        bases["api"] = env.api_base
    if env.meter_events_base:
        bases["meter_events"] = env.meter_events_base
    return stripe.StripeClient(
        env.api_key,
        base_addresses=bases,  # type: ignore[arg-type]
        max_network_retries=sc.max_network_retries,
        http_client=stripe.RequestsClient(timeout=sc.timeout),
    )


def idempotency_key(identifiers: Sequence[str]) -> str:
    """Derived from what is sent, so a resend after a crash replays instead of applying twice."""
    if len(identifiers) == 1:
        return f"ik-{identifiers[0]}"
    return "ik-" + hashlib.sha256("\n".join(identifiers).encode()).hexdigest()


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def classify(exc: Exception) -> SendResult:
    if isinstance(exc, stripe.RateLimitError):
        return SendResult(Outcome.RATE_LIMITED, "rate_limit", str(exc))
    if isinstance(exc, stripe.TemporarySessionExpiredError):
        return SendResult(Outcome.SESSION_EXPIRED, "billing_meter_event_session_expired", str(exc))
    if isinstance(exc, stripe.APIConnectionError):
        return SendResult(Outcome.RETRY, "connection", str(exc))
    if isinstance(exc, stripe.StripeError):
        status = exc.http_status or 0
        code = exc.code
        message = exc.user_message or str(exc)
        if status == 401:
            if code == "billing_meter_event_session_expired":
                return SendResult(Outcome.SESSION_EXPIRED, code, message, status)
            raise StripeAuthError(message) from exc
        if status == 429:
            return SendResult(Outcome.RATE_LIMITED, code, message, status)
        if status >= 500 or status == 409 or isinstance(exc, stripe.IdempotencyError):
            return SendResult(Outcome.RETRY, code, message, status)
        if code in ("resource_already_exists", "duplicate_meter_event") or "already exists" in message:
            return SendResult(Outcome.DUPLICATE, code, message, status)
        param = getattr(exc, "param", None)
        if code in ("no_meter", "archived_meter") or param == "event_name":
            return SendResult(Outcome.METER, code, message, status)
        return SendResult(Outcome.REJECTED, code, message, status)
    raise exc


def _splittable(events: Sequence[StoredEvent], result: SendResult) -> bool:
    if len(events) < 2 or result.status != 400:
        return False
    if result.outcome is Outcome.METER:  # about an event name: split only if the request mixes names
        return len({e.event_name for e in events}) > 1
    return result.outcome in (Outcome.REJECTED, Outcome.DUPLICATE)


def isolate(
    events: Sequence[StoredEvent], send: Callable[[Sequence[StoredEvent]], SendResult]
) -> Iterator[tuple[Sequence[StoredEvent], SendResult]]:
    """Send a multi-event request; on a 400, send its halves (recursively) to find the culprits.

    A 400 refuses the whole request, for what may be one event in a hundred (a malformed one, or
    one Stripe already has: ``duplicate_meter_event``). Taking its answer for every event would
    mark good events in error, or count undelivered ones as sent. Halving costs about
    2·log2(n) requests per bad event and leaves each answer attached to the events it is about;
    a lone duplicate is then known to be counted already.
    """
    result = send(events)
    if not _splittable(events, result):
        yield events, result
        return
    mid = len(events) // 2
    yield from isolate(events[:mid], send)
    yield from isolate(events[mid:], send)


class V1Sender:
    """``POST /v1/billing/meter_events``: one event a request, validated synchronously."""

    def __init__(self, client: stripe.StripeClient, sc: StripeConfig) -> None:
        self._client, self._sc = client, sc
        self.requests = 0

    def send(self, ev: StoredEvent) -> SendResult:
        params: dict[str, Any] = {
            "event_name": ev.event_name,
            "identifier": ev.identifier,
            "timestamp": ev.timestamp,
            "payload": ev.payload(self._sc.customer_payload_key, self._sc.value_payload_key),
        }
        self.requests += 1
        try:
            self._client.v1.billing.meter_events.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key([ev.identifier])},
            )
        except Exception as exc:
            return classify(exc)
        return SendResult(Outcome.SENT)


class V2Sender:
    """Session + ``meter_event_stream``: up to 100 events a request, validated asynchronously."""

    RENEW_MARGIN = 60

    def __init__(
        self, client: stripe.StripeClient, sc: StripeConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self._client, self._sc, self._clock = client, sc, clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.requests = 0
        self.sessions = 0

    def _session(self, renew: bool = False) -> str:
        with self._lock:
            if renew or self._token is None or self._clock() >= self._expires_at - self.RENEW_MARGIN:
                session = self._client.v2.billing.meter_event_session.create()
                self.sessions += 1
                self._token = str(session.authentication_token)
                expires = session.expires_at
                self._expires_at = (
                    expires.timestamp()
                    if isinstance(expires, datetime)
                    else datetime.fromisoformat(str(expires).replace("Z", "+00:00")).timestamp()
                )
            return self._token

    def send(self, events: Sequence[StoredEvent]) -> SendResult:
        body = {
            "events": [
                {
                    "event_name": ev.event_name,
                    "identifier": ev.identifier,
                    "timestamp": rfc3339(ev.timestamp),
                    "payload": ev.payload(self._sc.customer_payload_key, self._sc.value_payload_key),
                }
                for ev in events
            ]
        }
        key = idempotency_key([ev.identifier for ev in events])
        renewed = False
        while True:
            try:
                token = self._session(renew=renewed)
                self.requests += 1
                self._client.v2.billing.meter_event_stream.create(
                    body,  # type: ignore[arg-type]
                    {"api_key": token, "idempotency_key": key},
                )
            except Exception as exc:
                result = classify(exc)
                if result.outcome is Outcome.SESSION_EXPIRED and not renewed:
                    renewed = True
                    continue
                return result
            return SendResult(Outcome.SENT)
