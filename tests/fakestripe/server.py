"""The fake Stripe as a local HTTP server the real ``stripe`` SDK talks to.

Two listeners share one state: the API host and the meter-events host (v2 stream), as in Stripe.
Faults are injected per request on the meter-event write paths: ``500``, ``429``, ``timeout``
(answer after the client gave up, not applied), ``reset`` (connection dropped, not applied) and
``lost`` (applied, then the connection is dropped or a 500 is returned: committed, reply lost).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

from fakestripe.spec import RequestError, decode_form, v1_error, v2_error, validate_body, validate_query
from fakestripe.state import DEDUPE_WINDOW, SESSION_TTL, Clock, StripeState, new_id, parse_rfc3339, rfc3339

API_KEY = "sk_test_fake_0123456789"
WRITE_PATHS = (
    "/v1/billing/meter_events",
    "/v2/billing/meter_event_stream",
    "/v2/billing/meter_events",
    "/v2/billing/meter_event_session",
)
FAULT_KINDS = ("500", "429", "timeout", "reset", "lost")


@dataclass
class Faults:
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 1
    timeout_delay: float = 0.6  # longer than the client's timeout in the tests
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def draw(self, path: str) -> str | None:
        if self.rate <= 0 or path not in WRITE_PATHS:
            return None
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            return kind

    def coin(self) -> bool:
        with self._lock:
            return self._rng.random() < 0.5


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: dict[str, Any]
    at: float


class _Drop(Exception):
    """Close the connection with a reset, sending nothing."""


_ROUTES: list[tuple[str, str, str]] = [
    ("post", r"/v1/billing/meter_events", "/v1/billing/meter_events"),
    ("post", r"/v1/billing/meter_event_adjustments", "/v1/billing/meter_event_adjustments"),
    ("get", r"/v1/billing/meters", "/v1/billing/meters"),
    ("post", r"/v1/billing/meters", "/v1/billing/meters"),
    ("get", r"/v1/billing/meters/(?P<id>[^/]+)", "/v1/billing/meters/{id}"),
    ("post", r"/v1/billing/meters/(?P<id>[^/]+)", "/v1/billing/meters/{id}"),
    ("post", r"/v1/billing/meters/(?P<id>[^/]+)/deactivate", "/v1/billing/meters/{id}/deactivate"),
    ("post", r"/v1/billing/meters/(?P<id>[^/]+)/reactivate", "/v1/billing/meters/{id}/reactivate"),
    ("get", r"/v1/billing/meters/(?P<id>[^/]+)/event_summaries", "/v1/billing/meters/{id}/event_summaries"),
    ("post", r"/v2/billing/meter_event_session", "/v2/billing/meter_event_session"),
    ("post", r"/v2/billing/meter_event_stream", "/v2/billing/meter_event_stream"),
    ("post", r"/v2/billing/meter_events", "/v2/billing/meter_events"),
    ("post", r"/v2/billing/meter_event_adjustments", "/v2/billing/meter_event_adjustments"),
    ("get", r"/v2/core/events/(?P<id>[^/]+)", "/v2/core/events/{id}"),
    ("post", r"/v1/products", "/v1/products"),
    ("get", r"/v1/products/(?P<id>[^/]+)", "/v1/products/{id}"),
    ("post", r"/v1/prices", "/v1/prices"),
    ("get", r"/v1/prices", "/v1/prices"),
]


class FakeStripe:
    """Start with ``with FakeStripe() as fake:``; ``fake.api_base`` / ``fake.meter_events_base``."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        faults: Faults | None = None,
        hold: float = 0.0,
        stream_sync_errors: bool = False,
    ) -> None:
        self.clock = clock or Clock()
        self.state = StripeState(self.clock, stream_sync_errors=stream_sync_errors)
        self.faults = faults or Faults()
        self.hold = hold  # seconds a meter event write keeps its (customer, meter) busy
        self.idempotency: dict[str, _Stored] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.conflicts = 0
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self._lock = threading.Lock()
        self._servers = [self._serve(), self._serve()]

    # -- lifecycle --------------------------------------------------------------------------

    def _serve(self) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def finish(self) -> None:
                with contextlib.suppress(OSError, ValueError):
                    super().finish()

            def do_GET(self) -> None:
                fake._handle(self, "get")

            def do_POST(self) -> None:
                fake._handle(self, "post")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # dropped connections are the point of some faults

        server = Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def meter_events_base(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def close(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def __enter__(self) -> FakeStripe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- test helpers -----------------------------------------------------------------------

    def add_customer(self, *ids: str) -> None:
        with self.state.lock:
            self.state.customers.update(ids)

    def totals(self, event_name: str) -> dict[str, int]:
        with self.state.lock:
            return self.state.totals(event_name)

    def counted_identifiers(self, event_name: str) -> list[str]:
        with self.state.lock:
            meter = self.state.any_meter(event_name)
            return [e.identifier for e in self.state.counted(meter)] if meter else []

    def deliver_webhooks(self, post: Any = None) -> list[int]:
        """POST pending thin events to ``webhook_url``, signed like Stripe does."""
        statuses = []
        while True:
            with self.state.lock:
                if not self.state.undelivered or not self.webhook_url:
                    return statuses
                event_id = self.state.undelivered.pop(0)
                full = self.state.thin_events[event_id]
            thin = {k: v for k, v in full.items() if k not in ("data", "changes")}
            body = json.dumps(thin)
            headers = {"Content-Type": "application/json"}
            if self.webhook_secret:
                t = int(time.time())
                sig = hmac.new(
                    self.webhook_secret.encode(), f"{t}.{body}".encode(), hashlib.sha256
                ).hexdigest()
                headers["Stripe-Signature"] = f"t={t},v1={sig}"
            send = post or (lambda url, **kw: httpx.post(url, timeout=10, **kw))
            statuses.append(send(self.webhook_url, content=body, headers=headers).status_code)

    # -- HTTP -------------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(req.path)
        path = url.path
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length).decode() if length else ""
        status, body, drop = 500, {}, False
        try:
            status, body = self._dispatch(req, method, path, url.query, raw)
        except RequestError as exc:
            status, body = exc.status, exc.body
        except _Drop:
            drop = True
        with self._lock:
            self.requests.append((method, path, 0 if drop else status))
        if drop:
            _reset(req.connection)
            return
        data = json.dumps(body).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(data)))
            req.send_header("Request-Id", new_id("req"))
            req.end_headers()
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _dispatch(
        self, req: BaseHTTPRequestHandler, method: str, path: str, query: str, raw: str
    ) -> tuple[int, dict[str, Any]]:
        for m, pattern, template in _ROUTES:  # noqa: B007 - template is used after the loop
            match = re.fullmatch(pattern, path)
            if m == method and match:
                break
        else:
            raise v1_error(f"Unrecognized request URL ({method.upper()}: {path}).", status=404)
        v2 = path.startswith("/v2/")
        self._auth(req, path)
        fault = self.faults.draw(path)
        if fault == "500":
            raise v1_error("An unknown error occurred", status=500, type_="api_error")
        if fault == "429":
            raise v1_error("Too many requests hit the API too quickly.", code="rate_limit", status=429)
        if fault == "reset":
            raise _Drop()
        if fault == "timeout":
            time.sleep(self.faults.timeout_delay)
            raise v1_error("An unknown error occurred", status=500, type_="api_error")

        if method == "get":
            params = validate_query(method, template, dict(_query(query)))
            return 200, self._route(method, template, match.groupdict(), params)

        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        if v2:
            if ctype != "application/json":
                raise v2_error("v2 requests must be JSON (application/json).", "invalid_request")
            try:
                params = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise v2_error("Request body is not valid JSON.", "invalid_request") from exc
            try:
                params = validate_body(method, template, params, form=False)
            except RequestError as exc:
                err = exc.body["error"]
                raise v2_error(err["message"], err.get("code", "invalid_request")) from exc
        else:
            if raw and ctype != "application/x-www-form-urlencoded":
                raise v1_error("v1 requests must be form-encoded.", param=None)
            params = validate_body(method, template, decode_form(raw), form=True)

        key = req.headers.get("Idempotency-Key")
        fingerprint = hashlib.sha256(f"{path}\n{raw}".encode()).hexdigest()
        if key:
            with self._lock:
                stored = self.idempotency.get(key)
                if stored and self.clock() - stored.at < DEDUPE_WINDOW:
                    if stored.fingerprint != fingerprint:
                        raise v1_error(
                            "Keys for idempotent requests can only be used with the same parameters they "
                            "were first used with.",
                            status=400,
                            type_="idempotency_error",
                        )
                    return stored.status, stored.body
        status, body = 200, self._route(method, template, match.groupdict(), params, req)
        if key:
            with self._lock:
                self.idempotency[key] = _Stored(fingerprint, status, body, self.clock())
        if fault == "lost":
            if self.faults.coin():
                raise _Drop()
            raise v1_error("An unknown error occurred", status=500, type_="api_error")
        return status, body

    def _auth(self, req: BaseHTTPRequestHandler, path: str) -> None:
        header = req.headers.get("Authorization") or ""
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if path == "/v2/billing/meter_event_stream":
            expires = self.state.sessions.get(token)
            if expires is None:
                raise v2_error(
                    "Invalid or missing meter event session token.",
                    "authentication_failed",
                    status=401,
                    type_="invalid_request_error",
                )
            if self.clock() >= expires:
                raise v2_error(
                    "The temporary session token has expired.",
                    "billing_meter_event_session_expired",
                    status=401,
                    type_="temporary_session_expired",
                )
            return
        if token != API_KEY:
            raise v1_error("Invalid API Key provided.", status=401)

    # -- endpoints --------------------------------------------------------------------------

    def _busy(self, keys: set[tuple[str, str]]) -> None:
        with self._lock:
            if keys & self.state.in_flight:
                self.conflicts += 1
                raise v2_error(
                    "Cannot create multiple usage events for the same customer, meter concurrently.",
                    "too_many_concurrent_requests",
                    status=409,
                )
            self.state.in_flight |= keys

    def _release(self, keys: set[tuple[str, str]]) -> None:
        with self._lock:
            self.state.in_flight -= keys

    def _keys(self, events: list[dict[str, Any]]) -> set[tuple[str, str]]:
        keys = set()
        for e in events:
            meter = self.state.active_meter(e.get("event_name", ""))
            ckey = meter.customer_key if meter else "stripe_customer_id"
            keys.add((str(e.get("payload", {}).get(ckey, "")), e.get("event_name", "")))
        return keys

    def _write_events(self, events: list[dict[str, Any]], apply: Any) -> Any:
        keys = self._keys(events)
        self._busy(keys)
        try:
            if self.hold:
                time.sleep(self.hold)
            return apply()
        finally:
            self._release(keys)

    def _route(
        self,
        method: str,
        template: str,
        ids: dict[str, str],
        p: dict[str, Any],
        req: BaseHTTPRequestHandler | None = None,
    ) -> dict[str, Any]:
        st = self.state
        if template == "/v1/billing/meter_events":
            ev = self._write_events(
                [p],
                lambda: st.record_sync(
                    p["event_name"], p.get("identifier"), p["payload"], p.get("timestamp"), v2=False
                ),
            )
            return {
                "object": "billing.meter_event",
                "created": ev.created,
                "event_name": ev.event_name,
                "identifier": ev.identifier,
                "livemode": False,
                "payload": ev.payload,
                "timestamp": ev.timestamp,
            }
        if template == "/v2/billing/meter_events":
            ts = parse_rfc3339(p["timestamp"]) if "timestamp" in p else None
            ev = self._write_events(
                [p], lambda: st.record_sync(p["event_name"], p.get("identifier"), p["payload"], ts, v2=True)
            )
            return {
                "object": "v2.billing.meter_event",
                "created": rfc3339(ev.created),
                "livemode": False,
                "identifier": ev.identifier,
                "event_name": ev.event_name,
                "timestamp": rfc3339(ev.timestamp),
                "payload": ev.payload,
            }
        if template == "/v2/billing/meter_event_stream":
            events = p["events"]
            if len(events) > 100:
                raise v2_error("Supports up to 100 events per request.", "invalid_request")
            if not events:
                raise v2_error("events must not be empty.", "invalid_request")
            self._write_events(events, lambda: st.record_stream(events))
            return {}
        if template == "/v2/billing/meter_event_session":
            token = "mes_tok_" + new_id("s")
            now = self.clock()
            with st.lock:
                st.sessions[token] = now + SESSION_TTL
            return {
                "object": "v2.billing.meter_event_session",
                "id": new_id("mes"),
                "livemode": False,
                "authentication_token": token,
                "created": rfc3339(now),
                "expires_at": rfc3339(now + SESSION_TTL),
            }
        if template in ("/v1/billing/meter_event_adjustments", "/v2/billing/meter_event_adjustments"):
            v2 = template.startswith("/v2")
            if "cancel" not in p or "identifier" not in p.get("cancel", {}):
                raise v1_error("cancel[identifier] is required for type=cancel.", param="cancel")
            st.cancel(p["event_name"], p["cancel"]["identifier"], v2)
            return {
                "object": "v2.billing.meter_event_adjustment" if v2 else "billing.meter_event_adjustment",
                "id": new_id("mtr_event_adj"),
                "livemode": False,
                "status": "pending",
                "event_name": p["event_name"],
                "type": "cancel",
                "cancel": p["cancel"],
            }
        if template == "/v1/billing/meters":
            if method == "post":
                return st.create_meter(p).to_json()
            meters = sorted(st.meters.values(), key=lambda m: m.id)
            if "status" in p:
                meters = [m for m in meters if m.status == p["status"]]
            return _page([m.to_json() for m in meters], p, "/v1/billing/meters")
        if template.startswith("/v1/billing/meters/{id}"):
            meter = st.meters.get(ids["id"])
            if meter is None:
                raise v1_error(
                    f"No such billing meter: '{ids['id']}'", code="resource_missing", param="id", status=404
                )
            if template.endswith("/event_summaries"):
                return _page(st.summaries(meter, p), p, f"/v1/billing/meters/{meter.id}/event_summaries")
            if template.endswith("/deactivate"):
                meter.status = "inactive"
            elif template.endswith("/reactivate"):
                meter.status = "active"
            elif method == "post" and "display_name" in p:
                meter.display_name = p["display_name"]
            return meter.to_json()
        if template == "/v2/core/events/{id}":
            event = st.thin_events.get(ids["id"])
            if event is None:
                raise v2_error("No such event.", "not_found", status=404)
            return event
        if template == "/v1/products":
            pid = p.get("id") or new_id("prod")
            if pid in st.products:
                raise v1_error(f"Product already exists: {pid}", code="resource_already_exists", param="id")
            st.products[pid] = {
                "id": pid,
                "object": "product",
                "name": p["name"],
                "active": True,
                "livemode": False,
                "metadata": p.get("metadata", {}),
            }
            return st.products[pid]
        if template == "/v1/products/{id}":
            if ids["id"] not in st.products:
                raise v1_error(
                    f"No such product: '{ids['id']}'", code="resource_missing", param="id", status=404
                )
            return st.products[ids["id"]]
        if template == "/v1/prices" and method == "post":
            if p.get("product") not in st.products:
                raise v1_error(
                    f"No such product: '{p.get('product')}'", code="resource_missing", param="product"
                )
            rec = p.get("recurring")
            if rec and rec.get("usage_type") == "metered" and rec.get("meter") not in st.meters:
                raise v1_error("recurring[meter] must be an existing meter.", param="recurring[meter]")
            lookup = p.get("lookup_key")
            if lookup and any(x.get("lookup_key") == lookup for x in st.prices.values()):
                raise v1_error(f"A price with lookup_key {lookup} already exists.", param="lookup_key")
            price = {
                "id": new_id("price"),
                "object": "price",
                "active": True,
                "livemode": False,
                "currency": p["currency"],
                "product": p.get("product"),
                "lookup_key": lookup,
                "unit_amount_decimal": p.get("unit_amount_decimal"),
                "billing_scheme": p.get("billing_scheme", "per_unit"),
                "recurring": rec,
            }
            st.prices[price["id"]] = price
            return price
        if template == "/v1/prices":
            keys = set(p.get("lookup_keys", []))
            items = [x for x in st.prices.values() if not keys or x.get("lookup_key") in keys]
            return _page(items, p, "/v1/prices")
        raise v1_error("not implemented in the fake", status=404)


def _page(items: list[dict[str, Any]], p: dict[str, Any], url: str) -> dict[str, Any]:
    if "starting_after" in p:
        ids = [i["id"] for i in items]
        items = items[ids.index(p["starting_after"]) + 1 :] if p["starting_after"] in ids else []
    limit = p.get("limit", 10)
    if not 1 <= limit <= 100:
        raise v1_error("limit must be between 1 and 100.", param="limit")
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}


def _query(query: str) -> dict[str, Any]:
    return decode_form(query) if query else {}


def _reset(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass
