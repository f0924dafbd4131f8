"""The per-span hot path (extraction, records, pricing, nested calls, prepare/commit) decides
exactly what the straightforward implementation it replaced decides.

Each reference below is that implementation, kept here as the oracle: the loop that read token
counts, one ``first_str`` per field, the frozen dataclass constructors and ``dataclasses.replace``,
the nested-call rule over record lists and the pipeline that priced and billed with them. Both
sides get the recorded instrumentation spans, generated spans and generated batches.
"""

from __future__ import annotations

import dataclasses
import operator
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_aibill.config import Config, MarkupRule, PricingConfig
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import AppendBatch, Attribution
from otel_aibill.ledger.sqlite import SqliteLedger
from otel_aibill.pipeline import IngestResult, Pipeline, Prepared
from otel_aibill.pricing import Pricer
from otel_aibill.pricing.catalog import Miss
from otel_aibill.pricing.rates import UsageError
from otel_aibill.records import attribute_reader, replacer, slot_constructor
from otel_aibill.semconv import extract, genai
from otel_aibill.semconv.counts import Counts
from otel_aibill.semconv.genai import COUNT_FIELDS, TokenKeys
from otel_aibill.semconv.models import model_prefix_provider, normalize_model
from otel_aibill.semconv.operations import operation_of
from otel_aibill.semconv.plan import make_plan
from otel_aibill.semconv.providers import UNKNOWN, normalize_provider
from otel_aibill.semconv.tokens import InvalidUsage, first_str, token_value
from otel_aibill.usage import (
    NotBillable,
    NotBillableReason,
    PricedUsage,
    PriceStatus,
    SpanView,
    UsageRecord,
)
from semconv_fixtures import DATA, load_spans
from test_semconv_property import SCOPES, attribute_dicts

FIXTURES = sorted(p.stem for p in DATA.glob("*.json"))
T0 = 1_790_000_000_000_000_000

# -- extraction --------------------------------------------------------------------------------


def loop_read_counts(attrs: Any, keys: TokenKeys) -> Counts:
    counts = Counts()
    for name in COUNT_FIELDS:
        for key in getattr(keys, name):
            value = attrs.get(key)
            if value is not None:
                setattr(counts, name, token_value(key, value))
                break
    return counts


def reference_extract(span: SpanView, customer: str | None = None) -> UsageRecord | NotBillable:
    compiled, genai.read_counts = genai.read_counts, loop_read_counts  # the adapters call it
    try:
        return _reference(span, customer)
    except Exception as exc:
        reason = NotBillableReason.INVALID_USAGE
        return NotBillable(reason, f"{type(exc).__name__}: {exc}", span.trace_id, span.span_id)
    finally:
        genai.read_counts = compiled


