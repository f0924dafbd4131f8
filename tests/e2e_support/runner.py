"""One instrumentation family in its own interpreter: instrument, call the fake provider, bill.

    python tests/e2e_support/runner.py FAMILY

Environment: ``E2E_FAKE_BASE`` (fake provider URL), ``E2E_DB`` (ledger URL), ``E2E_OUT`` (JSON
file receiving the calls made: scenario, tag, trace id, customer, error), ``E2E_SPANS`` (JSON file
receiving every finished span, to explain a failure).

Instrumentors patch the SDK classes globally, hence one process per family.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from e2e_support.scenarios import Call, anthropic_calls, openai_calls, scenario_context

# family -> (provider, instrumentor or None, anthropic SDK built-in tracing on?)
FAMILIES: dict[str, tuple[str, str | None, bool]] = {
    "openai_v2": ("openai", "openai_v2", False),
    "anthropic_sdk": ("anthropic", None, True),
    "traceloop_openai": ("openai", "traceloop_openai", False),
    "traceloop_anthropic": ("anthropic", "traceloop_anthropic", False),
    "anthropic_double": ("anthropic", "traceloop_anthropic", True),
    "openinference_openai": ("openai", "openinference_openai", False),
    "openinference_anthropic": ("anthropic", "openinference_anthropic", False),
}

# Families that can share an interpreter: their instrumentors patch different SDKs (or the same one
# the same way), and each family has its own clients. Fewer interpreters keep the suite fast.
GROUPS: dict[str, tuple[str, ...]] = {
    "genai": ("openai_v2", "anthropic_sdk"),
    "traceloop": ("traceloop_openai", "traceloop_anthropic", "anthropic_double"),
    "openinference": ("openinference_openai", "openinference_anthropic"),
}


def instrument(name: str) -> None:
    if name == "openai_v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    elif name == "traceloop_openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as TraceloopOpenAI

        TraceloopOpenAI().instrument()
    elif name == "traceloop_anthropic":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument()
    elif name == "openinference_openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OIOpenAI

        OIOpenAI().instrument()
    elif name == "openinference_anthropic":
        from openinference.instrumentation.anthropic import AnthropicInstrumentor as OIAnthropic

        OIAnthropic().instrument()
    else:
        raise SystemExit(f"unknown instrumentor {name!r}")


def span_json(span: ReadableSpan) -> dict[str, Any]:
    attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in (span.attributes or {}).items()}
    return {
        "name": span.name,
        "trace_id": format(span.context.trace_id, "032x") if span.context else "",
        "span_id": format(span.context.span_id, "016x") if span.context else "",
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
        "attributes": {
            k: attrs[k]
            for k in sorted(attrs)
            if not k.startswith(
                (
                    "gen_ai.input",
                    "gen_ai.output",
                    "llm.input_messages",
                    "llm.output_messages",
                    "embedding.embeddings",
                )
            )
        },
    }


def main(group: str) -> None:
    families = GROUPS[group]
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    billing = None
    setup_error = None
    try:
        from otel_aibill import BillingSpanProcessor
        from otel_aibill.config import Config

        db = os.environ["E2E_DB"]
        billing = BillingSpanProcessor(db=db, config=Config(db=db))
        provider.add_span_processor(billing)
    except Exception as exc:  # reported to the test, which fails with it
        setup_error = f"{type(exc).__name__}: {exc}"
    trace.set_tracer_provider(provider)
    for name in dict.fromkeys(FAMILIES[f][1] for f in families):
        if name is not None:
            instrument(name)

    base = os.environ["E2E_FAKE_BASE"]
    tracer = trace.get_tracer("e2e.app")
    flush = billing.force_flush if billing is not None else None
    made = []
    for family in families:
        provider_name, _, sdk_tracing = FAMILIES[family]
        calls: list[Call] = (
            openai_calls(base + "/v1", family)
            if provider_name == "openai"
            else anthropic_calls(base, family, sdk_tracing=sdk_tracing)
        )
        for call in calls:
            tag = f"{family}:{call.name}"
            error = None
            with scenario_context(call, tracer, flush) as trace_id:
                try:
                    call.run({"x-fake-tag": tag})
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
            made.append(
                {
                    "family": family,
                    "scenario": call.name,
                    "tag": tag,
                    "trace_id": trace_id,
                    "customer": call.customer or call.parent_customer,
                    "error": error,
                }
            )
    provider.force_flush()
    provider.shutdown()
    result = {
        "group": group,
        "calls": made,
        "setup_error": setup_error,
        "processor": None
        if billing is None
        else {"dropped": billing.dropped, "failed": billing.failed, "errors": billing.errors},
    }
    Path(os.environ["E2E_OUT"]).write_text(json.dumps(result, indent=1))
    Path(os.environ["E2E_SPANS"]).write_text(
        json.dumps([span_json(s) for s in spans.get_finished_spans()], indent=1)
    )


if __name__ == "__main__":
    main(sys.argv[1])
