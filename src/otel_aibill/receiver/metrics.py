"""Prometheus metrics of the receiver, on a registry of its own (no global state between servers)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "otel_aibill_receiver_requests",
            "OTLP export requests by transport and outcome",
            ["transport", "outcome"],
            registry=r,
        )
        self.spans_received = Counter(
            "otel_aibill_spans_received", "Spans decoded from accepted requests", registry=r
        )
        self.spans_rejected = Counter(
            "otel_aibill_spans_rejected", "Spans refused as invalid (partial success)", registry=r
        )
        self.attributes_dropped = Counter(
            "otel_aibill_receiver_attributes_dropped",
            "Attribute values dropped by the decoders for their size (over 64 KiB)",
            registry=r,
        )
        self.spans_billed = Counter(
            "otel_aibill_spans_billed", "Usage rows newly stored in the ledger", registry=r
        )
        self.spans_duplicate = Counter(
            "otel_aibill_spans_duplicate", "Spans already in the ledger (redelivery)", registry=r
        )
        self.spans_unpriced = Counter(
            "otel_aibill_spans_unpriced", "Usage stored without a known price", registry=r
        )
        self.spans_pending = Counter(
            "otel_aibill_spans_pending", "Usage stored while its customer is still unknown", registry=r
        )
        self.spans_not_billable = Counter(
            "otel_aibill_spans_not_billable",
            "Spans without billable usage, by reason",
            ["reason"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "otel_aibill_ledger_commit_seconds",
            "Time of one group commit (ingest + ledger transaction)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.commit_spans = Histogram(
            "otel_aibill_ledger_commit_spans",
            "Spans per group commit",
            buckets=(1, 16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536),
            registry=r,
        )
        self.queue_depth = Gauge(
            "otel_aibill_receiver_queue_spans", "Spans accepted and waiting for their commit", registry=r
        )
        self.overloaded = Counter(
            "otel_aibill_receiver_overloaded",
            "Requests refused with a retry hint because the queue was full",
            registry=r,
        )

    def record_ingest(
        self, *, billed: int, duplicates: int, unpriced: int, pending: int, not_billable: Mapping[str, int]
    ) -> None:
        self.spans_billed.inc(billed)
        self.spans_duplicate.inc(duplicates)
        self.spans_unpriced.inc(unpriced)
        self.spans_pending.inc(pending)
        for reason, count in not_billable.items():
            self.spans_not_billable.labels(reason).inc(count)
