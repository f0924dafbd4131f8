"""The export store's tables, as migrations of the ``stripe export store`` component.

They live beside the ledger's (same SQLite file, same PostgreSQL schema) with a version table
of their own. PostgreSQL support started at version 4: there, version 1 creates the tables as
version 4 has them and versions 2 to 4 have nothing to do. Integers are ``bigint`` on
PostgreSQL (nanosecond times, ledger seqs); amounts are exact decimal text on both.
"""

from __future__ import annotations

from typing import Any

from otel_aibill.db import Component, Migration
from otel_aibill.stripe.store.records import dims_of

_V1 = (
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
)
_V2 = ("CREATE TABLE stripe_lease (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL)",)
_V3 = (
    "CREATE TABLE stripe_event_row (identifier TEXT NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY (identifier, seq))",
)
_V4 = (
    "ALTER TABLE stripe_dead_letter RENAME TO stripe_held",
    "DROP INDEX stripe_dead_letter_state",
    "CREATE INDEX stripe_held_state ON stripe_held (state)",
)


def _postgres(statement: str) -> str:
    """A statement of the SQLite tables in PostgreSQL's types (every integer a ``bigint``)."""
    return statement.replace(" INTEGER", " BIGINT")


_POSTGRES_V1 = tuple(_postgres(s) for s in (*_V1, *_V3, *_V4))  # no lease table: an advisory lock


def _backfill_members(cur: Any) -> None:
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
                wanted = dict(dims_of(dims)).get("model")
                if wanted is not None and wanted != f"{provider}/{model}":
                    continue
                before = [ident for start, ident in found if start <= ts]
                if before:
                    members.append((before[-1], seq))
    cur.executemany("INSERT OR IGNORE INTO stripe_event_row (identifier, seq) VALUES (?, ?)", members)


STORE = Component(
    "Stripe export store",
    "stripe_schema_version",
    (
        Migration(1, "batches, events, carry, held rows, webhook errors, dry run", _V1, _POSTGRES_V1),
        Migration(2, "one exporter at a time: the lease", _V2),
        Migration(3, "event membership (event -> ledger rows) for audit", (*_V3, _backfill_members)),
        Migration(4, "dead letters are called held rows", _V4),
    ),
)
"""The export store's tables, versioned in ``stripe_schema_version``."""
