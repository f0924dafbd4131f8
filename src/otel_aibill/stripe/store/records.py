"""What the export store keeps, as values, and their conversion to and from table rows (pure)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter
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


_ROW_FIELDS = attrgetter(
    "seq",
    "customer",
    "stripe_customer",
    "start_ns",
    "provider",
    "model",
    "currency",
    "billed",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)
"""An ``ExportRow``'s fields in ``ROW_COLS`` order (the dataclass's own order)."""


def export_row(values: Sequence[Any]) -> ExportRow:
    """An ``ExportRow`` from the ``ROW_COLS`` of a table row."""
    seq, customer, stripe_customer, start_ns, provider, model, currency, billed, *tokens = values
    return ExportRow(
        seq, customer, stripe_customer, start_ns, provider, model, currency, Decimal(billed), *tokens
    )


def row_values(row: ExportRow) -> tuple[Any, ...]:
    """The ``ROW_COLS`` parameters of a row (money as text: exact on every backend)."""
    values = _ROW_FIELDS(row)
    return (*values[:7], str(values[7]), *values[8:])


def stored_event(v: Sequence[Any]) -> StoredEvent:
    """A ``StoredEvent`` from the ``EVENT_COLS`` of a row (the dataclass's field order)."""
    ident, batch, created, customer, name, dims, window, ts, amount, value, *state = v
    return StoredEvent(
        ident, batch, created, customer, name, dims_of(dims), window, ts, Decimal(amount), value, *state
    )


def marks(n: int) -> str:
    return ",".join("?" * n)