def _reference(span: SpanView, customer: str | None) -> UsageRecord | NotBillable:
    attrs: Any = span.attributes

    def no(reason: NotBillableReason, detail: str = "") -> NotBillable:
        return NotBillable(reason, detail, span.trace_id, span.span_id)

    plan = make_plan(span.scope_name, tuple(attrs))
    if not plan.is_genai:
        return no(NotBillableReason.NOT_GENAI)
    if plan.aggregated_key is not None:
        return no(NotBillableReason.AGGREGATED_USAGE, plan.aggregated_key)
    operation, not_inference = operation_of(attrs, span.name)
    if not_inference:
        return no(NotBillableReason.NOT_INFERENCE, not_inference)
    convention = plan.convention
    from otel_aibill.semconv import pydantic_ai, vercel_ai

    if convention == "pydantic-ai" and pydantic_ai.is_run_span(span.name, attrs):
        return no(NotBillableReason.AGGREGATED_USAGE, "pydantic-ai agent run span")
    if convention == "vercel-ai" and not vercel_ai.is_step_span(span.name, attrs):
        return no(NotBillableReason.AGGREGATED_USAGE, f"vercel ai {span.name}: sum of its step spans")
    response_model = first_str(attrs, plan.response_model)
    request_model = first_str(attrs, plan.request_model)
    raw_model = response_model or request_model or ""
    declared = first_str(attrs, plan.provider) if plan.provider else None
    if declared is None:
        declared = plan.scope_provider
    provider = normalize_provider(declared, first_str(attrs, plan.address) if plan.address else None)
    if provider == UNKNOWN:
        provider = model_prefix_provider(raw_model) or UNKNOWN
    try:
        counts = plan.reader(attrs, provider, plan.token_keys)
        if not counts.has_totals:
            return no(NotBillableReason.NO_USAGE, f"{convention}: no token counts")
        counts.validate()
    except InvalidUsage as exc:
        return no(NotBillableReason.INVALID_USAGE, str(exc))
    if not counts.input and not counts.output:
        return no(NotBillableReason.NO_USAGE, f"{convention}: token counts are zero")
    served_tier = (first_str(attrs, plan.served_tier) if plan.served_tier else None) or (
        first_str(attrs, plan.requested_tier) if plan.requested_tier else None
    )
    return UsageRecord(
        trace_id=span.trace_id,
        span_id=span.span_id,
        start_time_ns=span.start_time_ns,
        end_time_ns=span.end_time_ns,
        provider=provider,
        model=normalize_model(raw_model, provider) if raw_model else UNKNOWN,
        operation=operation or "unknown",
        input_tokens=counts.input or 0,
        output_tokens=counts.output or 0,
        cache_read_tokens=counts.cache_read,
        cache_write_tokens=counts.cache_write,
        cache_write_5m_tokens=counts.cache_write_5m,
        cache_write_1h_tokens=counts.cache_write_1h,
        reasoning_tokens=counts.reasoning,
        input_audio_tokens=counts.input_audio,
        output_audio_tokens=counts.output_audio,
        request_model=request_model,
        response_model=response_model,
        service_tier=served_tier.lower() if served_tier else None,
        response_id=first_str(attrs, plan.response_id) if plan.response_id else None,
        server_address=first_str(attrs, plan.server_address) if plan.server_address else None,
        scope_name=span.scope_name,
        convention=convention,
        customer=customer,
        parent_span_id=span.parent_span_id,
    )


def assert_same_extraction(span: SpanView) -> None:
    for customer in (None, "acme"):
        got, expected = extract(span, customer), reference_extract(span, customer)
        assert got == expected
        assert type(got) is type(expected)


# Values that take the slow branches: text counts, floats, bools, padding, lone surrogates.
ODD_VALUES: list[Any] = [
    "12",
    " 7 ",
    12.0,
    1.5,
    True,
    -3,
    10**13,
    "",
    "  ",
    "x\ud800",
    " gpt-4o ",
    ["a"],
    None,
    "FLEX",
]


def mutations(span: SpanView, rng: random.Random) -> Iterator[SpanView]:
    keys = list(span.attributes)
    for _ in range(12):
        attrs = dict(span.attributes)
        for key in rng.sample(keys, k=min(len(keys), rng.randint(1, 3))):
            attrs[key] = rng.choice(ODD_VALUES)
        yield dataclasses.replace(span, attributes=attrs)


@pytest.mark.parametrize("name", FIXTURES)
def test_recorded_spans_extract_as_before(name: str) -> None:
    rng = random.Random(name)
    for span in load_spans(name):
        assert_same_extraction(span)
        for mutated in mutations(span, rng):
            assert_same_extraction(mutated)


MORE_KEYS: dict[str, st.SearchStrategy[Any]] = {
    "gen_ai.operation.name": st.sampled_from(["chat", " Chat ", "", "  ", "completion", "invoke_agent", 1]),
    "gen_ai.response.id": st.sampled_from(["chatcmpl-1", " r ", "", "\ud800"]),
    "llm.response.id": st.sampled_from(["r-2", 3]),
    "ai.response.id": st.just("ai-1"),
    "gen_ai.request.service_tier": st.sampled_from(["Flex", " batch ", ""]),
    "gen_ai.response.service_tier": st.sampled_from(["default", 1]),
    "anthropic.request.service_tier": st.just("priority"),
    "llm.provider": st.sampled_from(["openai", "anthropic", "Google"]),
    "llm.model_name": st.sampled_from(["gpt-4o-mini", "claude-sonnet-4", "models/gemini-2.5-pro"]),
    "embedding.model_name": st.just("text-embedding-3-small"),
    "ai.model.provider": st.sampled_from(["openai.chat", "anthropic.messages", "google.generative-ai"]),
    "ai.model.id": st.sampled_from(["gpt-4o", "claude-3-5-haiku"]),
    "ai.operationId": st.sampled_from(["ai.generateText.doGenerate", "ai.generateText"]),
    "ai.usage.inputTokens": st.integers(0, 500),
    "ai.usage.outputTokens": st.integers(0, 500),
    "ai.usage.cachedInputTokens": st.integers(0, 100),
    "ai.response.providerMetadata": st.sampled_from(
        ['{"anthropic": {"cacheCreationInputTokens": 5}}', "{}", "nope cacheCreationInputTokens"]
    ),
    "pydantic_ai.all_messages": st.just("[]"),
    "traceloop.span.kind": st.sampled_from(["workflow", "llm", "task"]),
    "gen_ai.openai.api_base": st.sampled_from(["https://api.openai.com/v1", "https://x.example/v1"]),
    "url.full": st.just("https://bedrock-runtime.us-east-1.amazonaws.com/model/x"),
}


