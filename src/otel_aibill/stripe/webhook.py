"""``POST /stripe/webhook``: Stripe's thin events about meter events it could not accept.

``v1.billing.meter.error_report_triggered`` and ``v1.billing.meter.no_meter_found`` carry only
ids; with a client the full event is fetched to learn the error codes and sample identifiers.
A customer Stripe does not know takes its events back into held rows (sent again once fixed);
other errors mark the events and are shown by ``otel-aibill stripe reconcile``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import stripe
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otel_aibill.stripe.store import ExportStore, WebhookError

log = logging.getLogger("otel_aibill.stripe")

HANDLED = ("v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found")
CUSTOMER_CODES = ("meter_event_customer_not_found",)
SINCE_MARGIN = 300
TOLERANCE = 300
"""Seconds a signed delivery stays acceptable: a captured one cannot be replayed later."""


def _ts(text: str | None, default: int) -> int:
    if not text:
        return default
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _event_identifier(store: ExportStore, raw: str) -> str:
    """Sample errors name the request; our idempotency keys are ``ik-`` + the event identifier."""
    if store.event(raw) is None and raw.startswith("ik-") and store.event(raw[3:]) is not None:
        return raw[3:]
    return raw


def apply_thin_event(
    store: ExportStore, thin: dict[str, Any], full: dict[str, Any] | None, now: int
) -> list[WebhookError]:
    """Record what Stripe reported and act on it. ``full`` is the fetched event (with ``data``)."""
    meter = str((thin.get("related_object") or {}).get("id", ""))
    errors: list[WebhookError] = []
    data = (full or {}).get("data") or {}
    since = _ts(data.get("validation_start"), now) - SINCE_MARGIN
    for etype in (data.get("reason") or {}).get("error_types", []):
        code = str(etype.get("code", ""))
        for sample in etype.get("sample_errors", []):
            ident = _event_identifier(store, str(sample.get("request", {}).get("identifier", "")))
            message = str(sample.get("error_message", ""))
            errors.append(WebhookError(thin["id"], ident, thin["type"], code, meter, message, now))
            ev = store.event(ident)
            if ev is None:
                continue
            if code in CUSTOMER_CODES:
                taken = store.reject_customer(ev.stripe_customer, code, message, since, now)
                log.error(
                    "Stripe rejected customer %s (%s): %d events back to held rows",
                    ev.stripe_customer,
                    code,
                    taken,
                )
            elif ev.state in ("sent", "pending"):
                store.mark_state([ident], "error", code, message)
    if not errors:
        errors.append(
            WebhookError(thin["id"], "", thin["type"], "unknown", meter, "details not fetched", now)
        )
    added = store.add_webhook_errors(errors)
    log.error("Stripe %s (%d new error records) for meter %s", thin["type"], added, meter or "?")
    return errors


MAX_BODY_BYTES = 256 * 1024
"""Stripe's thin events are about a kilobyte; a larger body is refused before it is read whole."""


class _BadDelivery(ValueError):
    """A delivery refused with 400 before anything in it is used."""


def _checked_header(header: str | None, now: float) -> str:
    """A ``Stripe-Signature`` header whose ``t=`` is within the tolerance; refused when missing,
    malformed or outside the tolerance in either direction (the SDK checks only the past: a
    delivery signed an hour ahead would otherwise stay replayable for an hour and five minutes)."""
    if not header:
        raise _BadDelivery("missing Stripe-Signature header")
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    t = fields.get("t", "")
    if not t.isascii() or not t.isdigit() or "v1" not in fields:
        raise _BadDelivery("malformed Stripe-Signature header")
    if abs(int(t) - now) > TOLERANCE:
        raise _BadDelivery("signature timestamp outside the tolerance")
    return header


async def _bounded_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _BadDelivery(f"body larger than {MAX_BODY_BYTES} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BadDelivery(f"body larger than {MAX_BODY_BYTES} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _thin_event(raw: bytes, header: str, secret: str) -> tuple[str, dict[str, Any]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadDelivery("body is not UTF-8") from None
    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance=TOLERANCE)
    except stripe.SignatureVerificationError:
        raise _BadDelivery("invalid signature") from None
    try:
        thin = json.loads(text)
    except ValueError:
        raise _BadDelivery("invalid JSON") from None
    if (
        not isinstance(thin, dict)
        or not isinstance(thin.get("id"), str)
        or not isinstance(thin.get("type"), str)
    ):
        raise _BadDelivery("not an event: an object with string id and type is expected")
    related = thin.get("related_object")
    if related is not None and not isinstance(related, dict):
        raise _BadDelivery("related_object is not an object")
    return text, thin


def webhook_route(
    store: ExportStore,
    secret: str,
    client: stripe.StripeClient | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> Route:
    """The route ``serve`` mounts. The signature header is checked before the body is read, the
    body is bounded, and its signature is verified (with the SDK) before anything in it is used;
    every bad delivery is a 400 with a one-line reason."""

    async def endpoint(request: Request) -> JSONResponse:
        """Stripe's meter error reports (thin events), signature checked."""
        try:
            header = _checked_header(request.headers.get("stripe-signature"), clock())
            text, thin = _thin_event(await _bounded_body(request), header, secret)
        except _BadDelivery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if thin.get("object") != "v2.core.event" or thin.get("type") not in HANDLED:
            return JSONResponse({"received": True, "ignored": True})
        full: dict[str, Any] | None = None
        if client is not None:
            notification = client.parse_event_notification_without_verification(text)
            event = await run_in_threadpool(notification.fetch_event)
            full = event.to_dict()
        try:
            await run_in_threadpool(apply_thin_event, store, thin, full, int(clock()))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error("Stripe webhook event %s not understood: %s", thin["id"][:100], exc)
            return JSONResponse({"error": "event not understood"}, status_code=400)
        return JSONResponse({"received": True})

    return Route("/stripe/webhook", endpoint, methods=["POST"])
