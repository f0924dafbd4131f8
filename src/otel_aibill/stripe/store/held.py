"""Rows held back from Stripe, and customers Stripe rejected.

A row is held, visible and never dropped, when it cannot go out (no customer, no Stripe id,
another currency, too old for Stripe, invalid tokens, a customer Stripe rejected). Held rows
whose cause is fixed go into the next batch (``restage_held``). A rejected customer's events are
taken back: their values leave the remainder carry and their rows are held, reduced to the
parts those events counted, so they are sent once, again, when the customer is fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from otel_aibill.stripe.plan import ExportRow, merge_tokens, restrict_tokens
from otel_aibill.stripe.store.base import StoreBase
from otel_aibill.stripe.store.carry import carry_of, put_carry
from otel_aibill.stripe.store.engine import Cursor, insert_rows
from otel_aibill.stripe.store.records import (
    BATCH_ROW_COLS,
    EVENT_COLS,
    EVENTS_FROM,
    ROW_COLS,
    ROW_MARKS,
    HeldRow,
    StoredEvent,
    dims_of,
    export_row,
    row_values,
    stored_event,
)


def put_held(cur: Cursor, held: Iterable[HeldRow]) -> None:
    """Hold rows (a row held again takes its new reason and parts, and is open again)."""
    cur.executemany(
        f"INSERT INTO stripe_held ({ROW_COLS}, reason, detail, state, created_at)"
        f" VALUES ({ROW_MARKS}, ?, ?, 'open', ?)"
        " ON CONFLICT (seq) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,"
        " stripe_customer = excluded.stripe_customer, input_tokens = excluded.input_tokens,"
        " output_tokens = excluded.output_tokens, cache_read_tokens = excluded.cache_read_tokens,"
        " cache_write_tokens = excluded.cache_write_tokens, billed = excluded.billed,"
        " state = 'open', resolved_batch = NULL",
        [(*row_values(h.row), h.reason, h.detail, h.created_at) for h in held],
    )


class Held(StoreBase):
    def held(self, *, state: str = "open") -> list[HeldRow]:
        """Held rows (``open``: still held; ``resolved``: sent on in a later batch)."""
        return [
            HeldRow(export_row(v[:12]), v[12], v[13], v[14])
            for v in self._query(
                f"SELECT {ROW_COLS}, reason, detail, created_at FROM stripe_held"
                " WHERE state = ? ORDER BY seq",
                (state,),
            )
        ]

    def restage_held(self, batch_id: str, rows: Sequence[ExportRow]) -> None:
        """Move held rows whose cause is gone (with their now-known Stripe customer) into a batch."""
        with self._tx() as cur:
            insert_rows(cur, "stripe_batch_row", BATCH_ROW_COLS, [(batch_id, *row_values(r)) for r in rows])
            cur.executemany(
                "UPDATE stripe_held SET state = 'resolved', resolved_batch = ? WHERE seq = ?",
                [(batch_id, r.seq) for r in rows],
            )

    def rejected_customers(self) -> dict[str, str]:
        return {c: m for c, m in self._query("SELECT stripe_customer, message FROM stripe_rejected_customer")}

    def reject_customer(self, stripe_customer: str, code: str, message: str, since: int, now: int) -> int:
        """Stripe refused this customer: take back its events from ``since`` and hold their rows.

        Returns the number of events taken back. Their values leave the remainder, their rows
        are held, so they are sent again once the customer is fixed.
        """
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO stripe_rejected_customer (stripe_customer, code, message, since)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (stripe_customer) DO NOTHING",
                (stripe_customer, code, message, since),
            )
            rows = cur.execute(
                f"SELECT {EVENT_COLS} FROM {EVENTS_FROM}"
                " WHERE e.stripe_customer = ? AND e.state IN ('pending', 'sent', 'zero', 'review')"
                " AND (e.state != 'sent' OR e.sent_at >= ?)",
                (stripe_customer, since),
            ).fetchall()
            events = [stored_event(v) for v in rows]
            carry = carry_of(cur, stripe_customer)
            for ev in events:
                key = (ev.stripe_customer, ev.event_name, ev.dims)
                carry[key] = carry.get(key, Decimal(0)) - ev.amount + ev.value
            put_carry(cur, carry)
            cur.executemany(
                "UPDATE stripe_event SET state = 'rejected', error_code = ?, last_error = ?"
                " WHERE identifier = ?",
                [(code, message, ev.identifier) for ev in events],
            )
            put_held(cur, _held_parts(cur, events, f"{code}: {message}", now))
            return len(events)

    def clear_rejections(self, stripe_customer: str | None = None) -> int:
        with self._tx() as cur:
            if stripe_customer is None:
                return int(cur.execute("DELETE FROM stripe_rejected_customer").rowcount)
            return int(
                cur.execute(
                    "DELETE FROM stripe_rejected_customer WHERE stripe_customer = ?", (stripe_customer,)
                ).rowcount
            )


def _held_parts(cur: Cursor, events: Sequence[StoredEvent], detail: str, now: int) -> list[HeldRow]:
    """The rows of the events taken back, each reduced to the parts those events counted.

    Rows (or token types of a row) of events that stay counted are not held: sending them
    again after the customer is released would bill them twice.
    """
    taken: dict[tuple[str, int], set[str | None]] = {}
    for ev in events:
        kind = dict(ev.dims).get("token_type")
        for (seq,) in cur.execute(
            "SELECT seq FROM stripe_event_row WHERE identifier = ?", (ev.identifier,)
        ).fetchall():
            taken.setdefault((ev.batch_id, seq), set()).add(kind)
    held: dict[int, tuple[ExportRow, set[str]]] = {}
    for (batch, seq), kinds in sorted(taken.items()):
        values = cur.execute(
            f"SELECT {ROW_COLS} FROM stripe_batch_row WHERE batch_id = ? AND seq = ?", (batch, seq)
        ).fetchone()
        if values is None:
            continue
        row, every = export_row(values), set[str]()
        if None not in kinds:  # tokens mode: the row may also be in events that stay counted
            every = {
                dict(dims_of(d)).get("token_type", "")
                for (d,) in cur.execute(
                    "SELECT e.dims FROM stripe_event_row m JOIN stripe_event e"
                    " ON e.identifier = m.identifier WHERE m.seq = ? AND e.batch_id = ?",
                    (seq, batch),
                ).fetchall()
            }
            row = restrict_tokens(row, {k for k in kinds if k is not None}, every)
            if seq not in held:
                found = cur.execute(
                    f"SELECT {ROW_COLS} FROM stripe_held WHERE seq = ? AND state = 'open'"
                    " AND reason = 'rejected_customer'",
                    (seq,),
                ).fetchone()
                if found is not None:  # another part of it is already held: hold both
                    held[seq] = (export_row(found), every)
            if seq in held:
                other, seen = held[seq]
                every |= seen
                row = merge_tokens(row, other, every)
        held[seq] = (row, every)
    return [HeldRow(row, "rejected_customer", detail, now) for row, _ in held.values()]
