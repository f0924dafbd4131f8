"""BillingSpanProcessor with the real OpenTelemetry SDK and a real SQLite ledger."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from opentelemetry import baggage, context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_aibill import BillingSpanProcessor
from otel_aibill.config import Config, MarkupRule, PricingConfig, ProcessorConfig
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import AppendBatch, AppendResult, Ledger
from otel_aibill.pipeline import Pipeline
from otel_aibill.usage import UNATTRIBUTED

CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 300,
}


def expected_cost(attrs: dict[str, Any] = CHAT) -> Decimal:
    usage = Usage(
        input_tokens=attrs["gen_ai.usage.input_tokens"],
        cache_read_tokens=attrs.get("gen_ai.usage.cache_read.input_tokens", 0),
        output_tokens=attrs["gen_ai.usage.output_tokens"],
    )
    return calc_price(
        usage, attrs["gen_ai.response.model"], provider_id="openai", genai_request_timestamp=datetime.now(UTC)
    ).total_price


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def make(db: str, config: Config | None = None, **kw: Any) -> tuple[TracerProvider, BillingSpanProcessor]:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    processor = BillingSpanProcessor(db=db, config=config or Config(db=db), **kw)
    provider.add_span_processor(processor)
    return provider, processor


def all_rows(db: str) -> list[Any]:
    ledger = open_ledger(db)
    try:
        return ledger.rows(limit=100_000)
    finally:
        ledger.close()


def test_llm_span_with_customer_is_priced_exactly(db: str) -> None:
    provider, _ = make(db)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat gpt-4o", attributes={**CHAT, "customer.id": "acme"}):
        pass
    provider.shutdown()
    [row] = all_rows(db)
    assert row.priced.usage.customer == "acme"
    assert row.priced.cost == expected_cost()
    assert row.priced.billed == row.priced.cost  # no markup configured
    assert row.priced.usage.input_tokens == 1200 and row.priced.usage.cache_read_tokens == 1000


def test_customer_from_root_span_that_ends_later(db: str) -> None:
    config = Config(db=db, pricing=PricingConfig(markup=(MarkupRule(id="std", percent=Decimal("20")),)))
    provider, processor = make(db, config)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("POST /chat", attributes={"customer.id": "acme"}):
        with tracer.start_as_current_span("chat", attributes=CHAT):
            pass
        processor.force_flush()  # the LLM span is stored before its root span ends: pending
        [pending] = all_rows(db)
        assert pending.priced.usage.customer is None
        assert pending.priced.billed is None
    provider.shutdown()
    [row] = all_rows(db)
    assert row.priced.usage.customer == "acme"
    assert row.priced.markup_rule == "std"
    assert row.priced.billed == row.priced.cost * Decimal("1.2")


def test_customer_from_baggage_reaches_llm_span(db: str) -> None:
    provider, _ = make(db)
    tracer = provider.get_tracer("app")
    token = context.attach(baggage.set_baggage("tenant.id", "globex"))
    try:
        with tracer.start_as_current_span("chat", attributes=CHAT):
            pass
    finally:
        context.detach(token)
    provider.shutdown()
    [row] = all_rows(db)
    assert row.priced.usage.customer == "globex"


def test_customer_from_resource(db: str) -> None:
    provider = TracerProvider(resource=Resource.create({"tenant.id": "initech"}))
    processor = BillingSpanProcessor(db=db, config=Config(db=db))
    provider.add_span_processor(processor)
    with provider.get_tracer("app").start_as_current_span("chat", attributes=CHAT):
        pass
    provider.shutdown()
    assert [r.priced.usage.customer for r in all_rows(db)] == ["initech"]


def test_trace_customer_known_to_another_process_attributes_later_usage(db: str) -> None:
    """A root span stored by one writer attributes usage another writer stores afterwards."""
    provider, _ = make(db)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("root", attributes={"customer.id": "acme"}) as root:
        trace_ctx = root.get_span_context()
    provider.shutdown()

    from opentelemetry.trace import NonRecordingSpan, set_span_in_context

    provider2, _ = make(db)
    parent = set_span_in_context(NonRecordingSpan(trace_ctx))
    with provider2.get_tracer("app").start_as_current_span("chat", context=parent, attributes=CHAT):
        pass
    provider2.shutdown()
    [row] = all_rows(db)
    assert row.priced.usage.customer == "acme"


def test_pending_usage_becomes_unattributed_after_grace(db: str) -> None:
    provider, processor = make(db)
    with provider.get_tracer("app").start_as_current_span("chat", attributes=CHAT):
        pass
    processor.force_flush()
    assert processor.pipeline.sweep() == 0  # within the grace period: still pending
    far_future = datetime(2100, 1, 1, tzinfo=UTC)
    assert processor.pipeline.sweep(int(far_future.timestamp() * 1e9)) == 1
    provider.shutdown()
    [row] = all_rows(db)
    assert row.priced.usage.customer == UNATTRIBUTED
    assert row.priced.billed == row.priced.cost


def test_non_genai_spans_never_reach_the_worker(db: str) -> None:
    provider, processor = make(db)
    tracer = provider.get_tracer("app")
    for i in range(50):
        with tracer.start_as_current_span(f"GET /{i}", attributes={"http.route": "/x"}):
            pass
    assert processor._enqueued == 0
    provider.shutdown()
    assert all_rows(db) == []


def test_bad_attributes_never_raise_into_the_host(db: str) -> None:
    provider, processor = make(db)
    tracer = provider.get_tracer("app")
    bad = {**CHAT, "gen_ai.usage.input_tokens": -5, "gen_ai.usage.output_tokens": "lots"}
    with tracer.start_as_current_span("chat", attributes=bad):
        pass
    provider.shutdown()
    assert all_rows(db) == []
    assert processor.pipeline.totals.not_billable.get("invalid_usage") == 1


def test_redelivered_span_is_billed_once(db: str) -> None:
    provider, processor = make(db)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat", attributes={**CHAT, "customer.id": "acme"}) as span:
        pass
    processor.force_flush()
    processor.on_end(span)  # type: ignore[arg-type]  # the same finished span, delivered again
    provider.shutdown()
    assert len(all_rows(db)) == 1
    assert processor.pipeline.totals.duplicates == 1


class GatedLedger:
    """A real ledger whose appends wait for a gate: a ledger that has fallen behind."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.gate = threading.Event()

    def append(self, batch: AppendBatch) -> AppendResult:
        self.gate.wait(30)
        return self.inner.append(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_full_queue_drops_and_counts_without_blocking_the_host(db: str) -> None:
    gated = GatedLedger(open_ledger(db))
    config = Config(db=db, processor=ProcessorConfig(queue_size=10, batch_size=5, on_full="drop"))
    processor = BillingSpanProcessor(config=config, pipeline=Pipeline(gated, config))  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    for _ in range(100):
        with tracer.start_as_current_span("chat", attributes={**CHAT, "customer.id": "acme"}):
            pass
    assert processor.dropped >= 100 - 10 - 5  # at most one batch in flight plus a full queue
    gated.gate.set()
    provider.shutdown()
    assert len(all_rows(db)) == 100 - processor.dropped
    gated.inner.close()


def test_block_policy_loses_nothing(db: str) -> None:
    gated = GatedLedger(open_ledger(db))
    config = Config(db=db, processor=ProcessorConfig(queue_size=4, batch_size=2, on_full="block"))
    processor = BillingSpanProcessor(config=config, pipeline=Pipeline(gated, config))  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    threading.Timer(0.3, gated.gate.set).start()
    for _ in range(40):
        with tracer.start_as_current_span("chat", attributes={**CHAT, "customer.id": "acme"}):
            pass
    provider.shutdown()
    assert processor.dropped == 0
    assert len(all_rows(db)) == 40
    gated.inner.close()


def test_shutdown_drains_everything(db: str) -> None:
    provider, processor = make(db)
    tracer = provider.get_tracer("app")
    for i in range(2000):
        with tracer.start_as_current_span("chat", attributes={**CHAT, "customer.id": f"c{i % 7}"}):
            pass
    provider.shutdown()
    assert processor.dropped == 0
    rows = all_rows(db)
    assert len(rows) == 2000
    assert sum((r.priced.cost for r in rows), Decimal(0)) == expected_cost() * 2000


def test_config_given_as_a_toml_file(tmp_path: Path, db: str) -> None:
    toml = tmp_path / "aibill.toml"
    toml.write_text('[[pricing.markup]]\nid = "std"\npercent = "50"\nfixed_fee = "0.001"\n', encoding="utf-8")
    provider = TracerProvider()
    provider.add_span_processor(BillingSpanProcessor(db=db, config=str(toml)))
    with provider.get_tracer("app").start_as_current_span("chat", attributes={**CHAT, "user.id": "u1"}):
        pass
    provider.shutdown()
    [row] = all_rows(db)
    assert row.priced.usage.customer == "u1"
    assert row.priced.billed == row.priced.cost * Decimal("1.5") + Decimal("0.001")


def test_float_money_in_config_is_refused(tmp_path: Path, db: str) -> None:
    from otel_aibill.config import ConfigError

    toml = tmp_path / "aibill.toml"
    toml.write_text('[[pricing.markup]]\nid = "std"\npercent = 12.5\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a float"):
        BillingSpanProcessor(db=db, config=toml)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[pricing.overrides]]\nprovider = "openai"\nmodel = "ft"\ninput_mtok = "1"\n', "output_mtok"),
        ('[[pricing.markup]]\nid = "x"\npercent = "-150"\n', "percent"),
        ('[[pricing.markup]]\nid = "x"\nfixed_fee = "-0.01"\n', "fixed_fee"),
        ('[[pricing.overrides]]\nprovider = "o"\nmodel = "m"\ninput_mtok = "-1"\noutput_mtok = "0"\n', "inp"),
    ],
)
def test_config_refuses_prices_that_would_bill_wrongly(tmp_path: Path, toml: str, message: str) -> None:
    from otel_aibill.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_running_processor_sweeps_without_shutting_down(db: str) -> None:
    """A long-running host never shuts down: its pending usage still becomes "unattributed"
    after the grace, and old trace customers are forgotten, by the worker's periodic sweep."""
    config = Config(
        db=db,
        attribution={"pending_grace_seconds": 0, "trace_customer_retention_seconds": 0},
        processor=ProcessorConfig(flush_interval_ms=20, sweep_interval_seconds=0.05),
    )
    provider, processor = make(db, config)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("root", attributes={"customer.id": "acme"}) as root:
        root_trace = f"{root.get_span_context().trace_id:032x}"
    with tracer.start_as_current_span("chat", attributes=CHAT):
        pass
    processor.force_flush()
    ledger = open_ledger(db)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            [row] = ledger.rows()
            if row.priced.usage.customer is not None and not ledger.trace_customers([root_trace]):
                break
            time.sleep(0.05)
        assert row.priced.usage.customer == UNATTRIBUTED  # its trace named no customer
        assert ledger.trace_customers([root_trace]) == {}  # acme's trace, forgotten by the sweep
    finally:
        ledger.close()
        provider.shutdown()
