"""Group commit: one writer thread turns many concurrent requests into few ledger transactions.

Requests arrive *prepared* (extracted and priced on their handler threads, see
``Pipeline.prepare``), so the writer thread only does what needs the ledger. Each request is
acknowledged only after the transaction holding its spans committed, yet requests do not wait
for each other's transactions one by one: whatever queued up while the previous commit ran is
committed together and all of those requests complete at once. The queue is bounded in spans;
when it is full ``submit`` raises ``Overloaded`` with a retry hint, which the transports turn
into 429/503 + Retry-After and UNAVAILABLE + RetryInfo.

A span the ledger refuses for what it contains (a ``ValueError`` from its row checks) is found
by committing the request's spans in halves; it is reported back as rejected (OTLP partial
success, which clients do not retry) while the rest of the request is stored. Any other failure
fails the request with ``CommitFailed``, which clients retry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from otel_aibill.errors import is_data_error
from otel_aibill.pipeline import PeriodicSweep, Prepared, Refused, isolate
from otel_aibill.receiver.metrics import ReceiverMetrics
from otel_aibill.usage import SpanView

log = logging.getLogger(__name__)


class IngestOutcome(Protocol):
    @property
    def billed(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def unpriced(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def not_billable(self) -> Mapping[str, int]: ...


class SpanSink(Protocol):
    """What the committer writes to: ``otel_aibill.pipeline.Pipeline`` in production."""

    def prepare(self, spans: Sequence[SpanView]) -> Prepared:
        """Thread-safe; called on the request handlers' threads."""
        ...

    def commit(self, prepared: Prepared) -> IngestOutcome: ...


SinkFactory = Callable[[], tuple[SpanSink, Callable[[], None]]]
"""Called on the writer thread (SQLite connections belong to the thread that opened them);
returns the sink and a function that closes it."""


class Overloaded(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"ingest queue full, retry in {retry_after_s:g}s")
        self.retry_after_s = retry_after_s


class ShuttingDown(Exception):
    pass


class CommitFailed(Exception):
    """The ledger transaction failed; nothing of the request was acknowledged."""


@dataclass(slots=True, frozen=True)
class Committed:
    """A request's spans are stored, except ``refused`` ones the ledger would never take."""

    refused: tuple[Refused, ...] = ()


_Item = tuple[Prepared, "Future[Committed]"]
_OK = Committed()


