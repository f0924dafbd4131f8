"""The export's own durable state, in its own tables beside the ledger's.

Write-ahead: a batch's rows are staged, then its events (with their identifiers and values) and
the remainder carry are written in one transaction, all before anything is sent. Sending only
flips states. So a crash at any point leaves either nothing done or a batch that is sent again
with the same identifiers.

SQL is kept portable (``?`` placeholders are the only SQLite-ism, translated at the edge).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from otel_aibill.stripe.plan import CarryKey, Dims, EventDraft, ExportRow, merge_tokens, restrict_tokens

DEAD_LETTER_BATCH = "stripe-dead-letter"
"""The ledger export batch of rows held back from Stripe (see ``stripe_dead_letter``)."""

SCHEMA_VERSION = 3

_ROW_COLS = (
    "seq, customer, stripe_customer, start_ns, provider, model, currency, billed, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens"
)

Step = str | Callable[[sqlite3.Cursor], None]

_MIGRATIONS: dict[int, tuple[Step, ...]] = {
    1: (
        "CREATE TABLE stripe_batch (batch_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL,"
        " api TEXT NOT NULL, mode TEXT NOT NULL, state TEXT NOT NULL)",
        "CREATE TABLE stripe_batch_row (batch_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " customer TEXT NOT NULL, stripe_customer TEXT NOT NULL, start_ns INTEGER NOT NULL,"
        " provider TEXT NOT NULL, model TEXT NOT NULL, currency TEXT NOT NULL, billed TEXT NOT NULL,"
        " input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
        " cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,"
        " PRIMARY KEY (batch_id, seq))",
        "CREATE INDEX stripe_batch_row_seq ON stripe_batch_row (seq)",
        "CREATE TABLE stripe_event (identifier TEXT PRIMARY KEY, batch_id TEXT NOT NULL,"
        " stripe_customer TEXT NOT NULL, event_name TEXT NOT NULL, dims TEXT NOT NULL,"
        " window_start INTEGER NOT NULL, ts INTEGER NOT NULL, amount TEXT NOT NULL, value INTEGER NOT NULL,"
        " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, first_attempt_at INTEGER,"
        " sent_at INTEGER, error_code TEXT, last_error TEXT)",
        "CREATE INDEX stripe_event_state ON stripe_event (state)",
        "CREATE INDEX stripe_event_customer ON stripe_event (stripe_customer, event_name, ts)",
        "CREATE TABLE stripe_carry (stripe_customer TEXT NOT NULL, event_name TEXT NOT NULL,"
        " dims TEXT NOT NULL, remainder TEXT NOT NULL, PRIMARY KEY (stripe_customer, event_name, dims))",
        "CREATE TABLE stripe_dead_letter (seq INTEGER PRIMARY KEY, customer TEXT NOT NULL,"
        " stripe_customer TEXT NOT NULL, start_ns INTEGER NOT NULL, provider TEXT NOT NULL,"
        " model TEXT NOT NULL, currency TEXT NOT NULL, billed TEXT NOT NULL,"
        " input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,"
        " cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,"
        " reason TEXT NOT NULL, detail TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL,"
        " resolved_batch TEXT)",
        "CREATE INDEX stripe_dead_letter_state ON stripe_dead_letter (state)",
        "CREATE TABLE stripe_rejected_customer (stripe_customer TEXT PRIMARY KEY, code TEXT NOT NULL,"
        " message TEXT NOT NULL, since INTEGER NOT NULL)",
        "CREATE TABLE stripe_webhook_error (event_id TEXT NOT NULL, identifier TEXT NOT NULL,"
        " type TEXT NOT NULL, code TEXT NOT NULL, meter TEXT NOT NULL, message TEXT NOT NULL,"
        " received_at INTEGER NOT NULL, PRIMARY KEY (event_id, identifier))",
        "CREATE TABLE stripe_dry_run (identifier TEXT PRIMARY KEY, stripe_customer TEXT NOT NULL,"
        " event_name TEXT NOT NULL, payload TEXT NOT NULL, ts INTEGER NOT NULL, value INTEGER NOT NULL,"
        " amount TEXT NOT NULL, recorded_at INTEGER NOT NULL)",
    ),
    2: (
        "CREATE TABLE stripe_lease (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL)",
    ),
    3: (
        "CREATE TABLE stripe_event_row (identifier TEXT NOT NULL, seq INTEGER NOT NULL,"
        " PRIMARY KEY (identifier, seq))",
        lambda cur: _backfill_members(cur),
    ),
}


def _backfill_members(cur: sqlite3.Cursor) -> None:
    """Membership of events finalized before it was recorded, derived from their batch's rows.

    A row belongs to the event of its batch with the same customer, meter and model whose window
    is the latest one starting at or before the row: exact without knowing the window length.
    Token types are not told apart (a row may be listed under a type it has none of), which only
    widens the audit and changes no amount held.
    """
    starts: dict[tuple[str, str, str, str], list[tuple[int, str]]] = {}
    for ident, batch, customer, name, dims, start in cur.execute(
        "SELECT identifier, batch_id, stripe_customer, event_name, dims, window_start FROM stripe_event"
    ).fetchall():
        starts.setdefault((batch, customer, name, dims), []).append((start, ident))
    by_batch: dict[tuple[str, str], list[tuple[str, str, list[tuple[int, str]]]]] = {}
    for (batch, customer, name, dims), found in starts.items():
        by_batch.setdefault((batch, customer), []).append((name, dims, sorted(found)))
    members: list[tuple[str, int]] = []
    for (batch, customer), keys in by_batch.items():
        for seq, start_ns, provider, model in cur.execute(
            "SELECT seq, start_ns, provider, model FROM stripe_batch_row"
            " WHERE batch_id = ? AND stripe_customer = ?",
            (batch, customer),
        ).fetchall():
            ts = start_ns // 1_000_000_000
            for _name, dims, found in keys:
                wanted = dict(_dims(dims)).get("model")
                if wanted is not None and wanted != f"{provider}/{model}":
                    continue
                before = [ident for start, ident in found if start <= ts]
                if before:
                    members.append((before[-1], seq))
    cur.executemany("INSERT OR IGNORE INTO stripe_event_row (identifier, seq) VALUES (?, ?)", members)


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
class DeadLetter:
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


def sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :] or ":memory:"
    raise ValueError(f"the Stripe export store supports sqlite:/// URLs for now, not {url!r}")


def _dims_text(dims: Dims) -> str:
    return json.dumps([list(d) for d in dims])


def _dims(text: str) -> Dims:
    return tuple((str(k), str(v)) for k, v in json.loads(text))


def _row(values: Sequence[Any]) -> ExportRow:
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


def _row_values(row: ExportRow) -> tuple[Any, ...]:
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


_EVENT_COLS = (
    "e.identifier, e.batch_id, b.created_at, e.stripe_customer, e.event_name, e.dims, e.window_start, e.ts,"
    " e.amount, e.value, e.state, e.attempts, e.first_attempt_at, e.sent_at, e.error_code, e.last_error"
)


def _event(v: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        identifier=v[0],
        batch_id=v[1],
        batch_created_at=v[2],
        stripe_customer=v[3],
        event_name=v[4],
        dims=_dims(v[5]),
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


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ExportStore:
    """Export batches, events, remainders, dead letters, webhook errors and dry-run records."""

    def __init__(self, url: str) -> None:
        self._conn = sqlite3.connect(sqlite_path(url), isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._tx() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS stripe_schema_version (version INTEGER NOT NULL)")
            found = cur.execute("SELECT MAX(version) FROM stripe_schema_version").fetchone()[0] or 0
            for version in sorted(v for v in _MIGRATIONS if v > found):
                for step in _MIGRATIONS[version]:
                    if isinstance(step, str):
                        cur.execute(step)
                    else:
                        step(cur)
                cur.execute("INSERT INTO stripe_schema_version (version) VALUES (?)", (version,))

    class _Tx:
        def __init__(self, store: ExportStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Cursor:
            self.store._lock.acquire()
            self.cur = self.store._conn.cursor()
            self.cur.execute("BEGIN IMMEDIATE")
            return self.cur

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            try:
                self.cur.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()

    def _tx(self) -> ExportStore._Tx:
        return ExportStore._Tx(self)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._conn.close()

    @property
    def schema_version(self) -> int:
        return int(self._query("SELECT MAX(version) FROM stripe_schema_version")[0][0])

    # -- one exporter at a time -------------------------------------------------------------

    def acquire_lease(
        self, owner: str, now: int, ttl: int, gone: Callable[[str], bool] = lambda owner: False
    ) -> int | None:
        """Take or renew the export lease; None when it is taken, else when it expires.

        Two exporters on one store (``serve`` and a manual ``stripe export``) would otherwise
        read the same ledger rows between checking and staging them, and finalize each other's
        half-staged batches. ``gone(owner)`` says a holder is known dead (a crashed process), so a
        restart need not wait for its lease to run out.
        """
        with self._tx() as cur:
            found = cur.execute("SELECT owner, expires_at FROM stripe_lease WHERE name = 'export'").fetchone()
            if found is not None and found[0] != owner and found[1] > now and not gone(found[0]):
                return None
            cur.execute(
                "INSERT INTO stripe_lease (name, owner, expires_at) VALUES ('export', ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
                (owner, now + ttl),
            )
            return now + ttl

    def release_lease(self, owner: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM stripe_lease WHERE name = 'export' AND owner = ?", (owner,))

    # -- staging ----------------------------------------------------------------------------

    def known_seqs(self, seqs: Sequence[int]) -> dict[int, str]:
        """Ledger rows this store already holds, with the ledger batch they belong to."""
        found: dict[int, str] = {}
        for part in _chunks(list(seqs)):
            marks = ",".join("?" * len(part))
            for seq, state in self._query(
                f"SELECT seq, state FROM stripe_dead_letter WHERE seq IN ({marks})", part
            ):
                found[seq] = DEAD_LETTER_BATCH if state == "open" else ""
            for seq, batch in self._query(
                f"SELECT seq, MAX(batch_id) FROM stripe_batch_row WHERE seq IN ({marks}) GROUP BY seq", part
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

    def stage(self, batch_id: str, rows: Sequence[ExportRow], dead: Sequence[DeadLetter]) -> None:
        """Record rows for a batch and rows held back, in one transaction."""
        with self._tx() as cur:
            cur.executemany(
                f"INSERT INTO stripe_batch_row (batch_id, {_ROW_COLS}) VALUES (?{', ?' * 12})",
                [(batch_id, *_row_values(r)) for r in rows],
            )
            self._put_dead(cur, dead)

    def _put_dead(self, cur: sqlite3.Cursor, dead: Iterable[DeadLetter]) -> None:
        cur.executemany(
            f"INSERT INTO stripe_dead_letter ({_ROW_COLS}, reason, detail, state, created_at)"
            f" VALUES ({', '.join('?' * 12)}, ?, ?, 'open', ?)"
            " ON CONFLICT (seq) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,"
            " stripe_customer = excluded.stripe_customer, input_tokens = excluded.input_tokens,"
            " output_tokens = excluded.output_tokens, cache_read_tokens = excluded.cache_read_tokens,"
            " cache_write_tokens = excluded.cache_write_tokens, billed = excluded.billed,"
            " state = 'open', resolved_batch = NULL",
            [(*_row_values(d.row), d.reason, d.detail, d.created_at) for d in dead],
        )

    def restage_dead(self, batch_id: str, rows: Sequence[ExportRow]) -> None:
        """Move resolvable dead letters (with their now-known Stripe customer) into a batch."""
        with self._tx() as cur:
            cur.executemany(
                f"INSERT INTO stripe_batch_row (batch_id, {_ROW_COLS}) VALUES (?{', ?' * 12})",
                [(batch_id, *_row_values(r)) for r in rows],
            )
            cur.executemany(
                "UPDATE stripe_dead_letter SET state = 'resolved', resolved_batch = ? WHERE seq = ?",
                [(batch_id, r.seq) for r in rows],
            )

    def staging_batches(self) -> list[str]:
        return [r[0] for r in self._query("SELECT batch_id FROM stripe_batch WHERE state = 'staging'")]

    def staged_count(self, batch_id: str) -> int:
        return int(self._query("SELECT COUNT(*) FROM stripe_batch_row WHERE batch_id = ?", (batch_id,))[0][0])

    def iter_staged(self, batch_id: str) -> Iterator[ExportRow]:
        with self._lock:
            cur = self._conn.execute(
                f"SELECT {_ROW_COLS} FROM stripe_batch_row WHERE batch_id = ? ORDER BY seq", (batch_id,)
            )
            rows = cur.fetchall()
        for values in rows:
            yield _row(values)

    def drop_batch(self, batch_id: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM stripe_batch WHERE batch_id = ? AND state = 'staging'", (batch_id,))

    def carry(self) -> dict[CarryKey, Decimal]:
        return {
            (c, e, _dims(d)): Decimal(r)
            for c, e, d, r in self._query(
                "SELECT stripe_customer, event_name, dims, remainder FROM stripe_carry"
            )
        }

    def finalize(self, batch_id: str, events: Sequence[EventDraft], carry: dict[CarryKey, Decimal]) -> None:
        """Events and the remainders they leave, in one transaction, before any of them is sent."""
        with self._tx() as cur:
            cur.executemany(
                "INSERT INTO stripe_event (identifier, batch_id, stripe_customer, event_name, dims,"
                " window_start, ts, amount, value, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.identifier,
                        batch_id,
                        e.stripe_customer,
                        e.event_name,
                        _dims_text(e.dims),
                        e.window_start,
                        e.timestamp,
                        str(e.amount),
                        e.value,
                        "pending" if e.value > 0 else "zero",
                    )
                    for e in events
                ],
            )
            cur.executemany(
                "INSERT INTO stripe_event_row (identifier, seq) VALUES (?, ?)",
                [(e.identifier, seq) for e in events for seq in e.members],
            )
            self._put_carry(cur, carry)
            cur.execute("UPDATE stripe_batch SET state = 'open' WHERE batch_id = ?", (batch_id,))

    def _put_carry(self, cur: sqlite3.Cursor, carry: dict[CarryKey, Decimal]) -> None:
        cur.executemany(
            "INSERT INTO stripe_carry (stripe_customer, event_name, dims, remainder) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (stripe_customer, event_name, dims) DO UPDATE SET remainder = excluded.remainder",
            [(c, e, _dims_text(d), str(r)) for (c, e, d), r in carry.items()],
        )

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
            where.append(f"e.state IN ({','.join('?' * len(states))})")
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
            _event(v)
            for v in self._query(
                f"SELECT {_EVENT_COLS} FROM stripe_event e JOIN stripe_batch b ON b.batch_id = e.batch_id"
                f" WHERE {' AND '.join(where)} ORDER BY b.created_at, e.identifier",
                params,
            )
        ]

    def event(self, identifier: str) -> StoredEvent | None:
        rows = self._query(
            f"SELECT {_EVENT_COLS} FROM stripe_event e JOIN stripe_batch b ON b.batch_id = e.batch_id"
            " WHERE e.identifier = ?",
            (identifier,),
        )
        return _event(rows[0]) if rows else None

    def mark_attempt(self, identifiers: Sequence[str], now: int) -> None:
        """Written before a send: an event never attempted cannot be in Stripe."""
        with self._tx() as cur:
            cur.executemany(
                "UPDATE stripe_event SET attempts = attempts + 1,"
                " first_attempt_at = COALESCE(first_attempt_at, ?) WHERE identifier = ?",
                [(now, i) for i in identifiers],
            )

    def mark_sent(self, identifiers: Sequence[str], now: int) -> None:
        with self._tx() as cur:
            cur.executemany(
                "UPDATE stripe_event SET state = 'sent', sent_at = ?, last_error = NULL"
                " WHERE identifier = ? AND state IN ('pending', 'review')",
                [(now, i) for i in identifiers],
            )

    def mark_state(
        self, identifiers: Sequence[str], state: str, code: str | None, message: str | None
    ) -> None:
        with self._tx() as cur:
            cur.executemany(
                "UPDATE stripe_event SET state = ?, error_code = ?, last_error = ? WHERE identifier = ?",
                [(state, code, message, i) for i in identifiers],
            )

    def note_error(self, identifiers: Sequence[str], message: str) -> None:
        """A failure that will be retried: the event stays pending."""
        with self._tx() as cur:
            cur.executemany(
                "UPDATE stripe_event SET last_error = ? WHERE identifier = ?",
                [(message[:500], i) for i in identifiers],
            )

    def reset_attempts(self, identifiers: Sequence[str]) -> None:
        """After reconciliation proved Stripe never counted these: safe to send as new."""
        with self._tx() as cur:
            cur.executemany(
                "UPDATE stripe_event SET attempts = 0, first_attempt_at = NULL, state = 'pending'"
                " WHERE identifier = ?",
                [(i,) for i in identifiers],
            )

    # -- rejection and dead letters ---------------------------------------------------------

    def rejected_customers(self) -> dict[str, str]:
        return {c: m for c, m in self._query("SELECT stripe_customer, message FROM stripe_rejected_customer")}

    def reject_customer(self, stripe_customer: str, code: str, message: str, since: int, now: int) -> int:
        """Stripe refused this customer: take back its events from ``since`` and hold their rows.

        Returns the number of events taken back. Their values leave the remainder, their rows
        become dead letters, so they are sent again once the customer is fixed.
        """
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO stripe_rejected_customer (stripe_customer, code, message, since)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (stripe_customer) DO NOTHING",
                (stripe_customer, code, message, since),
            )
            rows = cur.execute(
                f"SELECT {_EVENT_COLS} FROM stripe_event e JOIN stripe_batch b ON b.batch_id = e.batch_id"
                " WHERE e.stripe_customer = ? AND e.state IN ('pending', 'sent', 'zero', 'review')"
                " AND (e.state != 'sent' OR e.sent_at >= ?)",
                (stripe_customer, since),
            ).fetchall()
            events = [_event(v) for v in rows]
            carry = {
                (c, e, _dims(d)): Decimal(r)
                for c, e, d, r in cur.execute(
                    "SELECT stripe_customer, event_name, dims, remainder FROM stripe_carry"
                    " WHERE stripe_customer = ?",
                    (stripe_customer,),
                ).fetchall()
            }
            for ev in events:
                key = (ev.stripe_customer, ev.event_name, ev.dims)
                carry[key] = carry.get(key, Decimal(0)) - ev.amount + ev.value
            self._put_carry(cur, carry)
            cur.executemany(
                "UPDATE stripe_event SET state = 'rejected', error_code = ?, last_error = ?"
                " WHERE identifier = ?",
                [(code, message, ev.identifier) for ev in events],
            )
            dead = self._held_parts(cur, events, f"{code}: {message}", now)
            self._put_dead(cur, dead)
            return len(events)

    def _held_parts(
        self, cur: sqlite3.Cursor, events: Sequence[StoredEvent], detail: str, now: int
    ) -> list[DeadLetter]:
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
                f"SELECT {_ROW_COLS} FROM stripe_batch_row WHERE batch_id = ? AND seq = ?", (batch, seq)
            ).fetchone()
            if values is None:
                continue
            row, every = _row(values), set[str]()
            if None not in kinds:  # tokens mode: the row may also be in events that stay counted
                every = {
                    dict(_dims(d)).get("token_type", "")
                    for (d,) in cur.execute(
                        "SELECT e.dims FROM stripe_event_row m JOIN stripe_event e"
                        " ON e.identifier = m.identifier WHERE m.seq = ? AND e.batch_id = ?",
                        (seq, batch),
                    ).fetchall()
                }
                row = restrict_tokens(row, {k for k in kinds if k is not None}, every)
                if seq not in held:
                    found = cur.execute(
                        f"SELECT {_ROW_COLS} FROM stripe_dead_letter WHERE seq = ? AND state = 'open'"
                        " AND reason = 'rejected_customer'",
                        (seq,),
                    ).fetchone()
                    if found is not None:  # another part of it is already held: hold both
                        held[seq] = (_row(found), every)
                if seq in held:
                    other, seen = held[seq]
                    every |= seen
                    row = merge_tokens(row, other, every)
            held[seq] = (row, every)
        return [DeadLetter(row, "rejected_customer", detail, now) for row, _ in held.values()]

    def clear_rejections(self, stripe_customer: str | None = None) -> int:
        with self._tx() as cur:
            if stripe_customer is None:
                return cur.execute("DELETE FROM stripe_rejected_customer").rowcount
            return cur.execute(
                "DELETE FROM stripe_rejected_customer WHERE stripe_customer = ?", (stripe_customer,)
            ).rowcount

    def dead_letters(self, *, state: str = "open") -> list[DeadLetter]:
        return [
            DeadLetter(_row(v[:12]), v[12], v[13], v[14])
            for v in self._query(
                f"SELECT {_ROW_COLS}, reason, detail, created_at FROM stripe_dead_letter"
                " WHERE state = ? ORDER BY seq",
                (state,),
            )
        ]

    # -- audit ------------------------------------------------------------------------------

    def event_members(self, identifier: str) -> list[int]:
        """Ledger row seqs summed into an event (the audit trail from invoice to spans)."""
        return [
            r[0]
            for r in self._query(
                "SELECT seq FROM stripe_event_row WHERE identifier = ? ORDER BY seq", (identifier,)
            )
        ]

    # -- webhook ----------------------------------------------------------------------------

    def add_webhook_errors(self, errors: Sequence[WebhookError]) -> int:
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

    # -- dry run ----------------------------------------------------------------------------

    def record_dry_run(self, events: Sequence[tuple[EventDraft, dict[str, str]]], now: int) -> None:
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