@st.composite
def more_attributes(draw: st.DrawFn) -> dict[str, Any]:
    attrs = draw(attribute_dicts())
    for key in draw(st.lists(st.sampled_from(sorted(MORE_KEYS)), max_size=6, unique=True)):
        attrs[key] = draw(MORE_KEYS[key])
    return attrs


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=more_attributes(),
    scope=st.one_of(
        SCOPES,
        st.sampled_from(
            ["opentelemetry.instrumentation.botocore", "ai", "opentelemetry.instrumentation.openai_v2"]
        ),
    ),
    name=st.sampled_from(["chat gpt-4o", "openai.chat", "agent run", "ai.generateText.doGenerate", "x"]),
)
def test_generated_spans_extract_as_before(attrs: dict[str, Any], scope: str, name: str) -> None:
    span = SpanView("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", name, 5, 9, attrs, {}, scope)
    assert_same_extraction(span)


@settings(max_examples=500, deadline=None)
@given(attrs=attribute_dicts())
def test_compiled_token_readers_read_as_the_loop(attrs: dict[str, Any]) -> None:
    from otel_aibill.semconv import anthropic_sdk, openinference, pydantic_ai, vercel_ai

    for keys in (genai.KEYS, anthropic_sdk.KEYS, openinference.KEYS, pydantic_ai.KEYS, vercel_ai.KEYS):
        for candidate in (keys, keys.present(attrs)):
            try:
                expected: Any = loop_read_counts(attrs, candidate)
            except InvalidUsage as exc:
                expected = str(exc)
            try:
                got: Any = candidate.read(attrs)
            except InvalidUsage as exc:
                got = str(exc)
            assert got == expected


# -- records -----------------------------------------------------------------------------------


