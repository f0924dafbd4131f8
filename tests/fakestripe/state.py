"""What the fake Stripe remembers and the rules it applies, independent of HTTP.

Rules follow Stripe's documentation (see REFERENCE.md §5): identifiers unique for 24 h, timestamps
within 35 days past / 5 minutes future, integer value strings, one concurrent call per
(customer, meter), sessions valid 15 minutes, cancellations within 24 h, minute-aligned summaries
with an exclusive end. Unknown customers are accepted and fail asynchronously: the event is not
counted, and an error report becomes a ``v1.billing.meter.error_report_triggered`` thin event.

Meters created with ``dimension_payload_keys`` need each key in every event's payload (else the
event fails asynchronously with ``missing_dimension_payload_keys``). A meter grouping by ``model``
and ``token_type`` is priced the way Stripe's LLM token billing prices it, so it refuses (a 400 on
any API, the stream included: the fake is stricter than what Stripe documents) a model name that
is not on ``token_billing_models.txt`` and a token type other than ``TOKEN_TYPES``.
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fakestripe.spec import RequestError, v1_error, v2_error

DAY = 86400
DEDUPE_WINDOW = DAY
SESSION_TTL = 15 * 60
PAST_LIMIT = 35 * DAY
FUTURE_LIMIT = 5 * 60

TOKEN_TYPES = frozenset({"input", "output", "cached_input", "cached_write"})
"""The token types Stripe's LLM token billing prices (as Vercel's AI Gateway integration sends them)."""


def _token_billing_models() -> frozenset[str]:
    text = Path(__file__).with_name("token_billing_models.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


TOKEN_BILLING_MODELS = _token_billing_models()


class Clock:
    """Wall time plus an offset the tests move forward (windows and expiry without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}{secrets.token_hex(6)}"


@dataclass
class Meter:
    id: str
    event_name: str
    display_name: str
    formula: str
    customer_key: str
    value_key: str
    created: int
    status: str = "active"
    event_time_window: str | None = None
    dimension_keys: tuple[str, ...] = ()

    @property
    def token_billing(self) -> bool:
        """Priced per model and token type, as Stripe's LLM token billing does."""
        return {"model", "token_type"} <= set(self.dimension_keys)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "updated": self.created,
            "livemode": False,
            "display_name": self.display_name,
            "event_name": self.event_name,
            "event_time_window": self.event_time_window,
            "status": self.status,
            "status_transitions": {"deactivated_at": None},
            "customer_mapping": {"event_payload_key": self.customer_key, "type": "by_id"},
            "default_aggregation": {"formula": self.formula},
            "value_settings": {"event_payload_key": self.value_key},
            "dimension_payload_keys": list(self.dimension_keys) or None,
        }


@dataclass
class MeterEvent:
    identifier: str
    event_name: str
    payload: dict[str, str]
    timestamp: int
    created: int
    error: str | None = None  # async validation failure: never counted
    cancelled: bool = False


@dataclass
class ErrorReport:
    meter_id: str
    code: str
    message: str
    identifier: str
    at: int