class GroupCommitter:
    def __init__(
        self,
        sink_factory: SinkFactory,
        metrics: ReceiverMetrics,
        *,
        max_pending_spans: int = 65_536,
        max_batch_spans: int = 8_192,
        retry_after_s: float = 1.0,
        sweep_interval_s: float = 60.0,
        commit_delay_s: float = 0.0,
    ) -> None:
        self._factory = sink_factory
        self._metrics = metrics
        self._max_pending = max_pending_spans
        self._max_batch = max_batch_spans
        self._retry_after = retry_after_s
        self._sweep_interval = sweep_interval_s
        self._commit_delay = commit_delay_s  # testing hook: a slow ledger
        self._queue: deque[_Item] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="otel-aibill-committer", daemon=True)
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._rate = 0.0  # recent commit throughput, spans/s (moving average)
        self._sink: SpanSink | None = None
        self._failed_at: float | None = None  # monotonic time of a failed commit, None once one succeeds

    READY_AFTER_FAILURE_S = 30.0
    """How long a failed commit, with no successful one since, makes the receiver not ready.
    Bounded, so that an instance a load balancer stopped sending to is tried again."""

    def not_ready(self) -> str | None:
        """Why the receiver should not be sent spans now, or None: the last commit failed (the
        ledger refused a write: full disk, read-only file, database down), or the queue is full
        (the committer is not keeping up)."""
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < self.READY_AFTER_FAILURE_S:
            return "the last ledger commit failed"
        if self._pending >= self._max_pending:
            return "the commit queue is full"
        return None

    @property
    def pending_spans(self) -> int:
        return self._pending

    def start(self) -> None:
        """Start the writer thread; raises what opening the sink raised."""
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def prepare(self, spans: Sequence[SpanView]) -> Prepared:
        """The sink's pure part, on the caller's thread (``start`` must have returned)."""
        if self._sink is None:
            raise ShuttingDown
        return self._sink.prepare(spans)

    def submit(self, prepared: Prepared) -> Future[Committed]:
        """Queue prepared spans for the next commit; the future completes once they are committed."""
        future: Future[Committed] = Future()
        n = len(prepared.spans)
        if not n:
            future.set_result(_OK)
            return future
        with self._cond:
            if self._closing:
                raise ShuttingDown
            # a request larger than the whole queue is still taken when the queue is empty
            if self._pending and self._pending + n > self._max_pending:
                self._metrics.overloaded.inc()
                raise Overloaded(self._retry_hint())
            self._pending += n
            self._queue.append((prepared, future))
            self._metrics.queue_depth.set(self._pending)
            self._cond.notify()
        return future

    def _retry_hint(self) -> float:
        """Roughly the time to drain the queue at the recent commit rate, jittered so that
        refused clients do not all come back at the same instant."""
        drain = self._pending / self._rate if self._rate > 0 else self._retry_after
        return min(max(self._retry_after, drain), 30.0) * random.uniform(1.0, 1.5)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, commit everything queued, stop the writer and close the sink."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait(self._sweep_interval)
                if not self._queue and not self._closing:
                    return []  # idle: time for a sweep
            if not self._queue:
                return None
            items = [self._queue.popleft()]
            size = len(items[0][0].spans)
            while self._queue and size + len(self._queue[0][0].spans) <= self._max_batch:
                item = self._queue.popleft()
                size += len(item[0].spans)
                items.append(item)
            return items

    def _run(self) -> None:
        try:
            sink, close_sink = self._factory()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._sink = sink
        self._ready.set()
        sweeps = PeriodicSweep(self._sweep_interval)
        sweep = getattr(sink, "sweep", None)  # a sink that keeps nothing pending has none
        try:
            while True:
                items = self._take()
                if items is None:
                    return
                if items:
                    self._commit(sink, items)
                if sweep is not None:
                    sweeps.when_due(sweep)
        finally:
            try:
                close_sink()
            except Exception:
                log.exception("closing the ledger failed")

    def _commit(self, sink: SpanSink, items: list[_Item]) -> None:
        try:
            self._ingest(sink, Prepared.merge([prepared for prepared, _ in items]))
        except Exception as exc:
            if len(items) > 1:
                # one bad request must not fail the others it was grouped with
                for item in items:
                    self._commit(sink, [item])
                return
            if is_data_error(exc):
                self._isolate(sink, items)
                return
            log.exception("ledger commit failed for %d spans", len(items[0][0].spans))
            self._done(items, CommitFailed(f"ledger commit failed: {exc}"))
            return
        self._done(items, _OK)

    def _isolate(self, sink: SpanSink, items: list[_Item]) -> None:
        """Store what can be stored of one request, span by span if need be, on this thread."""
        spans = items[0][0].spans
        try:
            refused = isolate(lambda part: self._ingest(sink, sink.prepare(part)), spans)
        except Exception as exc:
            log.exception("ledger commit failed for %d spans", len(spans))
            self._done(items, CommitFailed(f"ledger commit failed: {exc}"))
            return
        for r in refused:
            log.error("refused %s", r.describe())
        self._done(items, Committed(tuple(refused)))

    def _ingest(self, sink: SpanSink, prepared: Prepared) -> None:
        started = time.perf_counter()
        if self._commit_delay:
            time.sleep(self._commit_delay)
        result = sink.commit(prepared)
        n = len(prepared.spans)
        elapsed = time.perf_counter() - started
        rate = n / max(elapsed, 1e-6)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        self._metrics.commit_seconds.observe(elapsed)
        self._metrics.commit_spans.observe(n)
        self._metrics.record_ingest(
            billed=result.billed,
            duplicates=result.duplicates,
            unpriced=result.unpriced,
            pending=result.pending,
            not_billable=result.not_billable,
        )

    def _done(self, items: list[_Item], outcome: Committed | BaseException) -> None:
        self._failed_at = time.monotonic() if isinstance(outcome, CommitFailed) else None
        with self._cond:
            self._pending -= sum(len(prepared.spans) for prepared, _ in items)
            self._metrics.queue_depth.set(self._pending)
        for _, future in items:
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