def values_for(cls: type[Any], rng: random.Random) -> dict[str, Any]:
    pool: list[Any] = ["a", "", None, 0, 7, Decimal("1.25"), PriceStatus.PRICED, {"k": 1}]
    return {f.name: rng.choice(pool) for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", [UsageRecord, PricedUsage, SpanView, NotBillable])
def test_fast_constructors_build_equal_records(cls: type[Any]) -> None:
    make = slot_constructor(cls)
    assert make is not cls
    rng = random.Random(cls.__name__)
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    for _ in range(200):
        values = values_for(cls, rng)
        built, expected = make(**values), cls(**values)
        assert type(built) is cls and built == expected and repr(built) == repr(expected)
        positional = [values[f.name] for f in dataclasses.fields(cls)]
        assert make(*positional) == expected
        only_required = {name: values[name] for name in required}
        assert make(**only_required) == cls(**only_required)  # defaults and default factories
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(built, required[0], "changed")
    if cls is SpanView:  # a default factory gives each record its own object
        a, b = make("t", "s", "n", 1, 2, {}), make("t", "s", "n", 1, 2, {})
        assert a.resource == {} and a.resource is not b.resource


def test_replacers_replace_as_dataclasses_replace() -> None:
    rng = random.Random(3)
    with_customer = replacer(UsageRecord, "customer")
    with_billing = replacer(PricedUsage, "usage", "billed", "markup_rule")
    for _ in range(200):
        usage = UsageRecord(**values_for(UsageRecord, rng))
        priced = PricedUsage(**values_for(PricedUsage, rng))
        assert with_customer(usage, "acme") == replace(usage, customer="acme")
        assert with_billing(priced, usage, Decimal(2), None) == replace(
            priced, usage=usage, billed=Decimal(2), markup_rule=None
        )


def test_attribute_readers_read_as_attrgetter() -> None:
    rng = random.Random(5)
    rows = [
        PricedUsage(**{**values_for(PricedUsage, rng), "usage": UsageRecord(**values_for(UsageRecord, rng))})
        for _ in range(50)
    ]
    paths = ("usage.model", "cost", "usage.customer", "markup_rule", "usage.trace_id")
    expected = list(map(operator.attrgetter(*paths), rows))
    assert attribute_reader(*paths)(rows) == expected
    assert attribute_reader("cost")(rows) == [(row.cost,) for row in rows]  # one path: 1-tuples
    assert attribute_reader(*paths)([]) == []
    with pytest.raises(AttributeError):
        attribute_reader("usage.nope")(rows)
    for bad in ("usage.model)] + [(1", "a..b", "", "x.1", "usage.class"):
        with pytest.raises(ValueError, match="not an attribute path"):
            attribute_reader(bad)


def test_classes_the_fast_constructor_cannot_build_fall_back_to_themselves() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        value: int

    assert slot_constructor(Checked) is Checked
    assert slot_constructor(NoSlots) is NoSlots


# -- prepare / commit --------------------------------------------------------------------------


class ReferencePricer(Pricer):
    """``Pricer`` as it was: ``dataclasses.replace`` and the dataclass constructor."""

    def price(self, usage: UsageRecord) -> PricedUsage:
        key = (usage.provider, usage.model, usage.service_tier, usage.server_address)
        line = self._lines.get(key) or self._line(key)
        rates = line.single or line.at(usage.start_time_ns)
        if isinstance(rates, Miss):
            return self._unpriced(usage, rates.reason)
        try:
            cost = rates.cost_fn(usage)
        except UsageError as exc:
            return self._unpriced(usage, f"usage cannot be priced for {rates.key}: {exc}")
        if usage.customer is None:
            return PricedUsage(usage, PriceStatus.PRICED, cost, None, self.currency, self.version, rates.key)
        return self._ref_billed(usage, cost, rates.key, usage.customer)

    def bill(self, priced: PricedUsage, customer: str) -> PricedUsage:
        usage = replace(priced.usage, customer=customer)
        if priced.cost is None or priced.price_key is None:
            return replace(priced, usage=usage, billed=None, markup_rule=None)
        return self._ref_billed(usage, priced.cost, priced.price_key, customer, priced)

    def _ref_billed(
        self, usage: UsageRecord, cost: Decimal, key: str, customer: str, priced: PricedUsage | None = None
    ) -> PricedUsage:
        rule = self.markup.rule_for(usage.provider, usage.model, key, customer)
        billed = cost if rule is None else rule.apply(cost)
        rule_id = None if rule is None else rule.rule.id
        if priced is not None:
            return replace(priced, usage=usage, billed=billed, markup_rule=rule_id)
        return PricedUsage(usage, PriceStatus.PRICED, cost, billed, self.currency, self.version, key, rule_id)

    def _unpriced(self, usage: UsageRecord, reason: str) -> PricedUsage:
        return PricedUsage(
            usage, PriceStatus.UNPRICED, None, None, self.currency, self.version, unpriced_reason=reason
        )


class ReferencePipeline(Pipeline):
    """``Pipeline.prepare``/``commit`` as they were, over the reference pricer (and the same
    same-call rule)."""

    def __init__(self, ledger: SqliteLedger, config: Config) -> None:
        super().__init__(ledger, config, ReferencePricer(config.pricing))

    def prepare(self, spans: Sequence[SpanView]) -> Prepared:
        from otel_aibill.attribution import customer_of

        not_billable: Counter[str] = Counter()
        names: dict[str, str] = {}
        usages: list[UsageRecord] = []
        for span in spans:
            customer = customer_of(span.attributes, span.resource, self._keys)
            if customer is not None and span.trace_id not in names:
                names[span.trace_id] = customer
            extracted = reference_extract(span, customer)
            if isinstance(extracted, NotBillable):
                not_billable[extracted.reason.value] += 1
            else:
                usages.append(extracted)
        rows: list[PricedUsage] = []
        settled: list[bool] = []
        for usage in usages:
            if usage.customer is not None:
                rows.append(self.pricer.price(usage))
                settled.append(True)
                continue
            customer = self._trace_customers.peek(usage.trace_id)
            final = customer is not None
            if customer is None:
                customer = names.get(usage.trace_id)
            rows.append(self.pricer.price(usage if customer is None else replace(usage, customer=customer)))
            settled.append(final)
        return Prepared(spans, usages, rows, settled, names, not_billable)

    def commit(self, prepared: Prepared) -> IngestResult:
        result = IngestResult(received=len(prepared.spans))
        not_billable = Counter(prepared.not_billable)
        names = prepared.trace_customers
        usages, settled, priced = prepared.usages, prepared.settled, prepared.rows
        decision = self._calls.decide(usages, not_billable)
        order = decision.kept
        priced, settled = list(priced), list(settled)
        for i, merged in decision.merged.items():
            if merged.customer is not None:
                priced[i], settled[i] = self.pricer.price(merged), True
            else:
                customer = priced[i].usage.customer
                merged = merged if customer is None else replace(merged, customer=customer)
                priced[i] = self.pricer.price(merged)
        cache = self._trace_customers
        ask = {
            usages[i].trace_id
            for i in order
            if not settled[i] and usages[i].trace_id in names and cache.get(usages[i].trace_id) is None
        }
        stored = self.ledger.trace_customers(ask) if ask else {}
        for trace_id, first in stored.items():
            cache.put(trace_id, first)
        rows: list[PricedUsage] = []
        pending_traces: set[str] = set()
        for i in order:
            row = priced[i]
            if not settled[i]:
                trace_id = usages[i].trace_id
                customer = stored.get(trace_id) or cache.get(trace_id) or names.get(trace_id)
                if customer is None:
                    pending_traces.add(trace_id)
                elif customer != row.usage.customer:
                    row = self.pricer.bill(row, customer)
            if row.status is PriceStatus.UNPRICED:
                result.unpriced += 1
            rows.append(row)
        appended = self.ledger.append(
            AppendBatch(rows=rows, trace_customers=names, not_billable=dict(not_billable))
        )
        result.billed = appended.inserted
        result.duplicates = appended.duplicate_spans
        if appended.duplicate_responses:
            not_billable["duplicate_response"] += appended.duplicate_responses
        if appended.duplicate_spans:
            not_billable["duplicate_span"] += appended.duplicate_spans
        result.not_billable = dict(not_billable)
        known: dict[str, str] = {}
        for trace_id in appended.new_trace_customers:
            named = names.get(trace_id)
            if named is not None:
                known[trace_id] = named
                cache.put(trace_id, named)
        ask = pending_traces - known.keys()
        if ask:
            known.update(self.ledger.trace_customers(ask))
        if known:
            result.attributed_later = self._attribute(self.ledger.pending_attribution(known), known)
        result.pending = sum(1 for r in rows if r.usage.customer is None and r.usage.trace_id not in known)
        self.totals.add(result)
        return result


class Recording:
    """What a pipeline hands its ledger: every appended batch and every attribution, in order."""

    def __init__(self, ledger: SqliteLedger) -> None:
        self.batches: list[AppendBatch] = []
        self.attributions: list[list[Attribution]] = []
        append, attribute = ledger.append, ledger.set_attribution

        def recorded_append(batch: AppendBatch) -> Any:
            self.batches.append(batch)
            return append(batch)

        def recorded_attribution(updates: Sequence[Attribution]) -> int:
            self.attributions.append(list(updates))
            return attribute(updates)

        ledger.append = recorded_append  # type: ignore[method-assign]
        ledger.set_attribution = recorded_attribution  # type: ignore[method-assign]


CONFIG = Config(
    pricing=PricingConfig(
        markup=(
            MarkupRule(id="acme", customer="acme", percent=Decimal(50)),
            MarkupRule(id="models", model="gpt-4o*", percent=Decimal("12.5")),
        )
    )
)


def generated_batches(seed: int) -> list[tuple[list[SpanView], list[SpanView]]]:
    """Recorded spans under many traces, in batches: customers on the span, on its resource, on a
    root span before or after it, in a later batch, stored by another process before the batch, or
    never; unpriced models, nested repeats of one call, redelivered spans and spans that are not
    GenAI at all. Each batch comes with what the other process stores just before it."""
    rng = random.Random(seed)
    recorded = [s for name in FIXTURES for s in load_spans(name)]
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
    }
    batches: list[tuple[list[SpanView], list[SpanView]]] = []
    sent: list[SpanView] = []
    carry: list[SpanView] = []  # root spans that arrive one batch after their usage
    for b in range(8):
        batch, carry = carry, []
        elsewhere: list[SpanView] = []
        for t in range(30):
            trace = f"{seed:08x}{b:08x}{t:016x}"
            customer = rng.choice(["acme", "globex", None, None])
            base = rng.choice(recorded)
            attrs = dict(base.attributes)
            where = rng.choice(["span", "resource", "root", "later", "other", "never"])
            if where == "span" and customer:
                attrs["customer.id"] = customer
            if rng.random() < 0.1:
                attrs["gen_ai.request.model"] = attrs["gen_ai.response.model"] = "no-such-model-xyz"
            resource = {"tenant.id": customer} if where == "resource" and customer else {}
            start = T0 + rng.randint(0, 10**12)
            llm = dataclasses.replace(
                base, trace_id=trace, span_id=f"{1:016x}", start_time_ns=start, end_time_ns=start + 10
            )
            llm = dataclasses.replace(llm, attributes=attrs, resource=resource, parent_span_id=f"{2:016x}")
            batch.append(llm)
            if rng.random() < 0.3:  # the same call seen again by a second instrumentation
                batch.append(
                    dataclasses.replace(llm, span_id=f"{2:016x}", end_time_ns=start + 20, parent_span_id=None)
                )
            if rng.random() < 0.2:  # two separate calls with equal usage
                batch.append(
                    dataclasses.replace(llm, span_id=f"{5:016x}", attributes=chat, parent_span_id=None)
                )
            if customer and where in ("root", "later", "other"):
                root = SpanView(trace, f"{3:016x}", "GET /", start, start + 50, {"customer.id": customer})
                {"root": batch, "later": carry, "other": elsewhere}[where].append(root)
            batch.append(SpanView(trace, f"{4:016x}", "db", start, start + 1, {"db.system": "sqlite"}))
        if b % 2:
            batch += rng.sample(sent, k=min(10, len(sent)))  # redelivery
        sent += batch
        rng.shuffle(batch)
        batches.append((elsewhere, batch))
    return batches


