"""The ledger interface: the single source of truth for billed usage.

Backends (SQLite embedded default, PostgreSQL for scale-out) implement ``Ledger``.
Every write is one transaction: when a method returns, what it wrote is durable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from otel_aibill.usage import PricedUsage

GROUP_FIELDS = ("customer", "provider", "model", "operation", "day")
"""Fields ``usage_summary`` can group by."""


@dataclass(slots=True, frozen=True)
class AppendBatch:
    """What one ingest step writes, atomically.

    ``trace_customers`` maps trace ids to the customer some span of that trace named
    (first one wins, durable), so usage that arrived without a customer can be attributed later.
    ``not_billable`` counts spans that produced no usage, by reason.
    ``superseded`` are better records of calls stored earlier (another span of the same call
    brought more: ``samecall.py``), each naming the stored row by its start time, trace and span
    id: they replace that row's usage, cost and bill (see ``Ledger.append``).
    """

    rows: Sequence[PricedUsage] = ()
    trace_customers: Mapping[str, str] = field(default_factory=dict)
    not_billable: Mapping[str, int] = field(default_factory=dict)
    superseded: Sequence[PricedUsage] = ()


@dataclass(slots=True, frozen=True)
class AppendResult:
    inserted: int = 0
    duplicate_spans: int = 0  # same (trace_id, span_id) already stored: redelivery, a no-op
    duplicate_responses: int = 0  # a sibling span already billed the same response id
    new_trace_customers: tuple[str, ...] = ()  # trace ids whose customer became known now
    superseded: int = 0  # stored rows replaced by a ``superseded`` record
    superseded_exported: int = 0  # ``superseded`` records of rows already exported: left as they were
    superseded_other_customer: tuple[tuple[PricedUsage, str], ...] = ()
    """``superseded`` records of rows attributed to another customer than the record names, with
    that customer: left as they were; bill them for it and supersede again."""


@dataclass(slots=True, frozen=True)
class LedgerRow:
    seq: int  # monotonically increasing insertion number
    priced: PricedUsage
    ingested_at: datetime
    export_batch: str | None = None


@dataclass(slots=True, frozen=True)
class Attribution:
    """Set the customer (and the billed amount that depends on it) of a pending row."""

    trace_id: str
    span_id: str
    customer: str
    billed: Decimal | None
    markup_rule: str | None


@dataclass(slots=True, frozen=True)
class UsageQuery:
    customer: str | None = None
    since: datetime | None = None  # inclusive, on span start time
    until: datetime | None = None  # exclusive
    by: tuple[str, ...] = ("customer", "provider", "model")


@dataclass(slots=True, frozen=True)
class UsageSummary:
    """One group of usage. ``cost``/``billed`` sum priced rows only; ``unpriced_spans`` counts the rest."""

    key: Mapping[str, str]
    spans: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost: Decimal
    billed: Decimal
    currency: str
    unpriced_spans: int = 0
    pending_spans: int = 0


@dataclass(slots=True, frozen=True)
class Customer:
    customer_id: str
    stripe_customer_id: str | None
    name: str | None = None


class Ledger(Protocol):
    """What the pipeline, the receiver, the Stripe exporter and the CLI use of a ledger.

    Contract shared by every backend (the same test suite runs against each):

    * every write is one transaction: when a method returns, what it wrote is durable, and a
      method that raises wrote nothing;
    * data the ledger refuses raises ``InvalidRowError`` (a ``BadDataError``); a database that is
      down or failing raises ``LedgerUnavailableError`` (a ``RetryLaterError``) — retry later;
    * several writers (threads, processes, hosts on one PostgreSQL) may append, attribute and
      export at once: redelivery, sibling duplicates and "first customer wins" hold under them;
    * readers see whole transactions only.
    """

    def append(self, batch: AppendBatch) -> AppendResult:
        """Store a batch atomically; redelivered spans and sibling duplicates are counted, not billed.

        A span already stored (same start time, trace id and span id) is a no-op; a span that
        bills the same response id as a stored span of its trace starting within about an hour
        is stored as that span's duplicate (kept for audit, never summed or exported). Duplicate
        counts are also added to ``not_billable_counts``. One bad row refuses the whole batch.

        Each ``superseded`` record replaces, in the same transaction, the usage, cost, bill (and a
        pending row's customer) of the stored row of its span, if that row is billed and not yet
        exported; a row attributed to another customer is left alone and reported.
        """
        ...

    def trace_customers(self, trace_ids: Iterable[str]) -> dict[str, str]:
        """The stored customer of each of these traces that has one (the first one stored)."""
        ...

    def expire_trace_customers(self, seen_before_ns: int) -> int:
        """Forget the customers of traces first stored before ``seen_before_ns``; returns how many."""
        ...

    def pending_attribution(
        self,
        trace_ids: Iterable[str] | None = None,
        *,
        started_before_ns: int | None = None,
        limit: int = 10_000,
    ) -> list[LedgerRow]:
        """Rows whose customer is still unknown, oldest ``seq`` first, optionally only of these
        traces / started before a time; sibling duplicates are never pending."""
        ...

    def set_attribution(self, updates: Sequence[Attribution]) -> int:
        """Attribute pending rows; rows already attributed are left alone (first attribution
        wins). A billed amount applies only to a priced row. Returns the rows changed."""
        ...

    def usage_summary(self, query: UsageQuery) -> list[UsageSummary]:
        """Exact sums of billable rows per group of ``query.by`` (and currency)."""
        ...

    def rows(
        self,
        *,
        trace_id: str | None = None,
        customer: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[LedgerRow]:
        """Billable rows, most recent ``seq`` first; ``customer="(pending)"`` selects pending rows."""
        ...

    def batch_rows(self, batch_id: str) -> list[LedgerRow]:
        """The rows assigned to one export batch, in ``seq`` order (audit: meter event -> spans)."""
        ...

    def not_billable_counts(self) -> dict[str, int]:
        """Spans that produced no billable usage, by reason, over the ledger's life."""
        ...

    def set_customer(
        self, customer_id: str, stripe_customer_id: str | None, name: str | None = None
    ) -> None:
        """Create or replace a customer's Stripe id and name."""
        ...

    def customers(self) -> list[Customer]:
        """Every customer with a stored mapping, by id."""
        ...

    def exportable(self, limit: int = 10_000) -> list[LedgerRow]:
        """Attributed, priced rows not yet assigned to an export batch, in ``seq`` order."""
        ...

    def assign_export_batch(self, seqs: Sequence[int], batch_id: str) -> None:
        """Claim exportable rows for an export batch; idempotent for the same batch id. Raises
        ``ValueError`` (and changes nothing) if a row is missing, not exportable, or in another batch."""
        ...

    def wait_for_rollup(self, timeout: float | None = None) -> bool:
        """Until background summary work is done (True) or ``timeout`` passed (False). Summaries
        are exact either way; this is for callers that want it current (tests, benchmarks)."""
        ...

    def schema_version(self) -> int:
        """The ledger schema version of the database (the latest this code knows, once open)."""
        ...

    def close(self) -> None:
        """Release connections and threads; further calls raise."""
        ...
