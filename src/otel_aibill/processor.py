"""In-process billing: a span processor, and a span exporter for ``opentelemetry-instrument``.

``on_end`` runs on the host application's thread, so it only does a set test and a deque
append; conversion, extraction, pricing and the ledger write happen on a worker thread.
Nothing here raises into the host: failures are counted and logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from opentelemetry import baggage, context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Span, get_tracer_provider

from otel_aibill.config import Config, load_config
from otel_aibill.errors import is_data_error
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import Ledger
from otel_aibill.pipeline import IngestResult, PeriodicSweep, Pipeline, ingest_isolating
from otel_aibill.usage import Attributes, SpanView
from otel_aibill.watch.catalog_store import stored_pricer

logger = logging.getLogger(__name__)

# A span is worth the worker's time only if it carries one of these: GenAI/LLM markers of every
# convention we read, or a customer key (root spans name the customer of their trace).
_MARKERS = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.system",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.request.type",
        "llm.model_name",
        "llm.token_count.prompt",
        "llm.token_count.completion",
        "openinference.span.kind",
        "embedding.model_name",
        "llm.openai.usage",  # LiteLLM's raw_gen_ai_request spans
        "llm.anthropic.usage",
    }
)


def _config(config: Config | str | os.PathLike[str] | None, db: str | None) -> Config:
    """A ``Config``, a TOML file's path, or None (``OTEL_AIBILL_CONFIG`` / defaults); ``db`` wins."""
    if isinstance(config, Config):
        return config.model_copy(update={"db": db}) if db else config
    return load_config(config, db=db)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def span_view(span: ReadableSpan) -> SpanView:
    """SDK span → the pipeline's neutral span."""
    ctx = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    return SpanView(
        trace_id=_hex(ctx.trace_id, 32) if ctx else "",
        span_id=_hex(ctx.span_id, 16) if ctx else "",
        name=span.name,
        start_time_ns=span.start_time or 0,
        end_time_ns=span.end_time or 0,
        attributes=cast(Attributes, dict(span.attributes or {})),
        resource=cast(Attributes, span.resource.attributes) if span.resource else {},
        scope_name=scope.name if scope else "",
        scope_version=scope.version if scope else None,
        parent_span_id=_hex(parent.span_id, 16) if parent else None,
    )


def _baggage_value(value: object) -> str | None:
    """The entry's value without W3C properties (``acme;ttl=5``): the Python SDK keeps them in it.

    A ``;`` that was percent-encoded on the wire is indistinguishable after the SDK decodes it, so
    such ids are cut there too; customer ids do not contain ``;`` in practice, properties do.
    """
    if not isinstance(value, str):
        return None
    value = value.split(";", 1)[0].strip()
    return value or None


