"""What both OTLP decoders (protobuf and JSON) produce, and the rules they share.

A request that cannot be read at all is a ``DecodeError`` (HTTP 400 / INVALID_ARGUMENT). A span
that can be read but is unusable (bad ids) is *rejected*: counted, named in the partial-success
message, and the rest of the request is still ingested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otel_aibill.records import slot_constructor
from otel_aibill.usage import SpanView

new_span_view = slot_constructor(SpanView)
"""``SpanView(...)`` at about half the cost: both decoders build one per span."""

MAX_ERROR_SAMPLES = 3
"""How many individual span errors the partial-success message quotes."""

MAX_ATTRIBUTE_BYTES = 64 * 1024
"""Attribute values larger than this (protobuf: the encoded value; JSON: characters of a string)
are dropped by the decoders and counted (``Decoded.dropped_attributes``). No value billing reads
comes near it (ids and names are read only up to ``usage.MAX_TEXT_CHARS``), and what is decoded
is held until its commit."""


class DecodeError(ValueError):
    """The request body is not an OTLP ExportTraceServiceRequest."""


@dataclass(slots=True)
class Decoded:
    spans: list[SpanView] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    dropped_attributes: int = 0

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERROR_SAMPLES:
            self.errors.append(message)

    @property
    def error_message(self) -> str:
        if not self.rejected:
            return ""
        more = self.rejected - len(self.errors)
        suffix = f" (and {more} more)" if more > 0 else ""
        return f"{self.rejected} span(s) rejected: " + "; ".join(self.errors) + suffix


_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def check_ids(trace_id: str, span_id: str, parent_span_id: str | None) -> str | None:
    """Return why the (lowercase hex) ids are invalid, or None. All-zero ids are invalid per OTLP."""
    if len(trace_id) != 32 or trace_id == _ZERO_TRACE:
        return f"invalid trace id {trace_id[:64]!r}"
    if len(span_id) != 16 or span_id == _ZERO_SPAN:
        return f"invalid span id {span_id[:32]!r} in trace {trace_id}"
    if parent_span_id is not None and len(parent_span_id) != 16:
        return f"invalid parent span id {parent_span_id[:32]!r} in span {span_id}"
    return None
