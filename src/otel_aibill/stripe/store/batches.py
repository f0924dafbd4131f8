"""Export batches and their meter events: staged rows, planned events, what was sent.

Write-ahead: a batch's rows are staged, then its events (with their identifiers and values),
their member rows and the remainder carry are written in one transaction, all before anything
is sent. Sending only flips states. So a crash at any point leaves either nothing done or a
batch that is sent again with the same identifiers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from otel_aibill.stripe.plan import CarryKey, EventDraft, ExportRow
from otel_aibill.stripe.store.base import StoreBase
from otel_aibill.stripe.store.carry import ALL_CARRY, put_carry, read_carry
from otel_aibill.stripe.store.engine import insert_rows
from otel_aibill.stripe.store.held import put_held
from otel_aibill.stripe.store.records import (
    BATCH_ROW_COLS,
    EVENT_COLS,
    EVENTS_FROM,
    HELD_BATCH,
    ROW_COLS,
    HeldRow,
    StoredEvent,
    dims_text,
    export_row,
    marks,
    row_values,
    stored_event,
)


class Batches(StoreBase):
    # -- staging ----------------------------------------------------------------------------

    def known_seqs(self, seqs: Sequence[int]) -> dict[int, str]:
        """Ledger rows this store already holds, with the ledger batch they belong to."""
        found: dict[int, str] = {}
        for cond, params in self._db.match_any("seq", list(seqs)):
            for seq, state in self._query(f"SELECT seq, state FROM stripe_held WHERE {cond}", params):
                found[seq] = HELD_BATCH if state == "open" else ""
            for seq, batch in self._query(
                f"SELECT seq, MAX(batch_id) FROM stripe_batch_row WHERE {cond} GROUP BY seq", params
            ):
                if not found.get(seq):
                    found[seq] = batch
        return found

    def create_batch(self, batch_id: str, now: int, api: str, mode: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO stripe_batch (batch_id, created_at, api, mode, state) VALUES (?, ?, ?, ?, ?)",
                (batch_id, now, api, mode, "staging"),
            )

    def stage(self, batch_id: str, rows: Sequence[ExportRow], held: Sequence[HeldRow]) -> None:
        """Record rows for a batch and rows held back, in one transaction."""
        with self._tx() as cur:
            insert_rows(cur, "stripe_batch_row", BATCH_ROW_COLS, [(batch_id, *row_values(r)) for r in rows])
            put_held(cur, held)

    def staging_batches(self) -> list[str]:
        return [r[0] for r in self._query("SELECT batch_id FROM stripe_batch WHERE state = 'staging'")]

    def staged_count(self, batch_id: str) -> int:
        return int(self._query("SELECT COUNT(*) FROM stripe_batch_row WHERE batch_id = ?", (batch_id,))[0][0])

    def iter_staged(self, batch_id: str) -> Iterator[ExportRow]:
        rows = self._query(
            f"SELECT {ROW_COLS} FROM stripe_batch_row WHERE batch_id = ? ORDER BY seq", (batch_id,)
        )
        for values in rows:
            yield export_row(values)

    def drop_batch(self, batch_id: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM stripe_batch WHERE batch_id = ? AND state = 'staging'", (batch_id,))

    def carry(self) -> dict[CarryKey, Decimal]:
        return read_carry(self._query(ALL_CARRY))

    def finalize(
        self, batch_id: str, events: Sequence[EventDraft], carry: Mapping[CarryKey, Decimal]
    ) -> None:
        """Events and the remainders they leave, in one transaction, before any of them is sent."""
        with self._tx() as cur:
            insert_rows(
                cur,
                "stripe_event",
                "identifier, batch_id, stripe_customer, event_name, dims, window_start, ts, amount, value,"
                " state",
                [
                    (
                        e.identifier,
                        batch_id,
                        e.stripe_customer,
                        e.event_name,
                        dims_text(e.dims),
                        e.window_start,
                        e.timestamp,
                        str(e.amount),
                        e.value,
                        "pending" if e.value > 0 else "zero",
                    )
                    for e in events
                ],
            )
            insert_rows(
                cur,
                "stripe_event_row",
                "identifier, seq",
                [(e.identifier, seq) for e in events for seq in e.members],
            )
            put_carry(cur, carry)
            cur.execute("UPDATE stripe_batch SET state = 'open' WHERE batch_id = ?", (batch_id,))

    # -- sending ----------------------------------------------------------------------------

    def events(
        self,
        *,
        states: Sequence[str] | None = None,
        stripe_customer: str | None = None,
        event_name: str | None = None,
        ts_from: int | None = None,
        ts_to: int | None = None,
    ) -> list[StoredEvent]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if states:
            where.append(f"e.state IN ({marks(len(states))})")
            params.extend(states)
        for cond, value in (
            ("e.stripe_customer = ?", stripe_customer),
            ("e.event_name = ?", event_name),
            ("e.ts >= ?", ts_from),
            ("e.ts < ?", ts_to),
        ):
            if value is not None:
                where.append(cond)
                params.append(value)
        return [
            stored_event(v)
            for v in self._query(
                f"SELECT {EVENT_COLS} FROM {EVENTS_FROM} WHERE {' AND '.join(where)}"
                " ORDER BY b.created_at, e.identifier",
                params,
            )
        ]

    def event(self, identifier: str) -> StoredEvent | None:
        rows = self._query(f"SELECT {EVENT_COLS} FROM {EVENTS_FROM} WHERE e.identifier = ?", (identifier,))
        return stored_event(rows[0]) if rows else None

    def _each(self, identifiers: Sequence[str], sql: str, *values: Any) -> None:
        """``sql`` once per event in one transaction, with ``values`` and then its identifier."""
        with self._tx() as cur:
            cur.executemany(sql, [(*values, i) for i in identifiers])

    def mark_attempt(self, identifiers: Sequence[str], now: int) -> None:
        """Written before a send: an event never attempted cannot be in Stripe."""
        self._each(
            identifiers,
            "UPDATE stripe_event SET attempts = attempts + 1,"
            " first_attempt_at = COALESCE(first_attempt_at, ?) WHERE identifier = ?",
            now,
        )

    def mark_sent(self, identifiers: Sequence[str], now: int) -> None:
        self._each(
            identifiers,
            "UPDATE stripe_event SET state = 'sent', sent_at = ?, last_error = NULL"
            " WHERE identifier = ? AND state IN ('pending', 'review')",
            now,
        )

    def mark_state(
        self, identifiers: Sequence[str], state: str, code: str | None, message: str | None
    ) -> None:
        self._each(
            identifiers,
            "UPDATE stripe_event SET state = ?, error_code = ?, last_error = ? WHERE identifier = ?",
            state,
            code,
            message,
        )

    def note_error(self, identifiers: Sequence[str], message: str) -> None:
        """A failure that will be retried: the event stays pending."""
        self._each(identifiers, "UPDATE stripe_event SET last_error = ? WHERE identifier = ?", message[:500])

    def reset_attempts(self, identifiers: Sequence[str]) -> None:
        """After reconciliation proved Stripe never counted these: safe to send as new."""
        self._each(
            identifiers,
            "UPDATE stripe_event SET attempts = 0, first_attempt_at = NULL, state = 'pending'"
            " WHERE identifier = ?",
        )

    # -- audit ------------------------------------------------------------------------------

    def event_members(self, identifier: str) -> list[int]:
        """Ledger row seqs summed into an event (the audit trail from invoice to spans)."""
        return [
            r[0]
            for r in self._query(
                "SELECT seq FROM stripe_event_row WHERE identifier = ? ORDER BY seq", (identifier,)
            )
        ]
