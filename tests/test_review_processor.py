"""Review findings on the in-process path: odd spans, baggage, lifecycle, fork.

Real OpenTelemetry SDK, real SQLite ledger; each test names the wrong bill it guards against.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_aibill import BillingSpanProcessor
from otel_aibill.config import Config, ProcessorConfig
from otel_aibill.ledger import open_ledger
from otel_aibill.processor import BillingSpanExporter

CHAT: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 10,
}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def rows(db: str) -> list[Any]:
    ledger = open_ledger(db)
    try:
        return ledger.rows(limit=10_000)
    finally:
        ledger.close()


def make(db: str, **processor: Any) -> tuple[TracerProvider, BillingSpanProcessor]:
    config = Config(db=db, processor=ProcessorConfig(**processor))
    provider = TracerProvider()
    billing = BillingSpanProcessor(config=config)
    provider.add_span_processor(billing)
    return provider, billing


def test_one_unstorable_span_does_not_lose_its_whole_batch(db: str) -> None:
    """A scope name with a lone surrogate (bytes decoded with ``surrogateescape``) cannot be
    stored by SQLite. It used to fail the batch's one transaction eight times and then drop every
    span of the batch; now only that span is lost, and it is counted. (Attribute text such as a
    model name is read as absent when it is not valid Unicode, so it no longer fails a write.)"""
    provider, billing = make(db, batch_size=64, flush_interval_ms=10_000)
    for i in range(10):
        tracer = provider.get_tracer("app\udc80" if i == 4 else "app")
        attrs = {**CHAT, "customer.id": f"c{i}"}
        with tracer.start_as_current_span("chat", attributes=attrs):
            pass
    provider.shutdown()
    stored = sorted(r.priced.usage.customer for r in rows(db))
    assert stored == sorted(f"c{i}" for i in range(10) if i != 4)
    assert billing.failed == 1


def test_customer_id_that_is_not_valid_unicode_is_not_used(db: str) -> None:
    """Such a customer id failed the whole batch; now the usage is kept, pending its trace."""
    provider, billing = make(db)
    with provider.get_tracer("app").start_as_current_span(
        "chat", attributes={**CHAT, "customer.id": "a\udc80"}
    ):
        pass
    provider.shutdown()
    [row] = rows(db)
    assert row.priced.usage.customer is None  # pending its trace's customer, visible, not lost
    assert billing.failed == 0


def test_baggage_properties_are_not_part_of_the_customer_id(db: str) -> None:
    """W3C baggage ``key=value;property``: the Python SDK leaves the property in the value, which
    billed a customer named ``acme;ttl=5``."""
    provider, _ = make(db)
    ctx = W3CBaggagePropagator().extract({"baggage": "customer.id=acme%20corp;ttl=5"})
    token = context.attach(ctx)
    try:
        with provider.get_tracer("app").start_as_current_span("chat", attributes=CHAT):
            pass
    finally:
        context.detach(token)
    provider.shutdown()
    assert [r.priced.usage.customer for r in rows(db)] == ["acme corp"]  # percent-decoded by the SDK


def test_baggage_does_not_overwrite_the_customer_a_span_was_started_with(db: str) -> None:
    provider, _ = make(db)
    token = context.attach(baggage.set_baggage("customer.id", "from-baggage"))
    try:
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("chat", attributes={**CHAT, "customer.id": "explicit"}):
            pass
        with tracer.start_as_current_span("chat", attributes=CHAT):
            pass
    finally:
        context.detach(token)
    provider.shutdown()
    assert sorted(r.priced.usage.customer for r in rows(db)) == ["explicit", "from-baggage"]


def test_spans_ending_after_shutdown_are_counted(db: str) -> None:
    provider, billing = make(db)
    tracer = provider.get_tracer("app")
    span = tracer.start_span("chat", attributes=CHAT)
    billing.shutdown()
    span.end()  # the provider still calls on_end: nobody will write it any more
    assert billing.dropped == 1
    billing.shutdown()  # twice is harmless


def test_exporter_shutdown_twice_and_export_after_shutdown_do_not_raise(db: str) -> None:
    exporter = BillingSpanExporter(db=db)
    exporter.shutdown()
    exporter.shutdown()  # raised "the ledger is closed" (SDK and atexit both shut down)
    assert exporter.export([]) is SpanExportResult.FAILURE


def test_exporter_keeps_the_good_spans_of_a_batch_with_an_unstorable_one(db: str) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = BillingSpanExporter(db=db)
    provider = TracerProvider()
    spans: list[Any] = []

    class Collect(SimpleSpanProcessor):
        def on_end(self, span: Any) -> None:
            spans.append(span)

    provider.add_span_processor(Collect(exporter))
    for scope in ("app", "bad\udc80", "app"):
        with provider.get_tracer(scope).start_as_current_span("chat", attributes=CHAT):
            pass
    assert exporter.export(spans) is SpanExportResult.FAILURE  # something was lost: say so
    assert exporter.failed == 1
    exporter.shutdown()
    assert len(rows(db)) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_forked_child_bills_its_own_spans(db: str) -> None:
    """Pre-fork servers (gunicorn --preload) build the processor before forking: the child had no
    worker thread, so its spans waited in the queue forever and force_flush timed out."""
    provider, billing = make(db)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            attrs = {**CHAT, "customer.id": "child"}
            with provider.get_tracer("app").start_as_current_span("chat", attributes=attrs):
                pass
            code = 0 if billing.force_flush(5_000) else 2
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    provider.shutdown()
    assert [r.priced.usage.customer for r in rows(db)] == ["child"]
