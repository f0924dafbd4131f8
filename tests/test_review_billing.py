"""Review findings on the pure core and the CLI: nesting, trace attribution, dated prices, markup.

Spans go through the real pipeline into a real SQLite ledger.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from typer.testing import CliRunner

from otel_aibill.attribution import customer_of
from otel_aibill.cli import app
from otel_aibill.config import Config, MarkupRule, PriceOverride, PricingConfig
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.sqlite import SqliteLedger
from otel_aibill.pipeline import Pipeline
from otel_aibill.pricing.clock import datetime_to_ns
from otel_aibill.usage import SpanView

T0 = datetime_to_ns(datetime(2026, 11, 20, 12, tzinfo=UTC))
TRACE = "ab" * 16


def chat(**extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        **extra,
    }


def span(
    span_id: int,
    attrs: dict[str, Any],
    *,
    parent: int | None = None,
    at: int = T0,
    end: int | None = None,
    trace: str = TRACE,
) -> SpanView:
    return SpanView(
        trace_id=trace,
        span_id=f"{span_id:016x}",
        name="chat",
        start_time_ns=at,
        end_time_ns=end if end is not None else at + 1_000,
        attributes=attrs,
        parent_span_id=None if parent is None else f"{parent:016x}",
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(url: str) -> Any:
    opened = open_ledger(url)
    yield opened
    opened.close()


def customers(ledger: SqliteLedger) -> dict[str, str | None]:
    return {r.priced.usage.span_id: r.priced.usage.customer for r in ledger.rows(limit=1000)}


# -- nesting -----------------------------------------------------------------------------------


def test_llm_span_around_a_different_call_with_equal_tokens_is_billed(ledger: SqliteLedger) -> None:
    """Two nested inference spans with different response ids are two calls (a retry, or a second
    call inside a wrapper LLM span), even with equal token totals. Both used to be merged."""
    inner = span(2, chat(**{"gen_ai.response.id": "chatcmpl-2"}), parent=1, end=T0 + 10)
    outer = span(1, chat(**{"gen_ai.response.id": "chatcmpl-1"}), end=T0 + 20)
    result = Pipeline(ledger).ingest([inner, outer])
    assert result.billed == 2
    assert "duplicate_call" not in result.not_billable


def test_nested_spans_of_one_call_are_still_merged(ledger: SqliteLedger) -> None:
    """The rule still merges one call seen twice: one id on both, or an id on one side only."""
    pipeline = Pipeline(ledger)
    same = [
        span(2, chat(**{"gen_ai.response.id": "r"}), parent=1, end=T0 + 10),
        span(1, chat(**{"gen_ai.response.id": "r"}), end=T0 + 20),
    ]
    one_sided = [
        span(4, chat(**{"gen_ai.response.id": "r2"}), parent=3, end=T0 + 10),
        span(3, chat(), end=T0 + 20),
    ]
    assert pipeline.ingest(same).billed == 1
    assert pipeline.ingest(one_sided).billed == 1


# -- trace-level attribution -------------------------------------------------------------------


def test_first_customer_named_in_a_trace_wins_whatever_the_batch(ledger: SqliteLedger) -> None:
    pipeline = Pipeline(ledger)
    pipeline.ingest([span(1, chat()), span(10, {"customer.id": "acme"})])
    pipeline.ingest([span(11, {"customer.id": "globex"}), span(2, chat())])
    assert ledger.trace_customers([TRACE]) == {TRACE: "acme"}
    assert set(customers(ledger).values()) == {"acme"}


def test_a_model_name_that_is_not_valid_unicode_does_not_fail_the_batch(ledger: SqliteLedger) -> None:
    good = span(1, chat(customer_id="x"))
    bad = span(2, chat(**{"gen_ai.response.model": "gpt\udc80", "gen_ai.response.id": "r\ud800"}))
    worse = span(3, chat(**{"gen_ai.request.model": "gpt\udc80"}))
    result = Pipeline(ledger).ingest([good, bad, worse])
    assert result.billed == 3
    by_span = {r.priced.usage.span_id: r.priced for r in ledger.rows(limit=10)}
    # the request model still names the call: priced as it
    bad_row = by_span[f"{2:016x}"]
    assert bad_row.usage.response_model is None and bad_row.usage.response_id is None
    assert bad_row.usage.model == "gpt-4o" and bad_row.cost == by_span[f"{1:016x}"].cost
    # no readable model at all: kept with its tokens, visible as unpriced
    assert result.unpriced == 1 and by_span[f"{3:016x}"].cost is None
    assert by_span[f"{3:016x}"].usage.input_tokens == 1000


@pytest.mark.parametrize(
    ("span_attrs", "resource", "expected"),
    [
        ({"customer.id": 42}, {}, "42"),  # numeric tenant ids
        ({"customer.id": True}, {"customer.id": "r"}, "r"),  # bools are not ids
        ({"customer.id": "  "}, {"tenant.id": "r"}, "r"),  # blank falls through
        ({"customer.id": ["a", "b"]}, {}, None),  # arrays are not ids
        ({"customer.id": "x" * 257}, {"customer.id": "r"}, "r"),  # absurdly long
        ({"customer.id": "a\udc80"}, {"customer.id": "r"}, "r"),  # not storable text
        ({"user.id": "u"}, {"stripe.customer.id": "cus_1"}, "u"),  # any span key before the resource
    ],
)
def test_customer_values(span_attrs: dict[str, Any], resource: dict[str, Any], expected: str | None) -> None:
    keys = Config().attribution.keys
    assert customer_of(span_attrs, resource, keys) == expected


# -- dated prices and markup -------------------------------------------------------------------


def catalog_cost(at: datetime, inp: int = 1000, out: int = 100) -> Decimal:
    usage = Usage(input_tokens=inp, output_tokens=out)
    return calc_price(usage, "gpt-4o", provider_id="openai", genai_request_timestamp=at).total_price


@pytest.mark.parametrize(
    "effective_from",
    [datetime(2026, 11, 1), datetime(2026, 11, 1, 2, tzinfo=timezone(timedelta(hours=2)))],
    ids=["naive-is-utc", "offset"],
)
def test_override_takes_effect_at_its_exact_instant(ledger: SqliteLedger, effective_from: datetime) -> None:
    override = PriceOverride(
        provider="openai",
        model="gpt-4o",
        effective_from=effective_from,
        input_mtok=Decimal("1"),
        output_mtok=Decimal("2"),
    )
    pipeline = Pipeline(ledger, Config(pricing=PricingConfig(overrides=(override,))))
    boundary = datetime_to_ns(datetime(2026, 11, 1, tzinfo=UTC))
    pipeline.ingest([span(1, chat(), at=boundary - 1), span(2, chat(), at=boundary)])
    cost = {r.priced.usage.span_id: r.priced.cost for r in ledger.rows(limit=10)}
    assert cost[f"{2:016x}"] == Decimal("0.0012")  # 1000 * 1/M + 100 * 2/M
    assert cost[f"{1:016x}"] == catalog_cost(datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC))


def test_markup_is_exact_and_minimum_applies_after_the_fixed_fee(ledger: SqliteLedger) -> None:
    rule = MarkupRule(id="m", percent=Decimal("33.333"), fixed_fee=Decimal("0.0001"), minimum=Decimal("0.01"))
    pipeline = Pipeline(ledger, Config(pricing=PricingConfig(markup=(rule,))))
    small = span(1, chat(**{"customer.id": "a"}))
    big = span(2, chat(**{"customer.id": "a", "gen_ai.usage.input_tokens": 900_000}))
    pipeline.ingest([small, big])
    by_span = {r.priced.usage.span_id: r.priced for r in ledger.rows(limit=10)}
    assert by_span[f"{1:016x}"].billed == Decimal("0.01")
    priced = by_span[f"{2:016x}"]
    assert priced.cost is not None
    assert priced.billed == priced.cost * Decimal("1.33333") + Decimal("0.0001")  # not rounded


# -- CLI usage window --------------------------------------------------------------------------


def test_usage_since_is_inclusive_and_until_exclusive(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_AIBILL_DB", "OTEL_AIBILL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    since = datetime(2026, 11, 2, tzinfo=UTC)
    until = datetime(2026, 11, 3, tzinfo=UTC)
    s, u = datetime_to_ns(since), datetime_to_ns(until)
    ledger = open_ledger(url)
    try:
        Pipeline(ledger).ingest(
            [span(i + 1, chat(**{"customer.id": "a"}), at=t) for i, t in enumerate((s - 1, s, u - 1, u))]
        )
    finally:
        ledger.close()
    res = CliRunner().invoke(
        app,
        [
            "--db",
            url,
            "usage",
            "--format",
            "json",
            "--since",
            "2026-11-02",
            "--until",
            "2026-11-03T00:00:00Z",
        ],
    )
    assert res.exit_code == 0, res.output
    [item] = json.loads(res.stdout)
    assert item["spans"] == 2
    assert Decimal(item["cost"]) == 2 * catalog_cost(since)


def test_otlp_json_lone_surrogate_does_not_fail_the_request(ledger: SqliteLedger) -> None:
    from otel_aibill.receiver.otlp_json import decode_json

    def otlp_span(span_id: str, model: str) -> dict[str, Any]:
        attrs = {**chat(), "gen_ai.response.model": model}
        return {
            "traceId": TRACE,
            "spanId": span_id,
            "name": "chat",
            "startTimeUnixNano": str(T0),
            "endTimeUnixNano": str(T0 + 1),
            "attributes": [
                {"key": k, "value": {"stringValue": v} if isinstance(v, str) else {"intValue": str(v)}}
                for k, v in attrs.items()
            ],
        }

    body = json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {},
                    "scopeSpans": [
                        {
                            "scope": {},
                            "spans": [
                                otlp_span("00000000000000a1", "gpt-4o"),
                                otlp_span("00000000000000a2", "gpt-4o"),
                            ],
                        }
                    ],
                }
            ]
        }
    ).replace("gpt-4o", "gpt-\\ud800", 1)
    decoded = decode_json(body)
    Pipeline(ledger).ingest(decoded.spans)
    # the non-Unicode request model is read as absent; the response model still prices the span
    by_span = {r.priced.usage.span_id: r.priced.usage for r in ledger.rows(limit=10)}
    assert set(by_span) == {"00000000000000a1", "00000000000000a2"}
    assert by_span["00000000000000a1"].request_model is None
    assert by_span["00000000000000a2"].request_model == "gpt-4o"
    assert {u.model for u in by_span.values()} == {"gpt-4o"}
