"""Extraction cost per span: the not-GenAI fast path against real recorded GenAI spans.

    python benchmarks/bench_extract.py

Prints microseconds per span (best of interleaved rounds) and each case's ratio to the
not-GenAI path, which every span a receiver sees goes through.
"""

from __future__ import annotations

import json
import timeit
from pathlib import Path

from otel_aibill.semconv import extract
from otel_aibill.usage import SpanView

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "semconv"


def recorded(name: str, index: int) -> SpanView:
    span = json.loads((DATA / f"{name}.json").read_text())[index]
    return SpanView(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="00f067aa0ba902b7",
        name=span["name"],
        start_time_ns=1,
        end_time_ns=2,
        attributes=span["attributes"],
        scope_name=span["scope_name"],
    )


HTTP_SPAN = SpanView(
    trace_id="0af7651916cd43dd8448eb211c80319c",
    span_id="00f067aa0ba902b7",
    name="GET /users/{id}",
    start_time_ns=1,
    end_time_ns=2,
    attributes={
        "http.request.method": "GET",
        "http.route": "/users/{id}",
        "http.response.status_code": 200,
        "url.scheme": "https",
        "url.path": "/users/42",
        "server.address": "api.example.com",
        "server.port": 443,
        "client.address": "10.0.0.7",
        "user_agent.original": "curl/8.5",
        "network.protocol.version": "1.1",
        "customer.id": "acme",
        "deployment.environment": "prod",
    },
    scope_name="opentelemetry.instrumentation.fastapi",
)

CASES = {
    "not GenAI (12 HTTP attributes)": HTTP_SPAN,
    "openai-v2 chat": recorded("openai_v2", 0),
    "OpenLLMetry openai chat": recorded("traceloop_openai", 0),
    "anthropic SDK messages.create": recorded("anthropic_sdk", 0),
    "OpenInference openai chat": recorded("openinference_openai", 0),
}


def measure(cases: dict[str, SpanView], number: int = 10_000, rounds: int = 7) -> dict[str, float]:
    """Best microseconds per span for each case; cases interleave per round so noise hits all alike."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, span in cases.items():
            seconds = timeit.timeit(lambda span=span: extract(span), number=number)
            best[name] = min(best[name], seconds / number * 1e6)
    return best


def main() -> None:
    results = measure(CASES)
    base = results["not GenAI (12 HTTP attributes)"]
    print(f"{'case':36} {'us/span':>8} {'x not-GenAI':>12}")
    for name, us in results.items():
        print(f"{name:36} {us:8.2f} {us / base:12.1f}")


if __name__ == "__main__":
    main()
