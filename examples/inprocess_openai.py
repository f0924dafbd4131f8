"""Bill an app's OpenAI calls in-process: one span processor, customers named through baggage.

    pip install "otel-aibill[demo]"
    python examples/inprocess_openai.py            # against the built-in fake provider
    OPENAI_API_KEY=sk-... python examples/inprocess_openai.py --real
    otel-aibill --db sqlite:///example.db usage

In a web app, set the baggage once where the request enters (after authentication); every
LLM span below it, in this service or in services it calls, is billed to that customer.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import openai
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_aibill import BillingSpanProcessor
from otel_aibill.config import Config
from otel_aibill.demo import start_fake_provider

DB = "sqlite:///example.db"


@contextlib.contextmanager
def customer(customer_id: str) -> Iterator[None]:
    """What a request middleware does once it knows who is calling."""
    token = context.attach(baggage.set_baggage("customer.id", customer_id))
    try:
        yield
    finally:
        context.detach(token)


def answer(client: openai.OpenAI, question: str) -> str:
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
    return reply.choices[0].message.content or ""


def main(real: bool) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    billing = BillingSpanProcessor(db=DB, config=Config(db=DB))
    provider.add_span_processor(billing)
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()

    with contextlib.ExitStack() as stack:
        if real:
            client = openai.OpenAI()
        else:
            fake = stack.enter_context(start_fake_provider())
            client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-fake")
        for customer_id, question in [("acme", "Where is my order?"), ("globex", "Can I return a gift?")]:
            with customer(customer_id):
                print(customer_id, "->", answer(client, question))

    provider.shutdown()  # flushes the billing processor: the ledger now holds both calls
    print(f"billed into {DB}; see: otel-aibill --db {DB} usage")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="call api.openai.com (needs OPENAI_API_KEY)")
    main(parser.parse_args().real)
