"""extract → attribute → price → ledger, for a batch of spans from any source.

The work is split in two so that a multi-threaded receiver keeps its single writer busy only with
what needs the ledger:

* ``prepare(spans)`` is pure and thread-safe: customer ids, extraction and pricing (cost, and
  the billed amount where the customer is already known). Many threads may run it at once.
* ``commit(prepared)`` is the single writer: the same-call rule (``samecall.py``: it needs every
  usage in end-time order and the recent calls of each trace), the trace-level customer lookups,
  the ledger append and later attribution.
  It returns only after the ledger transaction holding the spans has committed, which is what
  lets the receiver acknowledge after commit.

``ingest(spans)`` is ``commit(prepare(spans))``, for the processor and replay.

Trace-level attribution: LLM spans usually end before the request's root span that names the
customer, so usage without a customer is stored as *pending*, and attributed (and marked up)
as soon as any span of its trace names the customer — in this batch, a later one, or one
another process wrote. The first customer stored for a trace wins: a later batch naming another
one does not move that trace's usage. Pending usage older than the grace period is kept as
"unattributed".
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, not_

from otel_aibill.attribution import customer_of
from otel_aibill.config import Config
from otel_aibill.errors import is_data_error
from otel_aibill.ledger.base import AppendBatch, Attribution, Ledger, LedgerRow
from otel_aibill.pricing import Pricer
from otel_aibill.records import replacer
from otel_aibill.reported_cost import check as check_reported_costs
from otel_aibill.samecall import SameCalls
from otel_aibill.semconv import extract
from otel_aibill.usage import (
    UNATTRIBUTED,
    NotBillable,
    NotBillableReason,
    PricedUsage,
    PriceStatus,
    SpanView,
    UsageRecord,
)

log = logging.getLogger(__name__)

_TRACE_CACHE_SIZE = 65_536
_UNPRICED = PriceStatus.UNPRICED
_status = attrgetter("status")
_with_customer = replacer(UsageRecord, "customer")


@dataclass(slots=True)
class IngestResult:
    """What one ``ingest`` did; ``billed`` counts rows newly stored (pending ones included)."""

    received: int = 0
    billed: int = 0
    duplicates: int = 0
    unpriced: int = 0
    pending: int = 0
    attributed_later: int = 0
    superseded: int = 0  # stored bills replaced by a richer record of the same call
    not_billable: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestResult) -> None:
        self.received += other.received
        self.billed += other.billed
        self.duplicates += other.duplicates
        self.unpriced += other.unpriced
        self.pending += other.pending
        self.attributed_later += other.attributed_later
        self.superseded += other.superseded
        for reason, count in other.not_billable.items():
            self.not_billable[reason] = self.not_billable.get(reason, 0) + count


@dataclass(slots=True)
class Prepared:
    """Spans extracted and priced, waiting for ``Pipeline.commit``.

    ``rows[i]`` is ``usages[i]`` priced. ``settled[i]`` is False when that row's customer is not
    final yet: none is known, or it is the one these spans name for the trace, which a customer
    already stored for the trace overrides at commit.
    """

    spans: Sequence[SpanView]
    usages: list[UsageRecord]
    rows: list[PricedUsage]
    settled: list[bool]
    trace_customers: dict[str, str]
    not_billable: Counter[str]

    @staticmethod
    def merge(parts: Sequence[Prepared]) -> Prepared:
        """Several prepared batches as one, for one commit; the first name of a trace wins."""
        if len(parts) == 1:
            return parts[0]
        spans: list[SpanView] = []
        usages: list[UsageRecord] = []
        rows: list[PricedUsage] = []
        settled: list[bool] = []
        names: dict[str, str] = {}
        counts: Counter[str] = Counter()
        for p in parts:
            spans += p.spans
            usages += p.usages
            rows += p.rows
            settled += p.settled
            for trace_id, customer in p.trace_customers.items():
                names.setdefault(trace_id, customer)
            counts.update(p.not_billable)
        return Prepared(spans, usages, rows, settled, names, counts)


class _LRU:
    """A bounded trace → customer map holding only customers the ledger has stored for a trace.

    Written by the committing thread only; ``peek`` (no reordering) is safe from other threads
    under the GIL, and a value once present never changes, since the first stored customer wins.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, str] = OrderedDict()

    def peek(self, key: str) -> str | None:
        return self._data.get(key)

    def get(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        if key in self._data:
            return
        self._data[key] = value
        if len(self._data) > self._size:
            self._data.popitem(last=False)

    def put_all(self, items: Iterable[tuple[str, str]]) -> None:
        """``put`` of each item in turn, in one call."""
        data, size = self._data, self._size
        for key, value in items:
            if key in data:
                continue
            data[key] = value
            if len(data) > size:
                data.popitem(last=False)


class Pipeline:
    def __init__(self, ledger: Ledger, config: Config | None = None, pricer: Pricer | None = None) -> None:
        self.config = config or Config()
        self.ledger = ledger
        self.pricer = pricer or Pricer(self.config.pricing)
        self.totals = IngestResult()
        self._keys = tuple(self.config.attribution.keys)
        self._trace_customers = _LRU(_TRACE_CACHE_SIZE)
        self._calls = SameCalls(_TRACE_CACHE_SIZE)
        for customer_id, stripe_id in self.config.customers.items():
            ledger.set_customer(customer_id, stripe_id)

    def ingest(self, spans: Sequence[SpanView]) -> IngestResult:
        return self.commit(self.prepare(spans))

    # -- pure part: any thread ----------------------------------------------------------------

    def prepare(self, spans: Sequence[SpanView]) -> Prepared:
        """Extract and price ``spans``; touches no ledger and no per-pipeline state but caches."""
        reasons: Counter[NotBillableReason] = Counter()
        names: dict[str, str] = {}
        usages: list[UsageRecord] = []
        keys = self._keys
        for span in spans:
            customer = customer_of(span.attributes, span.resource, keys)
            if customer is not None and span.trace_id not in names:
                names[span.trace_id] = customer
            extracted = extract(span, customer)
            if isinstance(extracted, NotBillable):
                reasons[extracted.reason] += 1  # by member: ``.value`` is a slow property, read per reason
            else:
                usages.append(extracted)
        not_billable = Counter({reason.value: count for reason, count in reasons.items()})

        # Usage naming its customer is priced and final; the rest waits for every name in the batch.
        price = self.pricer.price
        rows = [price(usage) for usage in usages if usage.customer is not None]
        if len(rows) == len(usages):
            check_reported_costs(rows)
            return Prepared(spans, usages, rows, [True] * len(rows), names, not_billable)
        stored = self._trace_customers.peek
        final_rows = iter(rows)
        rows = []
        settled: list[bool] = []
        for usage in usages:
            if usage.customer is not None:
                rows.append(next(final_rows))
                settled.append(True)
                continue
            trace_id = usage.trace_id
            customer = stored(trace_id)
            final = customer is not None
            if customer is None:
                customer = names.get(trace_id)  # tentative: a stored customer wins at commit
            rows.append(price(usage if customer is None else _with_customer(usage, customer)))
            settled.append(final)
        check_reported_costs(rows)
        return Prepared(spans, usages, rows, settled, names, not_billable)

    # -- stateful part: the single writer ------------------------------------------------------

    def commit(self, prepared: Prepared) -> IngestResult:
        """Apply the same-call rule and trace customers, append to the ledger, attribute pending."""
        result = IngestResult(received=len(prepared.spans))
        not_billable = Counter(prepared.not_billable)
        names = prepared.trace_customers
        usages, settled, priced = prepared.usages, prepared.settled, prepared.rows
        decision = self._calls.decide(usages, not_billable)
        order = decision.kept
        rows = [priced[i] for i in order]
        if decision.merged:
            settled = list(settled)
            for pos, i in enumerate(order):
                merged = decision.merged.get(i)
                if merged is not None:
                    rows[pos], settled[i] = self._priced_merge(merged, rows[pos], settled[i])
        result.unpriced = list(map(_status, rows)).count(_UNPRICED)

        cache = self._trace_customers
        # Positions (in ``rows``) of the rows whose customer is not final yet: usually none.
        open_rows = list(compress(range(len(order)), map(not_, [settled[i] for i in order])))
        stored: dict[str, str] = {}
        pending_traces: set[str] = set()
        if open_rows:
            # The customer stored first for a trace wins over the one these spans name.
            ask = {
                trace_id
                for pos in open_rows
                if (trace_id := rows[pos].usage.trace_id) in names and cache.get(trace_id) is None
            }
            stored = self.ledger.trace_customers(ask) if ask else {}
            for trace_id, first in stored.items():
                cache.put(trace_id, first)
            for pos in open_rows:
                row = rows[pos]
                trace_id = row.usage.trace_id
                customer = stored.get(trace_id) or cache.get(trace_id) or names.get(trace_id)
                if customer is None:
                    pending_traces.add(trace_id)
                elif customer != row.usage.customer:
                    rows[pos] = self.pricer.bill(row, customer)

        superseded = [self._priced_supersede(merged, names) for merged in decision.superseded]
        try:
            appended = self.ledger.append(
                AppendBatch(
                    rows=rows, trace_customers=names, not_billable=dict(not_billable), superseded=superseded
                )
            )
        except BaseException:
            self._calls.forget()  # not stored: a retry of these spans is decided afresh
            raise
        result.superseded = appended.superseded
        if appended.superseded_other_customer:  # attributed meanwhile: bill for that customer
            again = [self.pricer.bill(row, customer) for row, customer in appended.superseded_other_customer]
            result.superseded += self.ledger.append(AppendBatch(superseded=again)).superseded
        if appended.superseded_exported:
            log.warning(
                "otel-aibill: %d calls were exported before a richer span of theirs arrived; their"
                " bills stay as exported",
                appended.superseded_exported,
            )
        result.billed = appended.inserted
        result.duplicates = appended.duplicate_spans
        if appended.duplicate_responses:
            not_billable["duplicate_response"] += appended.duplicate_responses
        if appended.duplicate_spans:
            not_billable["duplicate_span"] += appended.duplicate_spans
        result.not_billable = dict(not_billable)

        # Pending rows whose trace customer is known now: the ledger just took this batch's name
        # for the trace, or one was stored earlier (perhaps by another process).
        known = {
            trace_id: named
            for trace_id in appended.new_trace_customers
            if (named := names.get(trace_id)) is not None
        }
        cache.put_all(known.items())
        ask = pending_traces - known.keys()
        if ask:
            known.update(self.ledger.trace_customers(ask))
        if known:
            result.attributed_later = self._attribute(self.ledger.pending_attribution(known), known)
        # Only open rows can still lack a customer: a settled one was priced with its customer.
        result.pending = sum(
            1
            for pos in open_rows
            if (usage := rows[pos].usage).customer is None and usage.trace_id not in known
        )
        self.totals.add(result)
        return result

    def _priced_merge(self, merged: UsageRecord, row: PricedUsage, settled: bool) -> tuple[PricedUsage, bool]:
        """The merged record of a call priced, and whether its customer is final: its own (some span
        of the call named it) or, like the billed span's row, the one the trace names."""
        if merged.customer is not None:
            return self.pricer.price(merged), True
        customer = row.usage.customer
        return self.pricer.price(merged if customer is None else _with_customer(merged, customer)), settled

    def _priced_supersede(self, merged: UsageRecord, names: dict[str, str]) -> PricedUsage:
        """The merged record of a call stored earlier, priced for the customer its row has: its
        own, else its trace's (stored, or named now)."""
        if merged.customer is None:
            trace_id = merged.trace_id
            customer = self._trace_customers.get(trace_id) or names.get(trace_id)
            if customer is not None:
                merged = _with_customer(merged, customer)
        return self.pricer.price(merged)

    def _attribute(self, pending: Sequence[LedgerRow], customers: dict[str, str]) -> int:
        updates = []
        for row in pending:
            customer = customers.get(row.priced.usage.trace_id)
            if customer is None:
                continue
            billed = self.pricer.bill(row.priced, customer)
            usage = row.priced.usage
            updates.append(
                Attribution(usage.trace_id, usage.span_id, customer, billed.billed, billed.markup_rule)
            )
        return self.ledger.set_attribution(updates) if updates else 0

    def sweep(self, now_ns: int | None = None) -> int:
        """Keep usage that waited past the grace period under the "unattributed" customer (returns
        how many rows), then forget trace customers older than their retention."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        attribution = self.config.attribution
        cutoff = now_ns - attribution.pending_grace_seconds * 1_000_000_000
        total = 0
        while True:
            pending = self.ledger.pending_attribution(started_before_ns=cutoff, limit=5_000)
            if not pending:
                break
            known = self.ledger.trace_customers({row.priced.usage.trace_id for row in pending})
            customers = {
                row.priced.usage.trace_id: known.get(row.priced.usage.trace_id, UNATTRIBUTED)
                for row in pending
            }
            done = self._attribute(pending, customers)
            total += done
            if done == 0:
                break
        self.ledger.expire_trace_customers(
            now_ns - attribution.trace_customer_retention_seconds * 1_000_000_000
        )
        return total


class PeriodicSweep:
    """A sweep (``Pipeline.sweep``) at most every ``interval`` seconds, on the caller's thread, for
    the loops that ingest: a long-running host or receiver never shuts down, and its pending usage
    must still become "unattributed" after the grace and its old trace customers be forgotten. A
    failed sweep is logged; the next one is due an interval later."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last = time.monotonic()

    def when_due(self, sweep: Callable[[int], object]) -> None:
        if time.monotonic() - self._last < self._interval:
            return
        self._last = time.monotonic()
        try:
            sweep(time.time_ns())
        except Exception:
            log.exception("otel-aibill: sweeping pending attribution failed")


# -- failure isolation -------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Refused:
    """A span that could not be stored, and why."""

    span: SpanView
    error: Exception

    def describe(self) -> str:
        span, error = self.span, self.error
        return f"span {span.span_id} of trace {span.trace_id}: {type(error).__name__}: {error}"


def isolate(
    ingest: Callable[[Sequence[SpanView]], object],
    spans: Sequence[SpanView],
    refusable: Callable[[Exception], bool] = is_data_error,
) -> list[Refused]:
    """Ingest ``spans``, in halves recursively when that fails, so a span that cannot be stored
    fails alone instead of taking every other span of its transaction with it.

    A failure for which ``refusable`` is false (the ledger is down, not the data) is raised.
    Returns the spans refused one by one.
    """
    if not spans:
        return []
    try:
        ingest(spans)
        return []
    except Exception as exc:
        if not refusable(exc):
            raise
        if len(spans) == 1:
            return [Refused(spans[0], exc)]
    mid = len(spans) // 2
    return isolate(ingest, spans[:mid], refusable) + isolate(ingest, spans[mid:], refusable)


def ingest_isolating(pipeline: Pipeline, views: Sequence[SpanView]) -> int:
    """``isolate`` for the in-process path, where any failure that outlived retries is the span's;
    returns how many spans could not be stored (each one is logged)."""
    refused = isolate(pipeline.ingest, views, lambda _exc: True)
    for r in refused:
        log.error("otel-aibill: cannot store %s", r.describe(), exc_info=r.error)
    return len(refused)
