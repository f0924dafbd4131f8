"""The protobuf decoder refuses exactly what the reference parser (the generated classes) refuses."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2

from otel_aibill.receiver.otlp_common import DecodeError
from otel_aibill.receiver.otlp_protobuf import decode_protobuf

TRACE = bytes(range(1, 17))
SPAN = bytes(range(1, 9))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _span(*fields: bytes) -> bytes:
    """A request of one span with the given raw span fields after valid ids."""
    span = _ld(1, TRACE) + _ld(2, SPAN) + b"".join(fields)
    return _ld(1, _ld(2, _ld(2, span)))


def _reference_accepts(body: bytes) -> bool:
    try:
        ts.ExportTraceServiceRequest.FromString(body)
    except Exception:
        return False
    return True


BAD_UTF8 = b"\xff\xfe"
CORRUPT = {
    # the report's reproduction: resource_spans { schema_url: "\xff" }
    "schema_url": b"\x0a\x03\x1a\x01\xff",
    "trace_state": _span(_ld(3, BAD_UTF8)),
    "event name": _span(_ld(11, _ld(2, BAD_UTF8))),
    "event attribute value": _span(_ld(11, _ld(3, _ld(1, b"k") + _ld(2, _ld(1, BAD_UTF8))))),
    "status message": _span(_ld(15, _ld(2, BAD_UTF8))),
    "link trace_state": _span(_ld(13, _ld(3, BAD_UTF8))),
    "scope attribute": _ld(1, _ld(2, _ld(1, _ld(3, _ld(1, BAD_UTF8))))),
    # two values under one key: the map keeps the valid last one, the reference reads both
    "hidden duplicate key": _span(
        _ld(9, _ld(1, b"k") + _ld(2, _ld(1, BAD_UTF8))), _ld(9, _ld(1, b"k") + _ld(2, _ld(1, b"ok")))
    ),
    "truncated varint in a bool value": _span(_ld(9, _ld(1, b"k") + _ld(2, b"\x10\x80"))),
    "truncated event": _span(b"\x5a\x05\x12\x01"),
}


@pytest.mark.parametrize("body", CORRUPT.values(), ids=CORRUPT.keys())
def test_what_the_reference_refuses_is_refused(body: bytes) -> None:
    assert not _reference_accepts(body)
    with pytest.raises(DecodeError):
        decode_protobuf(body)


def _deep_request(depth: int) -> bytes:
    """One span attribute: an array in an array ... ``depth`` times, around a string."""
    value = _ld(1, b"x")
    for _ in range(depth):
        value = _ld(5, _ld(1, value))  # AnyValue.array_value { values: value }
    return _span(_ld(9, _ld(1, b"k") + _ld(2, value)))


def test_nesting_depth_is_counted_from_the_request_as_the_reference_does() -> None:
    deepest = max(d for d in range(60) if _reference_accepts(_deep_request(d)))
    decode_protobuf(_deep_request(deepest))
    with pytest.raises(DecodeError):
        decode_protobuf(_deep_request(deepest + 1))


def _text(value: str) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(string_value=value)


def _valid_request() -> bytes:
    req = ts.ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.30.0")
    rs.resource.attributes.add(key="service.name", value=common_pb2.AnyValue(string_value="api"))
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    s = ss.spans.add(trace_id=TRACE, span_id=SPAN, name="chat gpt-4o", trace_state="a=b", kind=3)
    s.start_time_unix_nano, s.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    for key, value in (
        ("gen_ai.request.model", common_pb2.AnyValue(string_value="gpt-4o")),
        ("gen_ai.usage.input_tokens", common_pb2.AnyValue(int_value=1000)),
        ("gen_ai.request.temperature", common_pb2.AnyValue(double_value=0.5)),
        ("gen_ai.request.stream", common_pb2.AnyValue(bool_value=True)),
        ("finish", common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[_text("stop")]))),
    ):
        s.attributes.add(key=key, value=value)
    event = s.events.add(name="gen_ai.choice", time_unix_nano=1)
    event.attributes.add(key="index", value=common_pb2.AnyValue(int_value=0))
    s.links.add(trace_id=TRACE, span_id=SPAN, trace_state="x=y")
    s.status.message = "fine"
    return req.SerializeToString()


VALID = _valid_request()
mutations = st.lists(
    st.tuples(st.integers(0, len(VALID) - 1), st.sampled_from(("flip", "delete", "insert", "set"))),
    min_size=1,
    max_size=4,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations, st.binary(min_size=1, max_size=1))
def test_mutated_requests_are_refused_exactly_when_the_reference_refuses_them(
    edits: list[tuple[int, str]], byte: bytes
) -> None:
    body = bytearray(VALID)
    for position, kind in edits:
        position %= max(len(body), 1)
        if kind == "flip" and body:
            body[position] ^= 0x80 if position % 2 else 0x01
        elif kind == "delete" and body:
            del body[position]
        elif kind == "insert":
            body[position:position] = byte
        elif body:
            body[position] = byte[0]
    if _reference_accepts(bytes(body)):
        decode_protobuf(bytes(body))
    else:
        with pytest.raises(DecodeError):
            decode_protobuf(bytes(body))
