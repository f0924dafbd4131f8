"""Framework and gateway libraries in their own interpreter, against the fake provider, billed.

    python tests/e2e_support/compat_runner.py GROUP

Groups: ``litellm`` (the SDK's OpenTelemetry callback), ``langchain_openinference`` (LangChain
under OpenInference, with OpenInference's openai instrumentation: what Phoenix's auto-instrument
turns on), ``langchain_openllmetry`` (OpenLLMetry's LangChain instrumentation with the contrib
openai-v2 one). Each runs a tool-calling agent loop and a streamed call, plus cached calls.

Environment as for ``runner.py``: ``E2E_FAKE_BASE``, ``E2E_DB``, ``E2E_OUT`` (the calls made:
scenario, trace id, customer, error), ``E2E_SPANS`` (every finished span with its attributes,
ids, times and scope, minus message contents, so the test can replay them in other orders).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of its price list

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from e2e_support.scenarios import LONG, Call, scenario_context

_CONTENT = (
    "gen_ai.input",
    "gen_ai.output",
    "gen_ai.prompt",
    "gen_ai.completion",
    "llm.input_messages",
    "llm.output_messages",
    "input.value",
    "output.value",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "llm.openai.messages",
    "llm.anthropic.system",
    "llm.anthropic.messages",
    "llm.openai.choices",
    "llm.anthropic.content",
    "hidden_params",
)


def span_json(span: ReadableSpan) -> dict[str, Any]:
    attrs = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in (span.attributes or {}).items()
        if not k.startswith(_CONTENT)
    }
    return {
        "name": span.name,
        "trace_id": format(span.context.trace_id, "032x") if span.context else "",
        "span_id": format(span.context.span_id, "016x") if span.context else "",
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "start_time_ns": span.start_time,
        "end_time_ns": span.end_time,
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
        "resource": dict(span.resource.attributes) if span.resource else {},
        "attributes": attrs,
    }


def weather(city: str) -> str:
    """The weather in a city."""
    return f"It is sunny in {city}."


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def litellm_calls(base: str) -> list[Call]:
    import litellm

    litellm.callbacks = ["otel"]
    openai_kw: dict[str, Any] = {"api_base": base + "/v1", "api_key": "sk-e2e-litellm"}
    anthropic_kw: dict[str, Any] = {"api_base": base, "api_key": "sk-ant-e2e-litellm"}
    system = [{"role": "system", "content": f"[litellm] {LONG}"}]
    blocks = [{"type": "text", "text": f"[litellm] {LONG}", "cache_control": {"type": "ephemeral"}}]

    def chat(question: str, user: str) -> Any:
        messages = [*system, {"role": "user", "content": question}]
        return lambda h: litellm.completion(
            model="openai/gpt-4o-mini", messages=messages, user=user, extra_headers=h, **openai_kw
        )

    def claude(question: str, user: str) -> Any:
        messages = [{"role": "system", "content": blocks}, {"role": "user", "content": question}]
        return lambda h: litellm.completion(
            model="anthropic/claude-sonnet-4-5",
            messages=messages,
            max_tokens=256,
            user=user,
            extra_headers=h,
            **anthropic_kw,
        )

    def stream(h: dict[str, str]) -> object:
        chunks = litellm.completion(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream a short answer."}],
            stream=True,
            stream_options={"include_usage": True},
            user="lite-user",
            extra_headers=h,
            **openai_kw,
        )
        for _ in chunks:
            pass
        return None

    def tool_loop(h: dict[str, str]) -> object:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
        for _ in range(4):
            reply = litellm.completion(
                model="openai/gpt-4o-mini",
                messages=messages,
                tools=[WEATHER_TOOL],
                user="lite-user",
                extra_headers=h,
                **openai_kw,
            )
            message = reply.choices[0].message
            if not message.tool_calls:
                return message.content
            messages.append(message.model_dump())
            for call in message.tool_calls:
                args = json.loads(call.function.arguments or "{}")
                result = weather(args.get("city", "Paris"))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        raise RuntimeError("the tool loop did not finish")

    return [
        # in a request span that names the customer: the usage reaches us on the raw child span
        Call("chat_cache_warm", "acme", chat("What is the refund window?", "lite-user")),
        Call("chat_cache_hit", "acme", chat("And for gift cards?", "lite-user")),
        Call("claude_cache_write", "acme", claude("What is the refund window?", "lite-user")),
        Call("claude_cache_read", "acme", claude("And for gift cards?", "lite-user")),
        # LiteLLM's own litellm_request spans: the end user passed as ``user=`` pays
        Call("stream", "lite-user", stream),
        Call("tool_loop", "lite-user", tool_loop),
    ]


def langchain_calls(base: str) -> list[Call]:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    def model(tag: str, **kw: Any) -> ChatOpenAI:
        return ChatOpenAI(
            model="gpt-4o-mini",
            base_url=base + "/v1",
            api_key="sk-e2e-langchain",  # type: ignore[arg-type]
            default_headers={"x-fake-tag": tag},
            max_retries=1,
            **kw,
        )

    weather_tool = tool(weather)

    def agent(h: dict[str, str]) -> object:
        graph = create_agent(model(h["x-fake-tag"]), tools=[weather_tool])
        return graph.invoke({"messages": [{"role": "user", "content": "What is the weather in Paris?"}]})

    def stream(h: dict[str, str]) -> object:
        for _ in model(h["x-fake-tag"], stream_usage=True).stream("Stream a short answer."):
            pass
        return None

    def cached(question: str) -> Any:
        return lambda h: model(h["x-fake-tag"]).invoke(
            [("system", f"[langchain] {LONG}"), ("user", question)]
        )

    return [
        Call("chat_cache_warm", "acme", cached("What is the refund window?")),
        Call("chat_cache_hit", "acme", cached("And for gift cards?")),
        Call("agent_tool_loop", "acme", agent),
        Call("stream", "globex", stream),
    ]


def instrument(group: str) -> None:
    if group == "langchain_openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from openinference.instrumentation.openai import OpenAIInstrumentor

        LangChainInstrumentor().instrument()
        OpenAIInstrumentor().instrument()
    elif group == "langchain_openllmetry":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIv2

        LangchainInstrumentor().instrument()
        OpenAIv2().instrument()
    elif group != "litellm":
        raise SystemExit(f"unknown group {group!r}")


def main(group: str) -> None:
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
    instrument(group)

    base = os.environ["E2E_FAKE_BASE"]
    calls = litellm_calls(base) if group == "litellm" else langchain_calls(base)
    tracer = trace.get_tracer("e2e.app")
    made = []
    for call in calls:
        tag = f"{group}:{call.name}"
        error = None
        before = {s.context.trace_id for s in spans.get_finished_spans() if s.context}
        if group == "litellm":
            # LiteLLM writes a call's usage onto the app's current span when there is one (one
            # call per request span here), or makes its own ``litellm_request`` span per call when
            # USE_OTEL_LITELLM_REQUEST_SPAN is set (the tool loop: several calls in one request).
            os.environ["USE_OTEL_LITELLM_REQUEST_SPAN"] = "true" if call.name == "tool_loop" else "false"
            with tracer.start_as_current_span(f"POST /{call.name}") as request:
                if call.customer != "lite-user":
                    request.set_attribute("customer.id", call.customer or "")
                trace_id = format(request.get_span_context().trace_id, "032x")
                try:
                    call.run({"x-fake-tag": tag})
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
        else:
            with scenario_context(call, tracer) as trace_id:
                try:
                    call.run({"x-fake-tag": tag})
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
        # LiteLLM logs successes from a thread of its own: wait for the spans of this call
        deadline = time.monotonic() + 10
        while group == "litellm" and time.monotonic() < deadline:
            finished = {s.context.trace_id for s in spans.get_finished_spans() if s.context}
            if finished - before:
                break
            time.sleep(0.05)
        time.sleep(0.2 if group == "litellm" else 0)
        new = sorted(
            {format(s.context.trace_id, "032x") for s in spans.get_finished_spans() if s.context}
            - {format(t, "032x") for t in before}
        )
        made.append(
            {
                "scenario": call.name,
                "tag": tag,
                "trace_id": trace_id,
                "trace_ids": new,
                "customer": call.customer,
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
        json.dumps([span_json(s) for s in spans.get_finished_spans()], indent=1, default=str)
    )


if __name__ == "__main__":
    main(sys.argv[1])
