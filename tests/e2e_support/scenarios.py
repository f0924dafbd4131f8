"""The LLM calls each instrumentation family makes, with the customer and context of each.

Every call runs under a remote parent with a known trace id (like a request that arrived with
a ``traceparent`` header), so the test can find the ledger rows of each call by trace id.
Each request carries ``x-fake-tag: <family>:<scenario>`` so the test can find what the fake
provider answered. Imported only inside the subprocess (it imports the SDKs).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

# Long enough (> 1024 tokens at 4 chars a token) to be cacheable by both providers.
LONG = "The refund policy covers every order placed in the last thirty days. " * 70


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    customer: str | None  # set through baggage; None: not set at all
    run: Callable[[dict[str, str]], object]  # gets the extra headers to send
    parent_customer: str | None = None  # set on a local parent span that ends after the call


@contextmanager
def scenario_context(
    call: Call, tracer: trace.Tracer, flush: Callable[[], object] | None = None
) -> Iterator[str]:
    """Remote parent with a fresh trace id, baggage customer, optional local request span.

    ``flush`` runs between the LLM call and the end of the request span, so the usage reaches
    the ledger before its customer does (trace-level attribution, not same-batch luck).
    """
    trace_id = secrets.randbits(128) or 1
    parent = SpanContext(trace_id, secrets.randbits(64) or 1, is_remote=True, trace_flags=TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    if call.customer is not None:
        ctx = baggage.set_baggage("customer.id", call.customer, context=ctx)
    token = context.attach(ctx)
    try:
        if call.parent_customer is not None:
            with tracer.start_as_current_span("POST /support/ask") as request_span:
                yield format(trace_id, "032x")
                if flush is not None:
                    flush()
                # Known only once the request is done (e.g. after auth): set late, ends last.
                request_span.set_attribute("customer.id", call.parent_customer)
        else:
            yield format(trace_id, "032x")
    finally:
        context.detach(token)


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


def openai_calls(base_url: str, family: str) -> list[Call]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-e2e-test", max_retries=2)
    system = f"[{family}] {LONG}"

    def chat(model: str, text: str, **kw: Any) -> Callable[[dict[str, str]], object]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        return lambda h: client.chat.completions.create(model=model, messages=messages, extra_headers=h, **kw)

    def stream(include_usage: bool) -> Callable[[dict[str, str]], object]:
        kw: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
        messages = [{"role": "user", "content": f"Stream a short answer ({include_usage})."}]
        return lambda h: _drain(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True, extra_headers=h, **kw
            )
        )

    def responses(h: dict[str, str]) -> object:
        return client.responses.create(
            model="gpt-5", instructions=system, input="Summarise the policy.", extra_headers=h
        )

    def embeddings(h: dict[str, str]) -> object:
        return client.embeddings.create(
            model="text-embedding-3-small", input=["refund policy", "order status"], extra_headers=h
        )

    return [
        Call("chat_cache_warm", "acme", chat("gpt-4o", "What is the refund window?")),
        Call("chat_cache_hit", "acme", chat("gpt-4o", "And for gift cards?")),
        Call("chat_reasoning", "acme", chat("o4-mini", "Think about edge cases.", reasoning_effort="high")),
        Call("chat_flex", "globex", chat("o4-mini", "Batch-friendly question.", service_tier="flex")),
        Call("stream_usage", "acme", stream(True)),
        Call("stream_no_usage", "acme", stream(False)),
        Call("embeddings", "globex", embeddings),
        Call("responses", "acme", responses),
        Call("retry_429", "acme", _with_error(chat("gpt-4o-mini", "Retry me."), 429)),
        Call("trace_attr", None, chat("gpt-4o-mini", "Who pays for this?"), parent_customer="acme"),
    ]


def anthropic_calls(base_url: str, family: str, *, sdk_tracing: bool) -> list[Call]:
    import anthropic

    client = anthropic.Anthropic(
        base_url=base_url,
        api_key="sk-ant-e2e-test",
        max_retries=2,
        open_telemetry=None if sdk_tracing else False,
    )
    system = [
        {"type": "text", "text": f"[{family}] {LONG}", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": f"Today's notes. {LONG}", "cache_control": {"type": "ephemeral"}},
    ]
    model = "claude-sonnet-4-6"

    def message(text: str, **kw: Any) -> Callable[[dict[str, str]], object]:
        messages = [{"role": "user", "content": text}]
        return lambda h: client.messages.create(
            model=model, max_tokens=2048, system=system, messages=messages, extra_headers=h, **kw
        )

    def stream(h: dict[str, str]) -> object:
        messages = [{"role": "user", "content": "Stream the answer."}]
        with client.messages.stream(
            model=model, max_tokens=512, system=system, messages=messages, extra_headers=h
        ) as s:
            return s.get_final_message()

    def thinking(h: dict[str, str]) -> object:
        messages = [{"role": "user", "content": "Think it through."}]
        return client.messages.create(
            model=model,
            max_tokens=4096,
            thinking={"type": "enabled", "budget_tokens": 2048},
            messages=messages,
            extra_headers=h,
        )

    return [
        Call("msg_cache_write", "acme", message("What is the refund window?")),
        Call("msg_cache_read", "acme", message("And for gift cards?")),
        Call("msg_stream", "globex", stream),
        Call("msg_thinking", "acme", thinking),
        Call("retry_429", "acme", _with_error(message("Retry me."), 429)),
        Call("trace_attr", None, message("Who pays for this?"), parent_customer="acme"),
    ]


def _with_error(run: Callable[[dict[str, str]], object], status: int) -> Callable[[dict[str, str]], object]:
    """The first attempt fails with ``status``; the SDK's own retry then succeeds."""
    return lambda h: run({**h, "x-fake-error": str(status), "x-fake-error-times": "1"})


def usage_header(usage: dict[str, Any]) -> dict[str, str]:
    return {"x-fake-usage": json.dumps(usage)}