class BaggageToAttributes(SpanProcessor):
    """Copies configured baggage entries onto each span at start.

    A customer set once in baggage at the request's entry (and propagated across services by the
    W3C ``baggage`` header) thereby reaches every LLM span below it. An attribute the span was
    started with is more specific than inherited baggage and is kept.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(keys)

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        try:
            entries = baggage.get_all(parent_context)
            if not entries:
                return
            existing = getattr(span, "attributes", None) or {}
            for key in self._keys:
                value = _baggage_value(entries.get(key))
                if value is not None and key not in existing:
                    span.set_attribute(key, value)
        except Exception:  # never into the host
            logger.debug("baggage copy failed", exc_info=True)


class BillingSpanProcessor(SpanProcessor):
    """Bills the GenAI spans of this process into the ledger.

    Bounded queue: with ``on_full="drop"`` (default) a full queue drops the span and counts it
    in ``dropped``; with ``"block"`` the host thread waits for room.
    """

    def __init__(
        self,
        db: str | None = None,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        ledger: Ledger | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.config = _config(config, db)
        self._db = db or self.config.db
        if pipeline is None:
            self._owns_ledger = ledger is None
            pricer = None
            if ledger is None:
                ledger = open_ledger(self._db)
                pricer = stored_pricer(self._db, self.config, fall_back=True)
            pipeline = Pipeline(ledger, self.config, pricer=pricer)
        else:
            self._owns_ledger = False
        self.pipeline = pipeline
        pc = self.config.processor
        self._max = pc.queue_size
        self._block = pc.on_full == "block"
        self._batch = pc.batch_size
        self._interval = pc.flush_interval_ms / 1000
        self._baggage = BaggageToAttributes(self.config.attribution.baggage_keys)
        self._markers = _MARKERS | frozenset(self.config.attribution.keys)
        self._shutdown = False
        self.dropped = 0
        self.failed = 0
        self.errors = 0
        self._start_worker()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._at_fork_reinit)

            def reinit() -> None:
                method = weak_reinit()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=reinit)

    def _start_worker(self) -> None:
        self._queue: deque[ReadableSpan] = deque()
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._done = 0  # spans taken off the queue and handled (or given up on)
        self._enqueued = 0
        self._worker = threading.Thread(target=self._run, name="otel-aibill-processor", daemon=True)
        self._worker.start()

    def _at_fork_reinit(self) -> None:
        """In a forked child (pre-fork servers): a new worker, and a ledger connection of its own.

        The parent's worker thread does not exist in the child and SQLite connections must not
        cross a fork, so without this the child's spans would wait in the queue forever. Its
        queued spans are the parent's to write. A ledger or pipeline passed in by the caller is
        the caller's to reopen.
        """
        if self._shutdown:
            return
        if self._owns_ledger:
            try:
                self.pipeline = Pipeline(open_ledger(self._db), self.config, pricer=self.pipeline.pricer)
            except Exception:
                logger.exception("otel-aibill: cannot reopen the ledger in a forked process")
        self._start_worker()

    # -- host thread ---------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        self._baggage.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            attrs = span._attributes  # the public property wraps a copy in a proxy
            raw = getattr(attrs, "_dict", attrs)
            if not raw or self._markers.isdisjoint(raw):
                return
            if self._shutdown:
                self.dropped += 1  # nobody will write it any more: counted, not silently lost
                return
            queue = self._queue
            if len(queue) >= self._max:
                if not self._block:
                    self.dropped += 1
                    return
                with self._cond:
                    while len(queue) >= self._max and not self._shutdown:
                        self._cond.wait(0.1)
            queue.append(span)
            self._enqueued += 1
            if len(queue) >= self._batch and not self._wake.is_set():
                self._wake.set()  # Event.set takes a lock: only when the worker is not already woken
        except Exception:
            self.errors += 1

    # -- worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        sweeps = PeriodicSweep(self.config.processor.sweep_interval_seconds)
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
            if self._shutdown and not self._queue:
                return
            sweeps.when_due(self.pipeline.sweep)

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[ReadableSpan] = []
            while queue and len(batch) < self._batch:
                batch.append(queue.popleft())
            if self._block:
                with self._cond:
                    self._cond.notify_all()
            self._ingest(batch)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _ingest(self, batch: list[ReadableSpan]) -> IngestResult | None:
        views = []
        for span in batch:
            try:
                views.append(span_view(span))
            except Exception:
                self.errors += 1
        if not views:
            return None
        delay = 0.05
        for _attempt in range(8):  # a locked or briefly failing ledger is retried, not dropped
            try:
                return self.pipeline.ingest(views)
            except Exception as exc:
                logger.exception("otel-aibill: ledger write failed; retrying")
                if is_data_error(exc):
                    break  # the same data fails the same way: find the spans that cause it
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        lost = ingest_isolating(self.pipeline, views)
        self.failed += lost
        if lost:
            logger.error("otel-aibill: gave up on %d of %d spans after repeated failures", lost, len(views))
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        target = self._enqueued
        self._wake.set()
        with self._cond:
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.set()
                self._cond.wait(min(remaining, 0.05))
        return True

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self.force_flush()
        self._shutdown = True
        self._wake.set()
        self._worker.join(timeout=30)
        try:
            self.pipeline.sweep()
        except Exception:
            logger.exception("otel-aibill: pending sweep failed at shutdown")
        if self._owns_ledger:
            self.pipeline.ledger.close()


class BillingSpanExporter(SpanExporter):
    """``OTEL_TRACES_EXPORTER=aibill``: bill an unmodified app run under ``opentelemetry-instrument``.

    The SDK wraps exporters in a BatchSpanProcessor (its own worker thread), so ``export`` writes
    synchronously. Exporters cannot see span starts, so on construction this also registers a
    baggage-copying processor on the global provider, which the SDK has already installed.
    """

    def __init__(
        self, db: str | None = None, config: Config | str | os.PathLike[str] | None = None, **_: Any
    ) -> None:
        self.config = _config(config, db)
        self._ledger = open_ledger(db or self.config.db)
        pricer = stored_pricer(db or self.config.db, self.config, fall_back=True)
        self.pipeline = Pipeline(self._ledger, self.config, pricer=pricer)
        self._markers = _MARKERS | frozenset(self.config.attribution.keys)
        self._closed = False
        self._sweeps = PeriodicSweep(self.config.processor.sweep_interval_seconds)
        self.failed = 0
        provider = get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.add_span_processor(BaggageToAttributes(self.config.attribution.baggage_keys))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        views: list[SpanView] = []
        try:
            markers = self._markers
            views = [span_view(s) for s in spans if s.attributes and not markers.isdisjoint(s.attributes)]
            if views:
                self.pipeline.ingest(views)
            self._sweeps.when_due(self.pipeline.sweep)
            return SpanExportResult.SUCCESS
        except Exception:
            logger.exception("otel-aibill: export failed; storing the batch in parts")
        try:
            lost = ingest_isolating(self.pipeline, views)
            self.failed += lost
            return SpanExportResult.FAILURE if lost else SpanExportResult.SUCCESS
        except Exception:
            logger.exception("otel-aibill: export failed")
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.pipeline.sweep()
        except Exception:
            logger.exception("otel-aibill: pending sweep failed at shutdown")
        finally:
            self._ledger.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
