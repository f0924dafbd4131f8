"""``Pipeline.prepare`` (pure, any thread) then ``Pipeline.commit`` (the single writer).

Spans go through the real pipeline into a real SQLite ledger; the comparisons are against
``ingest`` of the same spans on a fresh ledger, the one-step path the processor uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_aibill.config import Config, MarkupRule, PricingConfig
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.sqlite import SqliteLedger
from otel_aibill.pipeline import Pipeline, Prepared, isolate
from otel_aibill.semconv.tokens import first_str
from otel_aibill.usage import SpanView

T0 = 1_790_000_000_000_000_000
CONFIG = Config(
    pricing=PricingConfig(
        markup=(
            MarkupRule(id="acme", customer="acme", percent=Decimal(50)),
            MarkupRule(id="globex", customer="globex", percent=Decimal(10)),
        )
    )
)


def chat(**extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        **extra,
    }


def span(
    trace: int,
    span_id: int,
    attrs: dict[str, Any],
    *,
    parent: int | None = None,
    end: int = 0,
    scope: str = "",
) -> SpanView:
    return SpanView(
        trace_id=f"{trace:032x}",
        span_id=f"{span_id:016x}",
        name="chat",
        start_time_ns=T0,
        end_time_ns=T0 + 1_000 + end,
        attributes=attrs,
        parent_span_id=None if parent is None else f"{parent:016x}",
        scope_name=scope,
    )


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[Any]:
    opened: list[SqliteLedger] = []

    def make(name: str = "ledger") -> SqliteLedger:
        ledger = open_ledger(f"sqlite:///{tmp_path / name}.db")
        assert isinstance(ledger, SqliteLedger)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


def stored(ledger: SqliteLedger) -> dict[tuple[str, str], tuple[str | None, Any, Any, str | None]]:
    return {
        (r.priced.usage.trace_id, r.priced.usage.span_id): (
            r.priced.usage.customer,
            r.priced.cost,
            r.priced.billed,
            r.priced.markup_rule,
        )
        for r in ledger.rows(limit=100_000)
    }


def workload() -> list[list[SpanView]]:
    """Batches mixing own customers, trace customers named before and after the usage, pending
    usage named in a later batch, nested spans of one call and non-GenAI spans."""
    batches: list[list[SpanView]] = []
    for b in range(6):
        batch: list[SpanView] = []
        for t in range(20):
            trace = b * 100 + t
            who = "acme" if t % 2 else "globex"
            batch.append(span(trace, 1, chat(**{"customer.id": who})))  # own customer
            batch.append(span(trace, 2, chat(), parent=3))  # trace customer, inner of a nested pair
            batch.append(span(trace, 3, chat(), end=5))  # the outer span of that call
            batch.append(span(trace, 4, {"customer.id": who}))  # the root naming the customer
            batch.append(span(trace + 50, 5, chat()))  # pending until the next batch
            if b:
                batch.append(span(trace + 50 - 100, 6, {"customer.id": "initech"}))
        batches.append(batch)
    return batches


def test_prepare_then_commit_stores_what_ingest_stores(ledgers: Any) -> None:
    one_step, two_step = ledgers("one"), ledgers("two")
    a, b = Pipeline(one_step, CONFIG), Pipeline(two_step, CONFIG)
    for batch in workload():
        expected = a.ingest(batch)
        got = b.commit(b.prepare(batch))
        assert got == expected
    assert stored(two_step) == stored(one_step)
    assert len(stored(one_step)) == 6 * 20 * 3  # spans 1, 2 and 5: the nested outer span 3 is not
    assert {c for c, *_ in stored(one_step).values()} == {"acme", "globex", "initech", None}


def test_prepared_on_many_threads_and_committed_together(ledgers: Any) -> None:
    serial, threaded = ledgers("serial"), ledgers("threaded")
    reference = Pipeline(serial, CONFIG)
    for batch in workload():
        reference.ingest(batch)

    pipeline = Pipeline(threaded, CONFIG)
    batches = workload()
    prepared: list[Prepared | None] = [None] * len(batches)
    start = threading.Barrier(len(batches))

    def run(i: int) -> None:
        start.wait()
        for _ in range(20):  # hammer the shared caches
            prepared[i] = pipeline.prepare(batches[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parts = [p for p in prepared if p is not None]
    assert len(parts) == len(batches)
    # committed in order, two requests per group commit
    for i in range(0, len(parts), 2):
        pipeline.commit(Prepared.merge(parts[i : i + 2]))
    assert stored(threaded) == stored(serial)


def test_first_stored_customer_wins_over_names_prepared_before_it_was_stored(ledgers: Any) -> None:
    """Both requests are prepared before either commits, as on a busy receiver: the second one's
    own name for the trace must not bill its usage once the first name is stored."""
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    first = pipeline.prepare([span(1, 1, chat()), span(1, 10, {"customer.id": "acme"})])
    second = pipeline.prepare([span(1, 11, {"customer.id": "globex"}), span(1, 2, chat())])
    pipeline.commit(first)
    pipeline.commit(second)
    assert ledger.trace_customers([f"{1:032x}"]) == {f"{1:032x}": "acme"}
    assert {(c, rule) for c, _, _, rule in stored(ledger).values()} == {("acme", "acme")}


def test_two_names_for_one_trace_in_one_group_commit(ledgers: Any) -> None:
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    a = pipeline.prepare([span(1, 1, chat()), span(1, 10, {"customer.id": "acme"})])
    b = pipeline.prepare([span(1, 11, {"customer.id": "globex"}), span(1, 2, chat())])
    pipeline.commit(Prepared.merge([a, b]))
    assert {c for c, *_ in stored(ledger).values()} == {"acme"}


def test_customer_stored_by_another_process_wins(ledgers: Any) -> None:
    ledger = ledgers()
    Pipeline(ledger, CONFIG).ingest([span(1, 10, {"customer.id": "acme"})])
    fresh = Pipeline(ledger, CONFIG)  # nothing cached: the ledger is asked
    result = fresh.ingest([span(1, 11, {"customer.id": "globex"}), span(1, 2, chat())])
    assert result.pending == 0
    [(customer, cost, billed, rule)] = stored(ledger).values()
    assert (customer, rule) == ("acme", "acme") and billed == cost * 3 / 2


def test_a_span_own_customer_is_kept_whatever_the_trace_customer(ledgers: Any) -> None:
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    pipeline.ingest([span(1, 10, {"customer.id": "acme"})])
    pipeline.ingest([span(1, 2, chat(**{"customer.id": "globex"}))])
    assert [c for c, *_ in stored(ledger).values()] == ["globex"]


def test_usage_pending_in_one_request_is_attributed_when_a_later_commit_names_its_trace(ledgers: Any) -> None:
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    early = pipeline.prepare([span(1, 2, chat())])
    late = pipeline.prepare([span(1, 10, {"customer.id": "globex"})])
    assert pipeline.commit(early).pending == 1
    assert pipeline.commit(late).attributed_later == 1
    assert [(c, rule) for c, _, _, rule in stored(ledger).values()] == [("globex", "globex")]


def test_nested_spans_of_one_call_in_two_requests_of_one_commit(ledgers: Any) -> None:
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    outer = pipeline.prepare([span(1, 1, chat(**{"customer.id": "acme"}), end=10)])
    inner = pipeline.prepare([span(1, 2, chat(**{"customer.id": "acme"}), parent=1)])
    result = pipeline.commit(Prepared.merge([outer, inner]))
    assert result.billed == 1 and result.not_billable == {"duplicate_call": 1}
    assert list(stored(ledger)) == [(f"{1:032x}", f"{2:016x}")]  # the inner one, whatever the order


def test_isolate_refuses_only_the_span_the_ledger_cannot_store(ledgers: Any) -> None:
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    spans = [span(1, i, chat(**{"customer.id": "acme"}), scope="app") for i in range(1, 8)]
    # not storable text (and other counts: an equal call by another scope would be the same call)
    spans[4] = span(
        1, 5, chat(**{"customer.id": "acme", "gen_ai.usage.output_tokens": 99}), scope="app\udc80"
    )
    with pytest.raises(ValueError):
        pipeline.ingest(spans)
    refused = isolate(pipeline.ingest, spans)
    assert [r.span.span_id for r in refused] == [f"{5:016x}"]
    assert isinstance(refused[0].error, ValueError)
    assert len(stored(ledger)) == 6


def test_isolate_raises_a_failure_that_is_not_the_data(ledgers: Any) -> None:
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        isolate(pipeline.ingest, [span(1, 1, chat()), span(1, 2, chat())])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("  gpt-4o ", "gpt-4o"),
        ("gpt\udc80", "fallback"),
        ("\ud800", "fallback"),
        ("é", "é"),
    ],
)
def test_first_str_reads_text_that_is_not_unicode_as_absent(value: str, expected: str) -> None:
    assert first_str({"a": value, "b": "fallback"}, ("a", "b")) == expected


def test_sweep_forgets_trace_customers_after_their_retention(ledgers: Any) -> None:
    """Within the retention a trace's customer attributes its later usage; once the sweep has
    run past it, the ledger no longer knows the trace, and later usage that reaches another
    pipeline (another process, or after a restart; a pipeline's own cache of recent traces is
    bounded by size, not time) waits as pending."""
    ledger = ledgers()
    pipeline = Pipeline(ledger, CONFIG)
    pipeline.ingest([span(1, 1, {"customer.id": "acme"}), span(2, 1, {"customer.id": "globex"})])
    retention = CONFIG.attribution.trace_customer_retention_seconds * 1_000_000_000
    now = time.time_ns()
    assert pipeline.sweep(now) == 0
    pipeline.ingest([span(1, 2, chat())])
    assert stored(ledger)[f"{1:032x}", f"{2:016x}"][0] == "acme"
    pipeline.sweep(now + retention + 60 * 1_000_000_000)
    assert ledger.trace_customers([f"{1:032x}", f"{2:016x}"]) == {}
    Pipeline(ledger, CONFIG).ingest([span(2, 2, chat())])
    assert stored(ledger)[f"{2:032x}", f"{2:016x}"][0] is None  # pending: the customer was forgotten


def test_trace_customer_retention_cannot_be_shorter_than_the_grace() -> None:
    with pytest.raises(ValueError, match="at least pending_grace_seconds"):
        Config.model_validate(
            {"attribution": {"pending_grace_seconds": 900, "trace_customer_retention_seconds": 600}}
        )
    config = Config.model_validate({"attribution": {"trace_customer_retention_seconds": 900}})
    assert config.attribution.trace_customer_retention_seconds == 900
    # not set: the default (an hour) follows a longer grace instead of refusing it
    assert Config().attribution.trace_customer_retention_seconds == 3_600
    longer = Config.model_validate({"attribution": {"pending_grace_seconds": 7_200}})
    assert longer.attribution.trace_customer_retention_seconds == 7_200
