"""Ledger behaviour on every backend: round trip, dedupe, attribution, summaries, export, bad input.

The tests taking ``ledger`` run once per backend (``ledger_url``); SQLite's own are in
``test_sqlite_*.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from otel_aibill.ledger import (
    PENDING_CUSTOMER,
    AppendBatch,
    Attribution,
    InvalidRowError,
    Ledger,
    UsageQuery,
    open_ledger,
)
from otel_aibill.ledger.url import parse_sqlite_url
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord
from test_ledger_support import HOUR, T0, priced, span_id, trace_id, usage


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    led = open_ledger(ledger_url)
    yield led
    led.close()


def test_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_ledger("sqlite:///rel.db")
    assert (tmp_path / "rel.db").exists()
    rel.close()
    absolute = open_ledger(f"sqlite:///{tmp_path}/abs.db")  # tmp_path starts with "/": 4 slashes
    assert (tmp_path / "abs.db").exists()
    absolute.close()
    assert parse_sqlite_url("sqlite:////var/x.db").path == "/var/x.db"
    assert parse_sqlite_url("sqlite:///x.db").synchronous == "full"
    assert parse_sqlite_url("sqlite:///x.db?synchronous=NORMAL&busy_timeout_ms=5").busy_timeout_ms == 5
    assert parse_sqlite_url("sqlite:///x.db").background_fold
    assert not parse_sqlite_url("sqlite:///x.db?rollup_fold=INLINE").background_fold
    mem = open_ledger("sqlite:///:memory:")
    assert mem.append(AppendBatch(rows=[priced()])).inserted == 1
    mem.close()
    for bad in (
        "postgresql://u@localhost/db?schema=Not-An-Identifier",
        "postgresql://u@localhost/db?pool_max=0",
        "sqlite:///x.db?synchronous=sometimes",
        "sqlite:///x.db?cache=1",
        "sqlite:///x.db?rollup_fold=later",
        "sqlite://",
        "mysql://x",
    ):
        with pytest.raises(ValueError):
            open_ledger(bad)


def test_round_trip_keeps_every_field(ledger: Ledger) -> None:
    record = UsageRecord(
        trace_id=trace_id(),
        span_id=span_id(),
        start_time_ns=T0 + 123,
        end_time_ns=T0 + 456_789,
        provider="anthropic",
        model="claude-sonnet-4-5",
        operation="chat",
        input_tokens=1000,
        output_tokens=300,
        cache_read_tokens=400,
        cache_write_tokens=200,
        cache_write_5m_tokens=150,
        cache_write_1h_tokens=50,
        reasoning_tokens=120,
        input_audio_tokens=7,
        output_audio_tokens=8,
        request_model="claude-sonnet-4-5",
        response_model="claude-sonnet-4-5-20250929",
        service_tier="priority",
        response_id="msg_01",
        server_address="api.anthropic.com",
        scope_name="opentelemetry.instrumentation.anthropic",
        convention="traceloop",
        customer="cust-9",
        parent_span_id=span_id(),
    )
    row = PricedUsage(
        usage=record,
        status=PriceStatus.PRICED,
        cost=Decimal("0.012345678901234567890123"),
        billed=Decimal("1.5E-3"),
        currency="EUR",
        price_version="2026-01-01#abc",
        price_key="anthropic/claude-sonnet-4-5",
        markup_rule="cust-9-rule",
    )
    before = datetime.now(UTC)
    assert ledger.append(AppendBatch(rows=[row])).inserted == 1
    [stored] = ledger.rows()
    assert stored.priced == row
    assert stored.export_batch is None
    assert before - timedelta(seconds=1) <= stored.ingested_at <= datetime.now(UTC)


def test_redelivery_is_a_no_op(ledger: Ledger) -> None:
    rows = [priced() for _ in range(5)]
    first = ledger.append(AppendBatch(rows=rows))
    assert (first.inserted, first.duplicate_spans) == (5, 0)
    again = ledger.append(AppendBatch(rows=[*rows, rows[0]]))
    assert (again.inserted, again.duplicate_spans, again.duplicate_responses) == (0, 6, 0)
    [summary] = ledger.usage_summary(UsageQuery())
    assert (summary.spans, summary.cost) == (5, Decimal("0.005"))
    assert ledger.not_billable_counts() == {"duplicate_span": 6}
    seqs = [r.seq for r in ledger.rows()]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 5


def test_same_ids_with_another_start_time_is_another_row(ledger: Ledger) -> None:
    record = usage()
    moved = UsageRecord(**{**_fields(record), "start_time_ns": record.start_time_ns + 1})
    result = ledger.append(AppendBatch(rows=[priced(record), priced(moved)]))
    assert result.inserted == 2


def _fields(record: UsageRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__slots__}  # type: ignore[attr-defined]


def test_sibling_spans_in_one_batch_bill_once(ledger: Ledger) -> None:
    trace = trace_id()
    sdk = priced(trace=trace, response_id="resp-1", start=T0)
    instrumentor = priced(trace=trace, response_id="resp-1", start=T0 + 2_000)
    result = ledger.append(AppendBatch(rows=[sdk, instrumentor]))
    assert (result.inserted, result.duplicate_responses) == (1, 1)
    [billed] = ledger.rows()
    assert billed.priced.usage.span_id == sdk.usage.span_id  # first in the batch wins
    assert ledger.not_billable_counts() == {"duplicate_response": 1}


def test_sibling_dedupe_across_batches_and_reopen(ledger_url: str) -> None:
    url = ledger_url
    trace = trace_id()
    first = priced(trace=trace, response_id="chatcmpl-A", start=T0 + HOUR - 1)
    second = priced(trace=trace, response_id="chatcmpl-A", start=T0 + HOUR + 1)  # next hour bucket
    third = priced(trace=trace, response_id="chatcmpl-A", start=T0 + HOUR + 5)
    led = open_ledger(url)
    assert led.append(AppendBatch(rows=[first])).inserted == 1
    assert led.append(AppendBatch(rows=[second])).duplicate_responses == 1
    led.close()
    led = open_ledger(url)
    result = led.append(AppendBatch(rows=[third, second]))
    assert (result.inserted, result.duplicate_responses, result.duplicate_spans) == (0, 1, 1)
    # redelivering the original is a duplicate span, never a sibling of itself
    assert led.append(AppendBatch(rows=[first])).duplicate_spans == 1
    assert [r.priced.usage.span_id for r in led.rows()] == [first.usage.span_id]
    assert led.usage_summary(UsageQuery())[0].spans == 1
    led.close()


def test_same_response_id_elsewhere_is_billed(ledger: Ledger) -> None:
    trace = trace_id()
    rows = [
        priced(trace=trace, response_id="r"),
        priced(trace=trace, response_id="r", provider="anthropic"),  # another provider
        priced(response_id="r"),  # another trace
        priced(trace=trace, response_id="r", start=T0 + 3 * HOUR),  # hours apart: another call
        priced(trace=trace, response_id=None),
        priced(trace=trace, response_id=None),
    ]
    result = ledger.append(AppendBatch(rows=rows))
    assert (result.inserted, result.duplicate_responses) == (6, 0)


def test_pending_attribution_flow(ledger: Ledger) -> None:
    trace = trace_id()
    child = priced(trace=trace, customer=None)
    other = priced(customer=None, start=T0 + HOUR)
    result = ledger.append(AppendBatch(rows=[child, other]))
    assert result.new_trace_customers == ()
    assert child.billed is None
    assert ledger.exportable() == []
    [pending_row] = ledger.pending_attribution([trace])
    assert pending_row.priced == child
    assert {r.priced.usage.span_id for r in ledger.pending_attribution()} == {
        child.usage.span_id,
        other.usage.span_id,
    }
    assert [r.priced for r in ledger.pending_attribution(started_before_ns=T0 + 1)] == [child]

    # the root span naming the customer arrives later; first customer of a trace wins
    result = ledger.append(AppendBatch(trace_customers={trace: "acme"}))
    assert result.new_trace_customers == (trace,)
    again = ledger.append(AppendBatch(trace_customers={trace: "globex", "t2": "initech"}))
    assert again.new_trace_customers == ("t2",)
    assert ledger.trace_customers([trace, "t2", "unknown"]) == {trace: "acme", "t2": "initech"}

    update = Attribution(trace, child.usage.span_id, "acme", Decimal("0.0015"), "acme-rule")
    assert ledger.set_attribution([update]) == 1
    assert ledger.set_attribution([update]) == 0  # already attributed: untouched
    assert ledger.pending_attribution([trace]) == []
    [exportable] = ledger.exportable()
    assert exportable.priced.usage.customer == "acme"
    assert (exportable.priced.billed, exportable.priced.markup_rule) == (Decimal("0.0015"), "acme-rule")
    summary = {s.key["customer"]: s for s in ledger.usage_summary(UsageQuery(by=("customer",)))}
    assert summary["acme"].billed == Decimal("0.0015")
    assert summary[PENDING_CUSTOMER].pending_spans == 1
    assert [r.priced for r in ledger.rows(customer=PENDING_CUSTOMER)] == [other]


def test_unpriced_rows_never_get_a_billed_amount(ledger: Ledger) -> None:
    row = priced(cost=None, customer=None)
    ledger.append(AppendBatch(rows=[row]))
    bad = Attribution(row.usage.trace_id, row.usage.span_id, "acme", Decimal("1"), None)
    assert ledger.set_attribution([bad]) == 0
    ok = Attribution(row.usage.trace_id, row.usage.span_id, "acme", None, None)
    assert ledger.set_attribution([ok]) == 1
    [summary] = ledger.usage_summary(UsageQuery())
    assert (summary.unpriced_spans, summary.cost, summary.billed) == (1, 0, 0)
    assert ledger.exportable() == []


def test_exact_decimal_sums(ledger: Ledger) -> None:
    amounts = ["0.1", "0.2"] * 50 + [
        "12345678901234567890.123456789",  # 29 significant digits, too large for the integer parts
        "0.000000000000000000012345678901234567890",  # 40 decimals
        "123456.789012345678901",  # 21 decimals
        "-0.3",
        "1E-7",
    ]
    rows = [priced(cost=a, billed=a, customer="c") for a in amounts]
    ledger.append(AppendBatch(rows=rows))
    rounded = sum((Decimal(a) for a in amounts), Decimal(0))  # Decimal's default context: 28 digits
    [summary] = ledger.usage_summary(UsageQuery(by=("customer",)))
    assert (
        summary.cost
        == summary.billed
        == Decimal("12345678901234691361.612469234678901000012345678901234567890")
    )
    assert summary.cost != rounded
    assert sum(Decimal(a) for a in ["0.1", "0.2"] * 50) == Decimal("15.0")


def test_sums_fall_back_to_python_on_integer_overflow(ledger: Ledger) -> None:
    big = Decimal("999999999.123456789012345")  # fits the integer parts; 10k of them overflow int64
    ledger.append(AppendBatch(rows=[priced(cost=big, billed=big) for _ in range(10_000)]))
    [summary] = ledger.usage_summary(UsageQuery())
    assert summary.cost == summary.billed == big * 10_000
    assert summary.spans == 10_000


def test_summary_groups_and_filters(ledger: Ledger) -> None:
    day = 24 * HOUR
    rows = [
        priced(customer="a", provider="openai", start=T0, input_tokens=10),
        priced(customer="a", provider="openai", start=T0 + day, input_tokens=20),
        priced(customer="a", provider="anthropic", start=T0 + day, input_tokens=40),
        priced(customer="b", provider="openai", start=T0 + 2 * day, input_tokens=80, currency="EUR"),
        priced(customer="b", provider="openai", start=T0 + 2 * day, input_tokens=160),
        priced(customer="b", cost=None, start=T0, input_tokens=320),
    ]
    ledger.append(AppendBatch(rows=rows))
    by_day = ledger.usage_summary(UsageQuery(by=("day",)))
    assert [(s.key["day"], s.currency, s.input_tokens) for s in by_day] == [
        ("2026-01-01", "USD", 330),
        ("2026-01-02", "USD", 60),
        ("2026-01-03", "EUR", 80),
        ("2026-01-03", "USD", 160),
    ]
    assert by_day[0].unpriced_spans == 1 and by_day[0].cost == Decimal("0.001")
    start = datetime(2026, 1, 2, tzinfo=UTC)
    window = ledger.usage_summary(
        UsageQuery(customer="a", since=start, until=start + timedelta(days=1), by=("provider", "model"))
    )
    assert [(s.key, s.spans, s.input_tokens) for s in window] == [
        ({"provider": "anthropic", "model": "gpt-4o"}, 1, 40),
        ({"provider": "openai", "model": "gpt-4o"}, 1, 20),
    ]
    naive = ledger.usage_summary(UsageQuery(since=datetime(2026, 1, 3), by=()))
    assert sum(s.spans for s in naive) == 2
    assert len(ledger.rows(since=start, until=start + timedelta(days=1))) == 2
    assert len(ledger.rows(trace_id=rows[3].usage.trace_id)) == 1
    with pytest.raises(ValueError, match="cannot group"):
        ledger.usage_summary(UsageQuery(by=("span_id",)))


def test_not_billable_counts_and_customers(ledger: Ledger) -> None:
    ledger.append(AppendBatch(not_billable={"not_genai": 3, "no_usage": 1}))
    ledger.append(AppendBatch(not_billable={"not_genai": 2, "aggregated_usage": 0}))
    assert ledger.not_billable_counts() == {"no_usage": 1, "not_genai": 5}
    ledger.set_customer("acme", "cus_1", "Acme")
    ledger.set_customer("acme", "cus_2")
    ledger.set_customer("beta", None, "Beta")
    assert [(c.customer_id, c.stripe_customer_id, c.name) for c in ledger.customers()] == [
        ("acme", "cus_2", None),
        ("beta", None, "Beta"),
    ]


def test_export_batches(ledger: Ledger) -> None:
    trace = trace_id()
    rows = [
        priced(customer="a"),
        priced(customer=None),
        priced(customer="a", cost=None),
        priced(trace=trace, customer="a", response_id="x"),
        priced(trace=trace, customer="a", response_id="x"),  # sibling duplicate
        priced(customer="b"),
    ]
    ledger.append(AppendBatch(rows=rows))
    exportable = ledger.exportable()
    assert [r.priced for r in exportable] == [rows[0], rows[3], rows[5]]
    seqs = [r.seq for r in exportable]
    assert seqs == sorted(seqs)
    assert len(ledger.exportable(limit=2)) == 2
    ledger.assign_export_batch(seqs[:2], "batch-1")
    ledger.assign_export_batch(seqs[:2], "batch-1")  # idempotent
    with pytest.raises(ValueError, match="another batch"):
        ledger.assign_export_batch(seqs, "batch-2")
    assert [r.seq for r in ledger.exportable()] == [seqs[2]]  # the failed claim changed nothing
    pending_seq = next(r.seq for r in ledger.rows(customer=PENDING_CUSTOMER))
    with pytest.raises(ValueError, match="not exportable"):
        ledger.assign_export_batch([pending_seq], "batch-3")
    assert [(r.seq, r.export_batch) for r in ledger.batch_rows("batch-1")] == [
        (s, "batch-1") for s in seqs[:2]
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"input_tokens": "12"},
        {"output_tokens": -1},
        {"start_time_ns": 1.5},
        {"trace_id": ""},
        {"input_tokens": 2**63},
    ],
)
def test_bad_row_refuses_the_whole_batch(ledger: Ledger, bad: dict[str, object]) -> None:
    good = priced()
    broken = priced(UsageRecord(**{**_fields(usage()), **bad}))
    with pytest.raises(InvalidRowError, match="cannot store usage of span"):
        ledger.append(AppendBatch(rows=[good, broken], trace_customers={"t": "c"}, not_billable={"x": 1}))
    assert ledger.rows() == [] and ledger.trace_customers(["t"]) == {} and ledger.not_billable_counts() == {}


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0.5, "must be a decimal.Decimal, got float"),
        (Decimal("NaN"), "must be a finite Decimal, got NaN"),
        (Decimal("-Infinity"), "must be a finite Decimal, got -Infinity"),
    ],
)
@pytest.mark.parametrize("which", ["cost of pending usage", "cost", "billed"])
def test_bad_amount_refuses_the_batch(ledger: Ledger, amount: object, message: str, which: str) -> None:
    row = priced()
    good = Decimal("0.25")
    cost, billed = {
        "cost of pending usage": (amount, None),
        "cost": (amount, good),
        "billed": (good, amount),
    }[which]
    broken = PricedUsage(usage=usage(), status=PriceStatus.PRICED, cost=cost, billed=billed)  # type: ignore[arg-type]
    field = which.split()[0]
    with pytest.raises(InvalidRowError, match=f"{field} {message}"):
        ledger.append(AppendBatch(rows=[row, broken]))
    assert ledger.rows() == []


def test_closed_ledger_refuses_use(ledger: Ledger) -> None:
    ledger.close()
    ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        ledger.rows()