@pytest.fixture
def ledger_pair(tmp_path: Path) -> Iterator[Callable[[], tuple[SqliteLedger, SqliteLedger]]]:
    opened: list[SqliteLedger] = []

    def make() -> tuple[SqliteLedger, SqliteLedger]:
        pair = []
        for name in ("new", "reference"):
            ledger = open_ledger(f"sqlite:///{tmp_path / name}-{len(opened)}.db")
            assert isinstance(ledger, SqliteLedger)
            opened.append(ledger)
            pair.append(ledger)
        return pair[0], pair[1]

    yield make
    for ledger in opened:
        ledger.close()


@pytest.mark.parametrize("seed", range(4))
def test_pipeline_stores_and_reports_as_before(
    seed: int, ledger_pair: Callable[[], tuple[SqliteLedger, SqliteLedger]]
) -> None:
    new_ledger, ref_ledger = ledger_pair()
    new_seen, ref_seen = Recording(new_ledger), Recording(ref_ledger)
    new, ref = Pipeline(new_ledger, CONFIG), ReferencePipeline(ref_ledger, CONFIG)
    other_new, other_ref = Pipeline(new_ledger, CONFIG), Pipeline(ref_ledger, CONFIG)  # another process
    for i, (elsewhere, batch) in enumerate(generated_batches(seed)):
        other_new.ingest(elsewhere)
        other_ref.ingest(elsewhere)
        if i % 2:  # prepared in two requests, committed together, as the receiver does
            half = len(batch) // 2
            got = new.commit(Prepared.merge([new.prepare(batch[:half]), new.prepare(batch[half:])]))
            expected = ref.commit(Prepared.merge([ref.prepare(batch[:half]), ref.prepare(batch[half:])]))
        else:
            got, expected = new.ingest(batch), ref.ingest(batch)
        assert got == expected
    assert new.totals == ref.totals
    assert [b.rows for b in new_seen.batches] == [b.rows for b in ref_seen.batches]
    assert [(b.trace_customers, b.not_billable) for b in new_seen.batches] == [
        (b.trace_customers, b.not_billable) for b in ref_seen.batches
    ]
    assert new_seen.attributions == ref_seen.attributions
    rows = [(r.priced, r.export_batch) for r in new_ledger.rows(limit=100_000)]
    assert rows == [(r.priced, r.export_batch) for r in ref_ledger.rows(limit=100_000)]
    totals = new.totals
    assert totals.billed and totals.unpriced and totals.pending and totals.attributed_later  # all paths ran
    assert totals.not_billable.get("duplicate_call") and totals.duplicates
