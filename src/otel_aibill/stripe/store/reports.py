"""What the store keeps for people to read: Stripe's webhook error reports, the last dry run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from otel_aibill.stripe.plan import EventDraft
from otel_aibill.stripe.store.base import StoreBase
from otel_aibill.stripe.store.records import WebhookError


class Reports(StoreBase):
    def add_webhook_errors(self, errors: Sequence[WebhookError]) -> int:
        """Record errors Stripe reported (a redelivered report is kept once); returns how many were new."""
        with self._tx() as cur:
            before = cur.execute("SELECT COUNT(*) FROM stripe_webhook_error").fetchone()[0]
            cur.executemany(
                "INSERT INTO stripe_webhook_error (event_id, identifier, type, code, meter, message,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, identifier) DO NOTHING",
                [
                    (e.event_id, e.identifier, e.type, e.code, e.meter, e.message, e.received_at)
                    for e in errors
                ],
            )
            after = cur.execute("SELECT COUNT(*) FROM stripe_webhook_error").fetchone()[0]
            return int(after - before)

    def webhook_errors(self) -> list[WebhookError]:
        return [
            WebhookError(*v)
            for v in self._query(
                "SELECT event_id, identifier, type, code, meter, message, received_at"
                " FROM stripe_webhook_error ORDER BY received_at, event_id, identifier"
            )
        ]

    def record_dry_run(self, events: Sequence[tuple[EventDraft, dict[str, str]]], now: int) -> None:
        """Replace the recorded dry run with these events and the payloads they would send."""
        with self._tx() as cur:
            cur.execute("DELETE FROM stripe_dry_run")
            cur.executemany(
                "INSERT INTO stripe_dry_run (identifier, stripe_customer, event_name, payload, ts, value,"
                " amount, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.identifier,
                        e.stripe_customer,
                        e.event_name,
                        json.dumps(p),
                        e.timestamp,
                        e.value,
                        str(e.amount),
                        now,
                    )
                    for e, p in events
                ],
            )

    def dry_run(self) -> list[dict[str, Any]]:
        return [
            {
                "identifier": i,
                "event_name": n,
                "payload": json.loads(p),
                "timestamp": ts,
                "value": v,
                "amount": a,
            }
            for i, _c, n, p, ts, v, a in self._query(
                "SELECT identifier, stripe_customer, event_name, payload, ts, value, amount"
                " FROM stripe_dry_run ORDER BY stripe_customer, event_name, ts, identifier"
            )
        ]
