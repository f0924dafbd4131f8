"""The transport-independent part of handling one export request: decode, prepare, queue, report.

Decoding and ``Pipeline.prepare`` (extraction, pricing) run on the request's own thread, so the
single committing thread only does what needs the ledger. Each transport maps the outcomes to its
own status codes: ``DecodeError`` → 400 / INVALID_ARGUMENT; ``Overloaded``/``ShuttingDown``/
``CommitFailed`` → retryable 503 (429 for overload) / UNAVAILABLE with a retry hint; spans refused
by the decoder or the ledger → OTLP partial success (not retried).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass

from otel_aibill.receiver.budget import ByteBudget
from otel_aibill.receiver.committer import CommitFailed, Committed, GroupCommitter
from otel_aibill.receiver.metrics import ReceiverMetrics
from otel_aibill.receiver.otlp_common import MAX_ERROR_SAMPLES, Decoded
from otel_aibill.receiver.otlp_json import decode_json
from otel_aibill.receiver.otlp_protobuf import decode_protobuf
from otel_aibill.receiver.responses import JSON

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Accepted:
    """A request whose spans are queued; ``done`` completes when they are committed."""

    done: Future[Committed]
    rejected: int
    error_message: str


@dataclass(slots=True, frozen=True)
class Outcome:
    """What the client is told once its spans are committed: OTLP ``partial_success``."""

    rejected: int
    error_message: str


class Ingestor:
    def __init__(
        self, committer: GroupCommitter, metrics: ReceiverMetrics, budget: ByteBudget | None = None
    ) -> None:
        self.committer = committer
        self.metrics = metrics
        self.budget = budget or ByteBudget(256 * 1024 * 1024)

    def decode(self, body: bytes, content_type: str) -> Decoded:
        return decode_json(body) if content_type == JSON else decode_protobuf(body)

    def accept(self, decoded: Decoded) -> Accepted:
        """Prepare and queue decoded spans (may raise ``Overloaded`` / ``ShuttingDown`` /
        ``CommitFailed``)."""
        try:
            prepared = self.committer.prepare(decoded.spans)
        except Exception as exc:  # a bug, not the data: extraction and pricing are total
            log.exception("preparing %d spans failed", len(decoded.spans))
            raise CommitFailed(f"preparing spans failed: {exc}") from exc
        done = self.committer.submit(prepared)
        self.metrics.spans_received.inc(len(decoded.spans))
        if decoded.rejected:
            self.metrics.spans_rejected.inc(decoded.rejected)
        if decoded.dropped_attributes:
            self.metrics.attributes_dropped.inc(decoded.dropped_attributes)
        return Accepted(done, decoded.rejected, decoded.error_message)

    def outcome(self, accepted: Accepted, committed: Committed) -> Outcome:
        """The decoder's rejections plus the spans the ledger refused."""
        refused = committed.refused
        if not refused:
            return Outcome(accepted.rejected, accepted.error_message)
        self.metrics.spans_rejected.inc(len(refused))
        shown = "; ".join(r.describe()[:300] for r in refused[:MAX_ERROR_SAMPLES])
        more = len(refused) - MAX_ERROR_SAMPLES
        message = f"{len(refused)} span(s) could not be stored: {shown}" + (
            f" (and {more} more)" if more > 0 else ""
        )
        if accepted.error_message:
            message = f"{accepted.error_message}; {message}"
        # the refused text itself may be what is not valid Unicode, and the reply must encode
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return Outcome(accepted.rejected + len(refused), message)