@dataclass
class StripeState:
    clock: Clock
    customers: set[str] = field(default_factory=set)
    meters: dict[str, Meter] = field(default_factory=dict)
    events: dict[str, MeterEvent] = field(default_factory=dict)  # latest event per identifier
    log: list[MeterEvent] = field(default_factory=list)  # every accepted event, counted or not
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    thin_events: dict[str, dict[str, Any]] = field(default_factory=dict)  # full v2 events by id
    undelivered: list[str] = field(default_factory=list)
    error_reports: list[ErrorReport] = field(default_factory=list)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    stream_sync_errors: bool = False  # see ``record_stream``
    accepted_requests: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- meters -----------------------------------------------------------------------------

    def active_meter(self, event_name: str) -> Meter | None:
        for meter in self.meters.values():
            if meter.event_name == event_name and meter.status == "active":
                return meter
        return None

    def any_meter(self, event_name: str) -> Meter | None:
        return self.active_meter(event_name) or next(
            (m for m in self.meters.values() if m.event_name == event_name), None
        )

    def create_meter(self, p: dict[str, Any]) -> Meter:
        with self.lock:
            if self.active_meter(p["event_name"]):
                raise v1_error(
                    f"An active meter with event_name `{p['event_name']}` already exists.",
                    param="event_name",
                )
            mapping = p.get("customer_mapping", {})
            meter = Meter(
                id=new_id("mtr"),
                event_name=p["event_name"],
                display_name=p["display_name"],
                formula=p["default_aggregation"]["formula"],
                customer_key=mapping.get("event_payload_key", "stripe_customer_id"),
                value_key=p.get("value_settings", {}).get("event_payload_key", "value"),
                created=int(self.clock()),
                event_time_window=p.get("event_time_window"),
                dimension_keys=tuple(p.get("dimension_payload_keys", ())),
            )
            self.meters[meter.id] = meter
            return meter

    # -- meter events -----------------------------------------------------------------------

    def _dup(self, identifier: str) -> bool:
        ev = self.events.get(identifier)
        return ev is not None and self.clock() - ev.created < DEDUPE_WINDOW

    def _time_error(self, ts: int) -> str | None:
        now = self.clock()
        if ts < now - PAST_LIMIT:
            return "timestamp_too_far_in_past"
        if ts > now + FUTURE_LIMIT:
            return "timestamp_in_future"
        return None

    @staticmethod
    def _token_billing_problem(meter: Meter, payload: dict[str, str]) -> tuple[str, str] | None:
        """(payload key, message) when a token billing meter cannot price the event."""
        if not meter.token_billing:
            return None
        model, kind = payload.get("model"), payload.get("token_type")
        if model is not None and model not in TOKEN_BILLING_MODELS:
            return "model", f"The model `{model}` is not on the list of models LLM token billing prices."
        if kind is not None and kind not in TOKEN_TYPES:
            return "token_type", f"Unknown token_type `{kind}`: use one of {', '.join(sorted(TOKEN_TYPES))}."
        return None

    def _v2_problem(
        self, event_name: str, identifier: str | None, payload: dict[str, str], ts: int | None
    ) -> RequestError | None:
        """The 400s ``POST /v2/billing/meter_events`` documents (its ``x-stripeErrors``)."""
        meter = self.active_meter(event_name)
        if meter is None:
            code = "archived_meter" if self.any_meter(event_name) else "no_meter"
            return v2_error(f"No active meter for event_name {event_name}", code)
        if identifier and self._dup(identifier):
            return v2_error(f"An event already exists with identifier {identifier}.", "duplicate_meter_event")
        if meter.customer_key not in payload:
            return v2_error(
                "The payload must have a reference to the customer.", "payload_no_customer_defined"
            )
        if meter.value_key not in payload:
            return v2_error("The payload must have a value.", "payload_no_value_defined")
        if not re.fullmatch(r"\d+", payload[meter.value_key]):
            return v2_error("The value must be a positive integer.", "payload_invalid_value")
        priced = self._token_billing_problem(meter, payload)
        if priced:
            return v2_error(priced[1], "invalid_request")
        problem = self._time_error(int(self.clock()) if ts is None else ts)
        return v2_error(problem, problem) if problem else None

    def _accept(
        self, event_name: str, identifier: str | None, payload: dict[str, str], ts: int | None
    ) -> MeterEvent:
        meter = self.active_meter(event_name)
        assert meter is not None
        now = int(self.clock())
        ev = MeterEvent(
            identifier or new_id("evt_ident"), event_name, dict(payload), now if ts is None else ts, now
        )
        self._async_checks(ev, meter)
        self.events[ev.identifier] = ev
        self.log.append(ev)
        return ev

    def record_sync(
        self, event_name: str, identifier: str | None, payload: dict[str, str], ts: int | None, v2: bool
    ) -> MeterEvent:
        """v1 meter_events and v2 meter_events: shape and meter checked now, customer later."""
        with self.lock:
            if v2:
                problem = self._v2_problem(event_name, identifier, payload, ts)
                if problem:
                    raise problem
                return self._accept(event_name, identifier, payload, ts)
            meter = self.active_meter(event_name)
            if meter is None:
                inactive = self.any_meter(event_name)
                raise v1_error(
                    f"No active meter found for event_name `{event_name}`"
                    + (" (the meter is inactive)." if inactive else "."),
                    code="resource_missing",
                    param="event_name",
                )
            if identifier and self._dup(identifier):
                raise v1_error(
                    f"An event already exists with identifier {identifier}.",
                    code="resource_already_exists",
                    param="identifier",
                )
            if meter.customer_key not in payload:
                raise v1_error(f"Missing `{meter.customer_key}` in payload", param="payload")
            if meter.value_key not in payload:
                raise v1_error(f"Missing `{meter.value_key}` in payload", param="payload")
            if not re.fullmatch(r"\d+", payload[meter.value_key]):
                raise v1_error(
                    "Meter event value must be a non-negative integer string.",
                    param=f"payload[{meter.value_key}]",
                )
            priced = self._token_billing_problem(meter, payload)
            if priced:
                raise v1_error(priced[1], param=f"payload[{priced[0]}]")
            if self._time_error(int(self.clock()) if ts is None else ts):
                raise v1_error(
                    "Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
                    param="timestamp",
                )
            return self._accept(event_name, identifier, payload, ts)

    def record_stream(self, events: list[dict[str, Any]]) -> None:
        """v2 stream: as documented, everything is validated asynchronously and duplicates are
        dropped silently. With ``stream_sync_errors`` the request is first checked event by event
        with the sync endpoint's 400s, and the first bad event refuses the whole request (nothing
        recorded), as any Stripe error does."""
        with self.lock:
            now = int(self.clock())
            for item in events:
                meter = self.active_meter(item["event_name"])
                priced = meter and self._token_billing_problem(meter, item["payload"])
                if priced:
                    raise v2_error(priced[1], "invalid_request")
            if self.stream_sync_errors:
                for item in events:
                    ts = parse_rfc3339(item["timestamp"]) if "timestamp" in item else None
                    refusal = self._v2_problem(
                        item["event_name"], item.get("identifier"), item["payload"], ts
                    )
                    if refusal:
                        raise refusal
            for item in events:
                identifier = item.get("identifier") or new_id("evt_ident")
                if self._dup(identifier):
                    continue
                ts = parse_rfc3339(item["timestamp"]) if "timestamp" in item else now
                ev = MeterEvent(identifier, item["event_name"], dict(item["payload"]), ts, now)
                self.events[identifier] = ev
                self.log.append(ev)
                meter = self.active_meter(ev.event_name)
                if meter is None:
                    code = "archived_meter" if self.any_meter(ev.event_name) else "no_meter"
                    self._fail(ev, None, code, f"no active meter for {ev.event_name}")
                    continue
                problem = self._time_error(ts)
                if problem:
                    self._fail(ev, meter, problem, problem)
                elif meter.customer_key not in ev.payload:
                    self._fail(ev, meter, "meter_event_no_customer_defined", "no customer in payload")
                elif not re.fullmatch(r"\d+", ev.payload.get(meter.value_key, "")):
                    self._fail(ev, meter, "meter_event_invalid_value", "value must be an integer string")
                else:
                    self._async_checks(ev, meter)

    def _async_checks(self, ev: MeterEvent, meter: Meter) -> None:
        missing = [k for k in meter.dimension_keys if k not in ev.payload]
        if missing:
            self._fail(ev, meter, "missing_dimension_payload_keys", f"Missing dimension keys: {missing}")
            return
        customer = ev.payload.get(meter.customer_key, "")
        if customer not in self.customers:
            self._fail(ev, meter, "meter_event_customer_not_found", f"No customer with id {customer} found.")

    def _fail(self, ev: MeterEvent, meter: Meter | None, code: str, message: str) -> None:
        ev.error = code
        self.error_reports.append(
            ErrorReport(meter.id if meter else "", code, message, ev.identifier, int(self.clock()))
        )
        event_type = "v1.billing.meter.error_report_triggered" if meter else "v1.billing.meter.no_meter_found"
        event_id = new_id("evt")
        now = self.clock()
        full: dict[str, Any] = {
            "id": event_id,
            "object": "v2.core.event",
            "type": event_type,
            "created": rfc3339(now),
            "livemode": False,
            "changes": None,
            "data": {
                "developer_message_summary": message,
                "validation_start": rfc3339(now - 60),
                "validation_end": rfc3339(now),
                "reason": {
                    "error_count": 1,
                    "error_types": [
                        {
                            "code": code,
                            "error_count": 1,
                            "sample_errors": [
                                {"error_message": message, "request": {"identifier": ev.identifier}}
                            ],
                        }
                    ],
                },
            },
        }
        if meter:
            full["related_object"] = {
                "id": meter.id,
                "type": "billing.meter",
                "url": f"/v1/billing/meters/{meter.id}",
            }
        self.thin_events[event_id] = full
        self.undelivered.append(event_id)

    def cancel(self, event_name: str, identifier: str, v2: bool) -> None:
        with self.lock:
            ev = self.events.get(identifier)
            if ev is None or ev.event_name != event_name or self.clock() - ev.created > DEDUPE_WINDOW:
                if v2:
                    raise v2_error("The event cannot be cancelled.", "invalid_cancel_configuration")
                raise v1_error(
                    f"No event with identifier {identifier} to cancel within 24 hours.",
                    param="cancel[identifier]",
                )
            ev.cancelled = True

    # -- reading ----------------------------------------------------------------------------

    def counted(self, meter: Meter) -> list[MeterEvent]:
        return [
            e for e in self.log if e.event_name == meter.event_name and e.error is None and not e.cancelled
        ]

    def aggregate(self, meter: Meter, customer: str, start: int, end: int) -> Decimal:
        values = [
            Decimal(e.payload[meter.value_key])
            for e in sorted(self.counted(meter), key=lambda e: (e.timestamp, e.created))
            if e.payload.get(meter.customer_key) == customer and start <= e.timestamp < end
        ]
        if meter.formula == "count":
            return Decimal(len(values))
        if meter.formula == "last":
            return values[-1] if values else Decimal(0)
        return sum(values, Decimal(0))

    def totals(self, event_name: str) -> dict[str, int]:
        """Per customer, the value Stripe bills (all time): what the tests compare with the ledger."""
        meter = self.any_meter(event_name)
        out: dict[str, int] = {}
        if meter is None:
            return out
        for e in self.counted(meter):
            c = e.payload[meter.customer_key]
            out[c] = out.get(c, 0) + int(e.payload[meter.value_key])
        return out

    def summaries(self, meter: Meter, q: dict[str, Any]) -> list[dict[str, Any]]:
        start, end = q["start_time"], q["end_time"]
        if start % 60 or end % 60:
            raise v1_error(
                "start_time and end_time must be aligned with minute boundaries.",
                param="start_time" if start % 60 else "end_time",
            )
        if end <= start:
            raise v1_error("end_time must be after start_time.", param="end_time")
        step = {"hour": 3600, "day": DAY}.get(q.get("value_grouping_window", ""), end - start)
        if step != end - start and (start % step or end % step):
            raise v1_error(
                "start_time and end_time must align with the value_grouping_window.",
                param="value_grouping_window",
            )
        out = []
        for lo in range(start, end, step):
            hi = min(lo + step, end)
            out.append(
                {
                    "id": f"mtrusgsum_{meter.id}_{q['customer']}_{lo}",
                    "object": "billing.meter_event_summary",
                    "aggregated_value": float(self.aggregate(meter, q["customer"], lo, hi)),
                    "start_time": lo,
                    "end_time": hi,
                    "livemode": False,
                    "meter": meter.id,
                }
            )
        return out
