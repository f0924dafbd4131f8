"""OTLP decoding (protobuf view decoder, hand-written JSON), bodies and replay files."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2

from otel_aibill.receiver.body import BadEncoding, BodyTooLarge, read_all
from otel_aibill.receiver.otlp_common import DecodeError
from otel_aibill.receiver.otlp_json import decode_json
from otel_aibill.receiver.otlp_protobuf import decode_protobuf
from otel_aibill.receiver.replay import read_file
from otel_aibill.receiver.responses import JSON, PROTOBUF, export_response

TRACE = bytes(range(1, 17))
SPAN = bytes(range(1, 9))


def _any(value: object) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, tuple):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[_any(v) for v in value]))
    raise TypeError(value)


def _request(
    attrs: dict[str, object], trace: bytes = TRACE, span: bytes = SPAN, parent: bytes = b""
) -> bytes:
    req = ts.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=_any("api"))
    ss = rs.scope_spans.add()
    ss.scope.name = "scope"
    ss.scope.version = "1.0"
    s = ss.spans.add(trace_id=trace, span_id=span, parent_span_id=parent, name="chat m")
    s.start_time_unix_nano = 1_700_000_000_000_000_000
    s.end_time_unix_nano = 1_700_000_001_000_000_000
    for k, v in attrs.items():
        s.attributes.add(key=k, value=_any(v))
    s.events.add(name="gen_ai.content.prompt")  # ignored, must not disturb decoding
    s.status.code = 1
    return req.SerializeToString()


scalars = st.one_of(
    st.text(max_size=300),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)
values = st.one_of(
    scalars,
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4).map(tuple),
    st.lists(st.text(max_size=20), min_size=1, max_size=4).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=40), values, max_size=12))
def test_protobuf_view_decoder_reads_what_the_generated_classes_read(attrs: dict[str, object]) -> None:
    decoded = decode_protobuf(_request(attrs))
    assert decoded.rejected == 0
    (span,) = decoded.spans
    assert dict(span.attributes) == attrs
    assert span.trace_id == TRACE.hex() and span.span_id == SPAN.hex() and span.parent_span_id is None
    assert span.resource == {"service.name": "api"}
    assert (span.scope_name, span.scope_version, span.name) == ("scope", "1.0", "chat m")
    assert (span.start_time_ns, span.end_time_ns) == (1_700_000_000_000_000_000, 1_700_000_001_000_000_000)


def test_protobuf_skips_values_billing_cannot_use_and_rejects_bad_ids() -> None:
    req = ts.ExportTraceServiceRequest.FromString(_request({"a": 1}))
    s = req.resource_spans[0].scope_spans[0].spans[0]
    s.attributes.add(key="kv", value=common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList()))
    s.attributes.add(key="raw", value=common_pb2.AnyValue(bytes_value=b"\x00\x01"))
    bad = req.resource_spans[0].scope_spans[0].spans.add(trace_id=b"\x00" * 16, span_id=SPAN)
    req.resource_spans[0].scope_spans[0].spans.add(trace_id=TRACE, span_id=b"\x01\x02")
    assert bad.name == ""
    decoded = decode_protobuf(req.SerializeToString())
    assert [dict(s.attributes) for s in decoded.spans] == [{"a": 1}]
    assert decoded.rejected == 2
    assert "2 span(s) rejected" in decoded.error_message and "invalid trace id" in decoded.error_message


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05abc", b"garbage that is not protobuf \x0a\xff"])
def test_protobuf_garbage_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_protobuf(body)


SPEC_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "customer.id", "value": {"stringValue": "acme"}}]},
            "schemaUrl": "https://opentelemetry.io/schemas/1.30.0",
            "scopeSpans": [
                {
                    "scope": {"name": "opentelemetry.instrumentation.openai_v2", "version": "2.4b0"},
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "EEE19B7EC3C1B173",
                            "name": "chat gpt-4o-mini",
                            "kind": 3,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": 1544712661000000000,
                            "attributes": [
                                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000"}},
                                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 200}},
                                {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.5}},
                                {"key": "gen_ai.request.stream", "value": {"boolValue": False}},
                                {
                                    "key": "gen_ai.response.finish_reasons",
                                    "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}},
                                },
                                {"key": "blob", "value": {"bytesValue": "AAE="}},
                                {"key": "empty", "value": {}},
                            ],
                            "status": {"code": 1},
                            "someFutureField": {"x": 1},
                        },
                        {
                            "traceId": "not-hex-at-all-not-hex-at-all-00",
                            "spanId": "eee19b7ec3c1b174",
                            "name": "x",
                        },
                        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "", "name": "y"},
                    ],
                }
            ],
        }
    ]
}


def test_json_follows_the_otlp_json_rules() -> None:
    decoded = decode_json(json.dumps(SPEC_JSON).encode())
    (span,) = decoded.spans
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"  # hex, case-insensitive, not base64
    assert span.span_id == "eee19b7ec3c1b174" and span.parent_span_id == "eee19b7ec3c1b173"
    assert span.start_time_ns == 1544712660000000000 and span.end_time_ns == 1544712661000000000
    assert dict(span.attributes) == {
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.stream": False,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    assert span.resource == {"customer.id": "acme"}
    assert (span.scope_name, span.scope_version) == ("opentelemetry.instrumentation.openai_v2", "2.4b0")
    assert decoded.rejected == 2


def test_json_and_protobuf_agree() -> None:
    attrs = {"s": "ü", "i": -5, "big": 2**62, "d": 1.25, "b": True, "arr": (1, 2)}
    pb = decode_protobuf(_request(attrs, parent=SPAN[::-1])).spans[0]
    as_json = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "scope", "version": "1.0"},
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "parentSpanId": SPAN[::-1].hex(),
                                "name": "chat m",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                                "attributes": [
                                    {"key": "s", "value": {"stringValue": "ü"}},
                                    {"key": "i", "value": {"intValue": "-5"}},
                                    {"key": "big", "value": {"intValue": str(2**62)}},
                                    {"key": "d", "value": {"doubleValue": 1.25}},
                                    {"key": "b", "value": {"boolValue": True}},
                                    {
                                        "key": "arr",
                                        "value": {
                                            "arrayValue": {"values": [{"intValue": "1"}, {"intValue": 2}]}
                                        },
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    assert decode_json(json.dumps(as_json)).spans[0] == pb


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"resourceSpans": {}}',
        b'{"resourceSpans": [{"scopeSpans": [{"scope": 5}]}]}',
    ],
)
def test_json_malformed_requests_are_decode_errors(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_json(body)


def test_json_bad_span_fields_reject_only_that_span() -> None:
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "attributes": [{"key": "n", "value": {"intValue": "x1"}}],
                            },
                            {"traceId": TRACE.hex(), "spanId": SPAN.hex(), "startTimeUnixNano": True},
                            {"traceId": TRACE.hex(), "spanId": SPAN.hex(), "name": "ok"},
                        ]
                    }
                ]
            }
        ]
    }
    decoded = decode_json(json.dumps(doc))
    assert [s.name for s in decoded.spans] == ["ok"]
    assert decoded.rejected == 2


def test_empty_request_is_valid() -> None:
    assert decode_protobuf(b"").spans == [] and decode_json(b"{}").spans == []


def test_responses() -> None:
    ok = ts.ExportTraceServiceResponse.FromString(export_response(PROTOBUF, 0, ""))
    assert not ok.HasField("partial_success")
    partial = ts.ExportTraceServiceResponse.FromString(export_response(PROTOBUF, 3, "bad ids"))
    assert (partial.partial_success.rejected_spans, partial.partial_success.error_message) == (3, "bad ids")
    assert json.loads(export_response(JSON, 3, "bad ids")) == {
        "partialSuccess": {"rejectedSpans": "3", "errorMessage": "bad ids"}
    }
    assert export_response(JSON, 0, "") == b"{}"


def test_bodies_decompress_incrementally_under_the_limit() -> None:
    data = b"x" * 100_000
    assert read_all(gzip.compress(data), "gzip", 1 << 20) == data
    assert read_all(zlib.compress(data), "deflate", 1 << 20) == data
    raw = zlib.compressobj(wbits=-15)
    assert read_all(raw.compress(data) + raw.flush(), "deflate", 1 << 20) == data  # raw deflate too
    assert read_all(data, "", 1 << 20) == data
    with pytest.raises(BodyTooLarge):
        read_all(gzip.compress(b"\0" * (5 << 20)), "gzip", 1 << 20)  # a small bomb, refused early
    with pytest.raises(BodyTooLarge):
        read_all(data, "identity", 1000)
    with pytest.raises(BadEncoding):
        read_all(gzip.compress(data)[:-10], "gzip", 1 << 20)
    with pytest.raises(BadEncoding):
        read_all(b"not gzip", "gzip", 1 << 20)
    with pytest.raises(BadEncoding):
        read_all(data, "br", 1 << 20)


def test_replay_reads_collector_file_exporter_formats(tmp_path: Path) -> None:
    req = _request({"k": "v"})
    other = _request({"k": "w"}, span=SPAN[::-1])
    proto = tmp_path / "traces.pb"
    proto.write_bytes(b"".join(struct.pack(">I", len(m)) + m for m in (req, other)))
    doc = json.dumps(
        {
            "resourceSpans": [
                {"scopeSpans": [{"spans": [{"traceId": TRACE.hex(), "spanId": SPAN.hex(), "name": "j"}]}]}
            ]
        }
    )
    jsonl = tmp_path / "traces.json"
    jsonl.write_text(doc + "\n" + doc + "\n\n")
    gz = tmp_path / "traces.json.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    gzpb = tmp_path / "traces.pb.gz"
    gzpb.write_bytes(gzip.compress(proto.read_bytes()))
    for path, names in [
        (proto, ["chat m", "chat m"]),
        (jsonl, ["j", "j"]),
        (gz, ["j", "j"]),
        (gzpb, ["chat m"] * 2),
    ]:
        seen: list[str] = []
        stats = read_file(path, "auto", lambda d, seen=seen: seen.extend(s.name for s in d.spans))
        assert seen == names and stats.messages == 2 and stats.bad_messages == 0, path
    bad = tmp_path / "bad.json"
    bad.write_text(doc + "\n{oops\n")
    stats = read_file(bad, "auto", lambda d: None)
    assert (stats.messages, stats.spans, stats.bad_messages) == (2, 1, 1)
