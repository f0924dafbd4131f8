"""extract → attribute → price → ledger, for a batch of spans from any source.

One ``Pipeline`` serves one writer (the processor's worker thread, or the receiver's
committer). ``ingest`` returns only after the ledger transaction holding the batch has
committed, which is what lets the receiver acknowledge after commit.

Trace-level attribution: LLM spans usually end before the request's root span that names the
customer, so usage without a customer is stored as *pending*, and attributed (and marked up)
as soon as any span of its trace names the customer — in this batch, a later one, or one
another process wrote. Pending usage older than the grace period is kept as "unattributed".
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from otel_aibill.attribution import customer_of
from otel_aibill.config import Config
from otel_aibill.ledger.base import AppendBatch, Attribution, Ledger, LedgerRow
from otel_aibill.nesting import NestedCalls
from otel_aibill.pricing import Pricer
from otel_aibill.semconv import extract
from otel_aibill.usage import UNATTRIBUTED, NotBillable, PricedUsage, PriceStatus, SpanView, UsageRecord

_TRACE_CACHE_SIZE = 65_536


@dataclass(slots=True)
class IngestResult:
    """What one ``ingest`` did; ``billed`` counts rows newly stored (pending ones included)."""

    received: int = 0
    billed: int = 0
    duplicates: int = 0
    unpriced: int = 0
    pending: int = 0
    attributed_later: int = 0
    not_billable: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestResult) -> None:
        self.received += other.received
        self.billed += other.billed
        self.duplicates += other.duplicates
        self.unpriced += other.unpriced
        self.pending += other.pending
        self.attributed_later += other.attributed_later
        for reason, count in other.not_billable.items():
            self.not_billable[reason] = self.not_billable.get(reason, 0) + count


class _LRU:
    """A bounded trace → customer map; the ledger stays the durable truth."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        if key in self._data:
            return  # first customer named in a trace wins, as in the ledger
        self._data[key] = value
        if len(self._data) > self._size:
            self._data.popitem(last=False)


class Pipeline:
    def __init__(self, ledger: Ledger, config: Config | None = None, pricer: Pricer | None = None) -> None:
        self.config = config or Config()
        self.ledger = ledger
        self.pricer = pricer or Pricer(self.config.pricing)
        self.totals = IngestResult()
        self._keys = tuple(self.config.attribution.keys)
        self._trace_customers = _LRU(_TRACE_CACHE_SIZE)
        self._nested = NestedCalls(_TRACE_CACHE_SIZE)
        for customer_id, stripe_id in self.config.customers.items():
            ledger.set_customer(customer_id, stripe_id)

    def ingest(self, spans: Sequence[SpanView]) -> IngestResult:
        result = IngestResult(received=len(spans))
        not_billable: Counter[str] = Counter()
        trace_customers: dict[str, str] = {}
        usages: list[UsageRecord] = []
        keys = self._keys
        for span in spans:
            customer = customer_of(span.attributes, span.resource, keys)
            if customer is not None and span.trace_id not in trace_customers:
                trace_customers[span.trace_id] = customer
            extracted = extract(span, customer)
            if isinstance(extracted, NotBillable):
                not_billable[extracted.reason.value] += 1
            else:
                usages.append(extracted)

        usages = self._nested.drop_nested(usages, not_billable)
        rows: list[PricedUsage] = []
        pending_traces: set[str] = set()
        for usage in usages:
            if usage.customer is None:
                # Named by another span of the trace: in this batch, or recently.
                trace_id = usage.trace_id
                customer = trace_customers.get(trace_id) or self._trace_customers.get(trace_id)
                if customer is not None:
                    usage = replace(usage, customer=customer)
                else:
                    pending_traces.add(trace_id)
            priced = self.pricer.price(usage)
            if priced.status is PriceStatus.UNPRICED:
                result.unpriced += 1
            rows.append(priced)

        appended = self.ledger.append(
            AppendBatch(rows=rows, trace_customers=trace_customers, not_billable=dict(not_billable))
        )
        for trace_id, customer in trace_customers.items():
            self._trace_customers.put(trace_id, customer)

        result.billed = appended.inserted
        result.duplicates = appended.duplicate_spans
        if appended.duplicate_responses:
            not_billable["duplicate_response"] += appended.duplicate_responses
        if appended.duplicate_spans:
            not_billable["duplicate_span"] += appended.duplicate_spans
        result.not_billable = dict(not_billable)

        # Pending rows whose trace customer is known now: named in this batch, or stored earlier
        # (perhaps by another process). A trace customer the ledger just took is the one this
        # batch named, so only traces with pending usage need asking the ledger.
        known: dict[str, str] = {}
        ask = set(pending_traces)
        for trace_id in appended.new_trace_customers:
            named = trace_customers.get(trace_id)
            if named is None:
                ask.add(trace_id)
            else:
                known[trace_id] = named
        ask.difference_update(known)
        if ask:
            known.update(self.ledger.trace_customers(ask))
        if known:
            result.attributed_later = self._attribute(self.ledger.pending_attribution(known), known)
        result.pending = sum(1 for r in rows if r.usage.customer is None and r.usage.trace_id not in known)
        self.totals.add(result)
        return result

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
        """Keep usage that waited past the grace period under the "unattributed" customer."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        cutoff = now_ns - self.config.attribution.pending_grace_seconds * 1_000_000_000
        total = 0
        while True:
            pending = self.ledger.pending_attribution(started_before_ns=cutoff, limit=5_000)
            if not pending:
                return total
            known = self.ledger.trace_customers({row.priced.usage.trace_id for row in pending})
            customers = {row.priced.usage.trace_id: known.get(row.priced.usage.trace_id, UNATTRIBUTED)
                         for row in pending}
            done = self._attribute(pending, customers)
            total += done
            if done == 0:
                return total
