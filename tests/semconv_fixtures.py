"""Spans recorded from real instrumentations (tests/data/semconv/*.json), as SpanViews."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otel_aibill.usage import SpanView

DATA = Path(__file__).parent / "data" / "semconv"


def load_spans(name: str) -> list[SpanView]:
    raw: list[dict[str, Any]] = json.loads((DATA / f"{name}.json").read_text())
    return [
        SpanView(
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id=f"{index + 1:016x}",
            name=span["name"],
            start_time_ns=1_760_000_000_000_000_000,
            end_time_ns=1_760_000_001_000_000_000,
            attributes=span["attributes"],
            scope_name=span["scope_name"],
            scope_version=span["scope_version"],
            parent_span_id="00f067aa0ba902b7",
        )
        for index, span in enumerate(raw)
    ]
