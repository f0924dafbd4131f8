"""What the export store keeps, as values, and their conversion to and from table rows (pure)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from otel_aibill.stripe.plan import Dims, ExportRow

HELD_BATCH = "stripe-held"
"""The ledger export batch of rows held back from Stripe (see ``held.py``). Rows held before
this name was chosen are in the ledger batch ``stripe-dead-letter``; nothing reads either by
name, so both stay as they are."""

ROW_COLS = (
    "seq, customer, stripe_customer, start_ns, provider, model, currency, billed, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens"
)
ROW_MARKS = ", ".join("?" * 12)
BATCH_ROW_COLS = f"batch_id, {ROW_COLS}"

EVENT_COLS = (
    "e.identifier, e.batch_id, b.created_at, e.stripe_customer, e.event_name, e.dims, e.window_start, e.ts,"
    " e.amount, e.value, e.state, e.attempts, e.first_attempt_at, e.sent_at, e.error_code, e.last_error"
)
EVENTS_FROM = "stripe_event e JOIN stripe_batch b ON b.batch_id = e.batch_id"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    identifier: str
    batch_id: str
    batch_created_at: int
    stripe_customer: str
    event_name: str
    dims: Dims
    window_start: int
    timestamp: int
    amount: Decimal
    value: int
    state: str  # pending | sent | zero | rejected | error | review
    attempts: int
    first_attempt_at: int | None
    sent_at: int | None
    error_code: str | None
    last_error: str | None

    def payload(self, customer_key: str, value_key: str) -> dict[str, str]:
        body = {customer_key: self.stripe_customer, value_key: str(self.value)}
        body.update(dict(self.dims))
        return body


@dataclass(frozen=True, slots=True)
class HeldRow:
    """A ledger row held back from Stripe, with why; sent once the cause is fixed (if it can be)."""

    row: ExportRow
    reason: str  # unattributed | no_stripe_mapping | too_old | currency_mismatch | rejected_customer
    # | invalid_tokens
    detail: str
    created_at: int


@dataclass(frozen=True, slots=True)
class WebhookError:
    event_id: str
    identifier: str
    type: str
    code: str
    meter: str
    message: str
    received_at: int


def dims_text(dims: Dims) -> str:
    return json.dumps([list(d) for d in dims])


def dims_of(text: str) -> Dims:
    return tuple((str(k), str(v)) for k, v in json.loads(text))


def export_row(values: Sequence[Any]) -> ExportRow:
    """An ``ExportRow`` from the ``ROW_COLS`` of a table row."""
    return ExportRow(
        seq=values[0],
        customer=values[1],
        stripe_customer=values[2],
        start_ns=values[3],
        provider=values[4],
        model=values[5],
        currency=values[6],
        billed=Decimal(values[7]),
        input_tokens=values[8],
        output_tokens=values[9],
        cache_read_tokens=values[10],
        cache_write_tokens=values[11],
    )


def row_values(row: ExportRow) -> tuple[Any, ...]:
    """The ``ROW_COLS`` parameters of a row (money as text: exact on every backend)."""
    return (
        row.seq,
        row.customer,
        row.stripe_customer,
        row.start_ns,
        row.provider,
        row.model,
        row.currency,
        str(row.billed),
        row.input_tokens,
        row.output_tokens,
        row.cache_read_tokens,
        row.cache_write_tokens,
    )


def stored_event(v: Sequence[Any]) -> StoredEvent:
    """A ``StoredEvent`` from the ``EVENT_COLS`` of a row."""
    return StoredEvent(
        identifier=v[0],
        batch_id=v[1],
        batch_created_at=v[2],
        stripe_customer=v[3],
        event_name=v[4],
        dims=dims_of(v[5]),
        window_start=v[6],
        timestamp=v[7],
        amount=Decimal(v[8]),
        value=v[9],
        state=v[10],
        attempts=v[11],
        first_attempt_at=v[12],
        sent_at=v[13],
        error_code=v[14],
        last_error=v[15],
    )


def marks(n: int) -> str:
    return ",".join("?" * n)
