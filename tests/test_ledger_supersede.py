"""A stored bill superseded by a richer record of the same call: replaced in place before export,
left alone (and reported) once exported or attributed to another customer; sums stay exact, also
for rows already folded into the rollup."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import AppendBatch, Ledger, UsageQuery
from otel_aibill.ledger.sqlite import SqliteLedger, rollup
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

T0 = 1_790_000_000_000_000_000


def row(span: str, *, cached: int = 0, customer: str | None = "acme", cost: str = "0.0100") -> PricedUsage:
    usage = UsageRecord(
        trace_id="a" * 32,
        span_id=span,
        start_time_ns=T0,
        end_time_ns=T0 + 10,
        provider="openai",
        model="gpt-4o-mini",
        operation="chat",
        input_tokens=2000,
        output_tokens=50,
        cache_read_tokens=cached,
        customer=customer,
        scope_name="opentelemetry.instrumentation.openai_v2",
    )
    billed = None if customer is None else Decimal(cost) * 2
    return PricedUsage(
        usage, PriceStatus.PRICED, Decimal(cost), billed, price_version="v1", price_key="openai/gpt-4o-mini"
    )


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """Each backend (the SQLite one folding its rollup inline)."""
    url = f"{ledger_url}?rollup_fold=inline" if ledger_url.startswith("sqlite") else ledger_url
    opened = open_ledger(url)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    opened = open_ledger(f"sqlite:///{tmp_path / 'supersede.db'}?rollup_fold=inline")
    assert isinstance(opened, SqliteLedger)
    yield opened
    opened.close()


def totals(ledger: Ledger) -> tuple[int, int, Decimal, Decimal]:
    (s,) = ledger.usage_summary(UsageQuery(by=("customer",)))
    return s.spans, s.cache_read_tokens, s.cost, s.billed


def test_an_unexported_bill_is_replaced_in_place(ledger: Ledger) -> None:
    ledger.append(AppendBatch(rows=[row("0000000000000001")]))
    richer = row("0000000000000001", cached=1024, cost="0.0060")
    richer = replace(
        richer, usage=replace(richer.usage, response_id="chatcmpl-1", response_model="gpt-4o-mini-2024-07-18")
    )
    result = ledger.append(AppendBatch(superseded=[richer]))
    assert result.superseded == 1 and result.inserted == 0
    (stored,) = ledger.rows()
    assert stored.priced == richer
    assert totals(ledger) == (1, 1024, Decimal("0.0060"), Decimal("0.0120"))


def test_a_pending_bill_takes_the_customer_of_the_richer_record(ledger: Ledger) -> None:
    ledger.append(AppendBatch(rows=[row("0000000000000001", customer=None)]))
    ledger.append(AppendBatch(superseded=[row("0000000000000001", cached=1024, cost="0.0060")]))
    (stored,) = ledger.rows()
    assert (stored.priced.usage.customer, stored.priced.billed) == ("acme", Decimal("0.0120"))
    assert ledger.pending_attribution() == []


def test_a_folded_row_moves_in_the_rollup(
    sqlite_ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = sqlite_ledger
    monkeypatch.setattr(rollup, "FOLD_EVERY", 1)
    ledger.append(AppendBatch(rows=[row("0000000000000001")]))
    ledger.append(
        AppendBatch(
            rows=[
                replace(
                    row("0000000000000002"), usage=replace(row("0000000000000002").usage, trace_id="b" * 32)
                )
            ]
        )
    )
    assert rollup.folded_seq(ledger._writer) >= 1  # the first row is in the rollup
    ledger.append(AppendBatch(superseded=[row("0000000000000001", cached=1024, cost="0.0060")]))
    assert totals(ledger) == (2, 1024, Decimal("0.0160"), Decimal("0.0320"))


def test_exported_or_otherwise_attributed_bills_are_left_alone(ledger: Ledger) -> None:
    ledger.append(AppendBatch(rows=[row("0000000000000001"), row("0000000000000002", customer="globex")]))
    (exported,) = [r for r in ledger.exportable() if r.priced.usage.span_id.endswith("1")]
    ledger.assign_export_batch([exported.seq], "batch-1")
    late = row("0000000000000001", cached=1024, cost="0.0060")
    other = row("0000000000000002", cached=1024, cost="0.0060")  # names acme, stored for globex
    result = ledger.append(AppendBatch(superseded=[late, other]))
    assert result.superseded == 0
    assert result.superseded_exported == 1
    assert result.superseded_other_customer == ((other, "globex"),)
    assert {r.priced.usage.cache_read_tokens for r in ledger.rows()} == {0}


def test_a_record_of_no_stored_span_changes_nothing(ledger: Ledger) -> None:
    assert ledger.append(AppendBatch(superseded=[row("0000000000000009")])).superseded == 0
    assert ledger.rows() == []


def test_a_sibling_duplicate_row_is_not_superseded(ledger: Ledger) -> None:
    first = row("0000000000000001")
    first = replace(first, usage=replace(first.usage, response_id="r1"))
    second = replace(first, usage=replace(first.usage, span_id="0000000000000002"))
    assert ledger.append(AppendBatch(rows=[first])).inserted == 1
    assert ledger.append(AppendBatch(rows=[second])).duplicate_responses == 1
    richer = replace(second, usage=replace(second.usage, cache_read_tokens=1024), cost=Decimal("0.0060"))
    assert ledger.append(AppendBatch(superseded=[richer])).superseded == 0
    assert [r.priced.usage.cache_read_tokens for r in ledger.rows()] == [0]
