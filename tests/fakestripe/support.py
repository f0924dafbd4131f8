"""Test helpers: a ledger opened through the Ledger protocol, priced rows, an SDK client for the fake.

``open_test_ledger`` uses the project's SQLite ledger when present; until it exists, a small
SQLite-backed stand-in implementing the protocol methods the export uses keeps these tests running.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from fakestripe.server import API_KEY, FakeStripe
from otel_aibill.ledger.base import AppendBatch, AppendResult, Customer, LedgerRow, UsageQuery, UsageSummary
from otel_aibill.stripe.config import StripeConfig, StripeEnv
from otel_aibill.stripe.transport import make_client
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord


def open_test_ledger(url: str) -> Any:
    try:
        from otel_aibill.ledger import open_ledger  # type: ignore[attr-defined]
    except ImportError:
        return _StandInLedger(url.removeprefix("sqlite:///"))
    return open_ledger(url)


class _StandInLedger:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS t_rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, trace TEXT,"
            " span TEXT, customer TEXT, priced INTEGER, data BLOB, ingested TEXT, export_batch TEXT,"
            " UNIQUE (trace, span))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS t_customers (id TEXT PRIMARY KEY, stripe TEXT, name TEXT)"
        )

    def append(self, batch: AppendBatch) -> AppendResult:
        inserted = 0
        self._db.execute("BEGIN IMMEDIATE")
        for p in batch.rows:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO t_rows (trace, span, customer, priced, data, ingested)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    p.usage.trace_id,
                    p.usage.span_id,
                    p.usage.customer,
                    int(p.billed is not None),
                    pickle.dumps(p),
                    datetime.now(UTC).isoformat(),
                ),
            )
            inserted += cur.rowcount
        self._db.execute("COMMIT")
        return AppendResult(inserted=inserted)

    def _rows(self, sql: str, params: Sequence[Any]) -> list[LedgerRow]:
        return [
            LedgerRow(seq, pickle.loads(data), datetime.fromisoformat(ing), eb)
            for seq, data, ing, eb in self._db.execute(sql, params).fetchall()
        ]

    def exportable(self, limit: int = 10_000) -> list[LedgerRow]:
        return self._rows(
            "SELECT seq, data, ingested, export_batch FROM t_rows WHERE customer IS NOT NULL AND priced = 1"
            " AND export_batch IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        )

    def assign_export_batch(self, seqs: Sequence[int], batch_id: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(
            "UPDATE t_rows SET export_batch = ? WHERE seq = ?", [(batch_id, s) for s in seqs]
        )
        self._db.execute("COMMIT")

    def customers(self) -> list[Customer]:
        return [Customer(i, s, n) for i, s, n in self._db.execute("SELECT id, stripe, name FROM t_customers")]

    def set_customer(self, customer_id: str, stripe_customer_id: str | None, name: str | None = None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO t_customers VALUES (?, ?, ?)", (customer_id, stripe_customer_id, name)
        )

    def usage_summary(self, query: UsageQuery) -> list[UsageSummary]:
        groups: dict[tuple[str, ...], list[PricedUsage]] = {}
        for row in self.all_rows():
            u = row.priced.usage
            t = datetime.fromtimestamp(u.start_time_ns / 1e9, UTC)
            if (query.since and t < query.since) or (query.until and t >= query.until):
                continue
            fields = {"customer": u.customer or "", "provider": u.provider, "model": u.model}
            groups.setdefault(tuple(fields[k] for k in query.by), []).append(row.priced)
        return [
            UsageSummary(
                key=dict(zip(query.by, key, strict=True)),
                spans=len(ps),
                input_tokens=sum(p.usage.input_tokens for p in ps),
                output_tokens=sum(p.usage.output_tokens for p in ps),
                cache_read_tokens=sum(p.usage.cache_read_tokens for p in ps),
                cache_write_tokens=sum(p.usage.cache_write_tokens for p in ps),
                reasoning_tokens=0,
                cost=sum((p.cost or Decimal(0) for p in ps), Decimal(0)),
                billed=sum((p.billed or Decimal(0) for p in ps), Decimal(0)),
                currency="USD",
            )
            for key, ps in groups.items()
        ]

    def all_rows(self) -> list[LedgerRow]:
        return self._rows("SELECT seq, data, ingested, export_batch FROM t_rows ORDER BY seq", ())

    def close(self) -> None:
        self._db.close()


def priced(
    n: int,
    customer: str | None,
    start_s: int,
    billed: Decimal | str,
    *,
    provider: str = "openai",
    model: str = "gpt-4o",
    input_tokens: int = 100,
    output_tokens: int = 20,
    cache_read: int = 0,
    cache_write: int = 0,
    currency: str = "USD",
) -> PricedUsage:
    usage = UsageRecord(
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        start_time_ns=start_s * 1_000_000_000,
        end_time_ns=start_s * 1_000_000_000 + 1,
        provider=provider,
        model=model,
        operation="chat",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        customer=customer,
    )
    b = Decimal(billed)
    return PricedUsage(usage, PriceStatus.PRICED, cost=b, billed=b, currency=currency)


def client_for(fake: FakeStripe, sc: StripeConfig) -> stripe.StripeClient:
    client = make_client(StripeEnv(API_KEY, fake.api_base, fake.meter_events_base, None), sc)
    assert client is not None
    return client
