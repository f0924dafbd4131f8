"""Size limits on what clients send: bounded memory in bytes, bounded ids and names."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2

from otel_aibill.ledger import open_ledger
from otel_aibill.pipeline import Pipeline
from otel_aibill.receiver import otlp_protobuf
from otel_aibill.receiver.otlp_common import MAX_ATTRIBUTE_BYTES
from otel_aibill.receiver.otlp_json import decode_json
from otel_aibill.receiver.otlp_protobuf import decode_protobuf
from otel_aibill.semconv import extract
from otel_aibill.semconv.plan import plans
from otel_aibill.usage import MAX_TEXT_CHARS, SpanView

T0 = 1_764_000_000_000_000_000
MIB = 1024 * 1024


def _request(attrs: dict[str, str | int], trace: int = 1) -> bytes:
    req = ts.ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=trace.to_bytes(16, "big"), span_id=(1).to_bytes(8, "big"), name="chat")
    )
    span.start_time_unix_nano, span.end_time_unix_nano = T0, T0 + 1000
    for key, value in attrs.items():
        v = (
            common_pb2.AnyValue(int_value=value)
            if isinstance(value, int)
            else common_pb2.AnyValue(string_value=value)
        )
        span.attributes.add(key=key, value=v)
    return req.SerializeToString()


def test_decoding_distinct_large_values_keeps_no_memory() -> None:
    """The report: each request with a distinct 30 MiB value kept ~58 MiB (the value cache)."""
    bodies = [_request({"gen_ai.prompt": chr(ord("a") + i) * (2 * MIB)}, trace=i + 1) for i in range(12)]
    decode_protobuf(bodies[0])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            decode_protobuf(body)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1 * MIB, f"{kept / MIB:.1f} MiB kept after decoding"


def test_the_value_cache_holds_only_short_values() -> None:
    for size in (10, 300, 5000, MAX_ATTRIBUTE_BYTES + 1):
        decode_protobuf(_request({"k": "x" * size}))
    assert max(map(len, otlp_protobuf._cache)) <= otlp_protobuf.MAX_CACHED_BYTES


def test_values_over_the_limit_are_dropped_and_counted_by_both_decoders() -> None:
    big, fits = "y" * (MAX_ATTRIBUTE_BYTES + 100), "z" * (MAX_ATTRIBUTE_BYTES - 100)
    decoded = decode_protobuf(_request({"big": big, "fits": fits, "n": 3}))
    assert decoded.dropped_attributes == 1
    assert dict(decoded.spans[0].attributes) == {"fits": fits, "n": 3}

    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "r", "value": {"stringValue": big}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "01" * 16,
                                "spanId": "02" * 8,
                                "attributes": [
                                    {"key": "big", "value": {"stringValue": big}},
                                    {
                                        "key": "arr",
                                        "value": {"arrayValue": {"values": [{"stringValue": big}]}},
                                    },
                                    {"key": "fits", "value": {"stringValue": fits}},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    decoded = decode_json(json.dumps(doc))
    assert decoded.dropped_attributes == 3
    assert dict(decoded.spans[0].attributes) == {"fits": fits}
    assert dict(decoded.spans[0].resource) == {}


def _chat(**extra: str) -> dict[str, object]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        **extra,
    }


def _view(span_id: int, attrs: dict[str, object]) -> SpanView:
    return SpanView(
        trace_id=f"{span_id:032x}",
        span_id=f"{span_id:016x}",
        name="chat",
        start_time_ns=T0,
        end_time_ns=T0 + 1000,
        attributes=attrs,  # type: ignore[arg-type]
    )


def test_over_long_names_and_ids_are_read_as_absent_and_never_stored(tmp_path: Path) -> None:
    """The report: a 20 MiB model name was stored verbatim."""
    long = "m" * (MAX_TEXT_CHARS + 1)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        Pipeline(ledger).ingest(
            [
                _view(1, _chat(**{"gen_ai.response.model": long, "customer.id": "acme"})),
                _view(2, _chat(**{"gen_ai.request.model": long, "customer.id": "acme"})),
                _view(3, _chat(**{"customer.id": "c" * (MAX_TEXT_CHARS + 1)})),
                _view(4, _chat(**{"gen_ai.provider.name": long, "gen_ai.response.id": long})),
                _view(5, _chat(**{"gen_ai.request.model": "m" * MAX_TEXT_CHARS, "customer.id": "acme"})),
            ]
        )
        rows = {r.priced.usage.span_id[-1]: r.priced for r in ledger.rows(limit=100)}
    finally:
        ledger.close()
    assert rows["1"].usage.model == "gpt-4o" and rows["1"].cost is not None  # the request model
    assert rows["2"].usage.model != long and rows["2"].cost is None  # no model: unpriced, visible
    assert rows["3"].usage.customer is None  # no customer: pending, visible
    assert rows["4"].usage.provider != long and rows["4"].usage.response_id is None
    assert rows["5"].usage.request_model == "m" * MAX_TEXT_CHARS  # the limit itself is kept
    for priced in rows.values():
        usage = priced.usage
        texts = (usage.provider, usage.model, usage.request_model, usage.response_model, usage.customer)
        assert all(t is None or len(t) <= MAX_TEXT_CHARS for t in texts)


def test_plans_are_not_kept_for_huge_key_sets() -> None:
    attrs = {**_chat(), **{f"x.{i}." + "k" * 1000: 1 for i in range(20)}}
    plans.clear()
    assert extract(_view(1, attrs)) is not None
    assert extract(_view(2, _chat())) is not None
    assert len(plans) == 1
