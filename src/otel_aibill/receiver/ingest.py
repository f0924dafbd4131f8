"""The transport-independent part of handling one export request: decode, count, queue.

Each transport maps the outcomes to its own status codes:
``DecodeError`` → 400 / INVALID_ARGUMENT; ``Overloaded``/``ShuttingDown``/``CommitFailed`` →
retryable 503 (429 for overload) / UNAVAILABLE with a retry hint.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

from otel_aibill.receiver.committer import GroupCommitter
from otel_aibill.receiver.metrics import ReceiverMetrics
from otel_aibill.receiver.otlp_common import Decoded
from otel_aibill.receiver.otlp_json import decode_json
from otel_aibill.receiver.otlp_protobuf import decode_protobuf
from otel_aibill.receiver.responses import JSON


@dataclass(slots=True)
class Accepted:
    """A request whose spans are queued; ``done`` completes when they are committed."""

    done: Future[None]
    rejected: int
    error_message: str


class Ingestor:
    def __init__(self, committer: GroupCommitter, metrics: ReceiverMetrics) -> None:
        self.committer = committer
        self.metrics = metrics

    def decode(self, body: bytes, content_type: str) -> Decoded:
        return decode_json(body) if content_type == JSON else decode_protobuf(body)

    def accept(self, decoded: Decoded) -> Accepted:
        """Queue decoded spans (may raise ``Overloaded`` / ``ShuttingDown``)."""
        done = self.committer.submit(decoded.spans)
        self.metrics.spans_received.inc(len(decoded.spans))
        if decoded.rejected:
            self.metrics.spans_rejected.inc(decoded.rejected)
        return Accepted(done, decoded.rejected, decoded.error_message)
