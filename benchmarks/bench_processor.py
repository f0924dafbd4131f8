"""Cost of BillingSpanProcessor.on_end on the host thread, over a no-op processor.

Usage: python benchmarks/bench_processor.py [--spans 200000]

Both processors see the same finished SDK spans, in the same run, interleaved in rounds so
machine noise hits both alike; the reported figure is the best round's difference per span.
The billing worker is held behind a gate while on_end is timed, so the numbers are the host
thread's cost, not the worker's.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from otel_aibill import BillingSpanProcessor
from otel_aibill.config import Config, ProcessorConfig
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import AppendBatch, AppendResult, Ledger
from otel_aibill.pipeline import Pipeline

GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
    "server.address": "api.openai.com",
}
HTTP = {
    "http.request.method": "GET",
    "http.route": "/api/items/{id}",
    "url.path": "/api/items/42",
    "http.response.status_code": 200,
    "server.address": "shop.example",
    "network.protocol.version": "1.1",
}


class Noop(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        pass


class Gated:
    def __init__(self, inner: Ledger) -> None:
        self.inner, self.gate = inner, threading.Event()

    def append(self, batch: AppendBatch) -> AppendResult:
        self.gate.wait()
        return self.inner.append(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def spans(attrs: dict[str, Any], n: int) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("bench")
    out = []
    for _ in range(n):
        span = tracer.start_span("span", attributes=attrs)
        span.end()
        out.append(span)
    return out  # type: ignore[return-value]


def per_span(proc: SpanProcessor, items: list[ReadableSpan]) -> float:
    on_end = proc.on_end
    t0 = time.perf_counter()
    for s in items:
        on_end(s)
    return (time.perf_counter() - t0) / len(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        gated = Gated(open_ledger(db))
        config = Config(db=db, processor=ProcessorConfig(queue_size=args.spans * args.rounds * 2))
        billing = BillingSpanProcessor(config=config, pipeline=Pipeline(gated, config))  # type: ignore[arg-type]
        noop = Noop()
        results = {}
        for label, attrs in (("GenAI span", GENAI), ("non-GenAI span", HTTP)):
            items = spans(attrs, args.spans)
            best_noop, best_bill = float("inf"), float("inf")
            for _ in range(args.rounds):
                best_noop = min(best_noop, per_span(noop, items))
                best_bill = min(best_bill, per_span(billing, items))
                billing._queue.clear()
            results[label] = (best_noop, best_bill)
        gated.gate.set()
        billing.shutdown()
        gated.inner.close()
    print(f"{'span kind':<16}{'no-op µs':>10}{'billing µs':>12}{'added µs':>10}")
    for label, (a, b) in results.items():
        print(f"{label:<16}{a * 1e6:>10.3f}{b * 1e6:>12.3f}{(b - a) * 1e6:>10.3f}")


if __name__ == "__main__":
    main()
