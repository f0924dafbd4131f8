"""``otel-aibill demo``: real instrumented SDK calls, billed end to end, with no account anywhere.

The official ``openai`` SDK (traced by opentelemetry-instrumentation-openai-v2) and ``anthropic``
SDK (traced by its own built-in OpenTelemetry support) call the built-in fake provider for three
customers, named through W3C baggage as a web app would set them at the request's entry. The
spans go through ``BillingSpanProcessor`` into the ledger; then the usage table is printed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opentelemetry import baggage, context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_aibill.config import Config, MarkupRule
from otel_aibill.demo.fake_provider import FakeProvider, start_fake_provider
from otel_aibill.ledger.base import UsageQuery, UsageSummary
from otel_aibill.report import render_usage_table, summary_dicts, wide_console

CUSTOMERS = ("acme", "globex", "initech")
BY = ("customer", "provider", "model")
DEMO_MARKUP = MarkupRule(id="demo-20pct", percent=Decimal(20))
"""Applied when the configuration has no markup rules, so the table shows a margin."""
_POLICY = "Orders can be returned within thirty days of delivery for a full refund. " * 60
_QUESTIONS = (
    "Can I return a gift?",
    "Where is my order?",
    "Do you ship to Canada?",
    "How do I change my address?",
    "Is there a student discount?",
)


@dataclass(frozen=True, slots=True)
class DemoResult:
    calls: int
    summary: list[UsageSummary]


def _call_plan(fake: FakeProvider, provider: TracerProvider) -> list[Callable[[str], object]]:
    """A realistic mix: cached support chat, a reasoning model, embeddings, Anthropic with caching."""
    import anthropic
    import openai

    oai = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-demo", max_retries=2)
    ant = anthropic.Anthropic(
        base_url=fake.anthropic_base_url,
        api_key="sk-ant-demo",
        max_retries=2,
        open_telemetry={"tracer_provider": provider},
    )
    system: Any = [{"type": "text", "text": _POLICY, "cache_control": {"type": "ephemeral"}}]

    def support_chat(q: str) -> object:
        messages: Any = [{"role": "system", "content": _POLICY}, {"role": "user", "content": q}]
        return oai.chat.completions.create(model="gpt-4o-mini", messages=messages)

    def reasoning(q: str) -> object:
        messages: Any = [{"role": "user", "content": f"Plan the steps: {q}"}]
        return oai.chat.completions.create(model="o4-mini", messages=messages, reasoning_effort="low")

    def streamed(q: str) -> object:
        messages: Any = [{"role": "user", "content": q}]
        stream = oai.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        return [chunk for chunk in stream]

    def embed(q: str) -> object:
        return oai.embeddings.create(model="text-embedding-3-small", input=[q, _POLICY[:200]])

    def claude(q: str) -> object:
        messages: Any = [{"role": "user", "content": q}]
        return ant.messages.create(
            model="claude-sonnet-4-6", max_tokens=512, system=system, messages=messages
        )

    return [support_chat, claude, reasoning, embed, streamed]


def with_demo_markup(config: Config) -> Config:
    if config.pricing.markup:
        return config
    pricing = config.pricing.model_copy(update={"markup": (DEMO_MARKUP,)})
    return config.model_copy(update={"pricing": pricing})


def bill_demo_calls(db_url: str, config: Config | None = None, *, calls: int = 3) -> DemoResult:
    """Make ``calls`` LLM calls per customer through the real SDKs and bill them into ``db_url``."""
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    from otel_aibill.ledger import open_ledger
    from otel_aibill.processor import BillingSpanProcessor

    config = with_demo_markup((config or Config()).model_copy(update={"db": db_url}))
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-aibill-demo"}))
    processor = BillingSpanProcessor(db=db_url, config=config)
    provider.add_span_processor(processor)
    instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    made = 0
    try:
        with start_fake_provider() as fake:
            plan = _call_plan(fake, provider)
            questions = itertools.cycle(_QUESTIONS)
            for customer in CUSTOMERS:
                token = context.attach(baggage.set_baggage("customer.id", customer))
                try:
                    for step in itertools.islice(itertools.cycle(plan), calls):
                        step(next(questions))
                        made += 1
                finally:
                    context.detach(token)
    finally:
        instrumentor.uninstrument()
        provider.force_flush()
        provider.shutdown()  # drains the processor and closes its ledger
    ledger = open_ledger(db_url)
    try:
        summary = ledger.usage_summary(UsageQuery(by=BY))
    finally:
        ledger.close()
    return DemoResult(made, summary)


def run_demo(db_url: str, config: Config | None = None, *, calls: int = 3, stripe_mode: str = "cost") -> None:
    """Bill the demo calls, print the usage table for the whole ledger, then the Stripe meter events
    that usage would become (dry run) and where to look next."""
    config = config or Config()
    console = wide_console()
    with console.status("calling the fake OpenAI and Anthropic APIs through the real SDKs..."):
        result = bill_demo_calls(db_url, config, calls=calls)
    render_usage_table(summary_dicts(result.summary, BY), BY, console)
    markup = "" if config.pricing.markup else f" (markup: {DEMO_MARKUP.percent}% over cost)"
    console.print(
        f"{result.calls} LLM calls for {len(CUSTOMERS)} customers ({', '.join(CUSTOMERS)}) "
        f"billed into {db_url}{markup}.\n"
    )
    try:
        from otel_aibill.demo.stripe_view import dry_run, render
    except ImportError as exc:  # the stripe extra is missing
        console.print(f"(no Stripe dry run: {exc}; pip install 'otel-aibill[stripe]')")
    else:
        render(
            dry_run(db_url, config.model_copy(update={"db": db_url}), stripe_mode, CUSTOMERS),
            config,
            stripe_mode,
            console,
        )
    cli = f"otel-aibill --db {db_url}"
    other = "cost" if stripe_mode == "tokens" else "tokens"
    console.print(
        "\nNext:\n"
        f"  {cli} usage --by customer,model --format json    the same usage, for programs\n"
        f"  {cli} demo --stripe-mode {other}    the same demo, Stripe events in {other} mode\n"
        f"  {cli} stripe export --once    the export itself (sends once STRIPE_API_KEY is set)\n"
        f"  {cli} serve    receive OTLP from your own apps; http://127.0.0.1:8318/ lists what it serves"
    )
