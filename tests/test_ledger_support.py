"""Builders shared by the ledger tests (no tests here)."""

from __future__ import annotations

import itertools
import sqlite3
from decimal import Decimal

from otel_aibill.ledger.rows import INSERT_COLUMNS, to_params
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
HOUR = 3_600 * 1_000_000_000
_ids = itertools.count(1)


def trace_id(n: int | None = None) -> str:
    return f"{next(_ids) if n is None else n:032x}"


def span_id(n: int | None = None) -> str:
    return f"{next(_ids) if n is None else n:016x}"


def usage(
    *,
    trace: str | None = None,
    span: str | None = None,
    start: int = T0,
    customer: str | None = "acme",
    provider: str = "openai",
    model: str = "gpt-4o",
    response_id: str | None = None,
    input_tokens: int = 100,
    output_tokens: int = 20,
) -> UsageRecord:
    return UsageRecord(
        trace_id=trace or trace_id(),
        span_id=span or span_id(),
        start_time_ns=start,
        end_time_ns=start + 1_000_000,
        provider=provider,
        model=model,
        operation="chat",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        response_id=response_id,
        customer=customer,
    )


def priced(
    record: UsageRecord | None = None,
    *,
    cost: str | Decimal | None = "0.001",
    billed: str | Decimal | None = "0.0012",
    currency: str = "USD",
    **usage_kwargs: object,
) -> PricedUsage:
    record = record or usage(**usage_kwargs)  # type: ignore[arg-type]
    cost_d = None if cost is None else Decimal(cost)
    billed_d = None if billed is None or cost is None or record.customer is None else Decimal(billed)
    return PricedUsage(
        usage=record,
        status=PriceStatus.PRICED if cost_d is not None else PriceStatus.UNPRICED,
        cost=cost_d,
        billed=billed_d,
        currency=currency,
        price_version="v1" if cost_d is not None else None,
        price_key=f"{record.provider}/{record.model}" if cost_d is not None else None,
        markup_rule="global" if billed_d is not None else None,
        unpriced_reason="" if cost_d is not None else "unknown model",
    )


def unique_responses(n: int, start: int = T0) -> list[PricedUsage]:
    """``n`` rows of traces of their own, each with a response id no other row has."""
    return [priced(trace=trace_id(), response_id=f"chatcmpl-{start}-{i}", start=start + i) for i in range(n)]


def insert_as_before_v5(conn: sqlite3.Connection, rows: list[PricedUsage]) -> None:
    """Store rows the way schema versions 1-4 did: two integer parts per amount, no units."""
    columns = [c for c in INSERT_COLUMNS if not c.endswith("_units")]
    keep = [i for i, c in enumerate(INSERT_COLUMNS) if not c.endswith("_units")]
    parts = ("cost_hi", "cost_lo", "billed_hi", "billed_lo")
    sql = (
        f"INSERT INTO usage ({', '.join((*columns, *parts))})"
        f" VALUES ({', '.join('?' * (len(columns) + len(parts)))})"
    )
    params = []
    for row in rows:
        p = to_params(row, 1)
        params.append((*(p[i] for i in keep), *_old_parts(row.cost), *_old_parts(row.billed)))
    conn.executemany(sql, params)


def _old_parts(amount: Decimal | None) -> tuple[int | None, int | None]:
    if amount is None or amount.adjusted() >= 9:
        return None, None
    scaled = amount.scaleb(15)
    if scaled != int(scaled):
        return None, None
    return divmod(int(scaled), 10**9)
