"""Conformance with the OTLP specification (opentelemetry-proto ``docs/specification.md``).

Decoder edge cases run in process; transport behaviour (error bodies, keep-alive, chunked bodies,
``Expect: 100-continue``, gRPC) runs against ``otel-aibill serve`` as a subprocess.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2

from otel_aibill.receiver.otlp_common import DecodeError
from otel_aibill.receiver.otlp_json import decode_json
from otel_aibill.receiver.otlp_protobuf import decode_any_value, decode_protobuf
from otel_aibill.receiver.replay import ReplayError, read_file
from otel_aibill.receiver.responses import JSON, PROTOBUF, status_body
from test_receiver_server import EXPORT, Server, genai_spans

T, S = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"


def _doc(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "s"}, "spans": list(spans)}]}]}


def _span(**fields: Any) -> dict[str, Any]:
    return {"traceId": T, "spanId": S, "name": "x", **fields}


def _with_attr(value: Any) -> dict[str, Any]:
    return _doc(_span(attributes=[{"key": "a", "value": value}]))


def _attrs(doc: dict[str, Any] | bytes) -> list[dict[str, object]]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return [dict(s.attributes) for s in decode_json(body).spans]


# --- OTLP/JSON -------------------------------------------------------------------------------


def test_json_null_means_unset_even_for_a_string_value() -> None:
    # proto3 JSON: null is the field's default, i.e. the oneof is simply not set
    assert _attrs(_with_attr({"stringValue": None})) == [{}]
    assert _attrs(_with_attr({"stringValue": None, "intValue": "3"})) == [{"a": 3}]


@pytest.mark.parametrize(
    ("good", "value"),
    [(5, 5), ("5", 5), ("-9223372036854775808", -(2**63)), ("9223372036854775807", 2**63 - 1), (1e3, 1000)],
)
def test_json_int_values_as_numbers_or_strings(good: object, value: int) -> None:
    assert _attrs(_with_attr({"intValue": good})) == [{"a": value}]


def test_json_int_beyond_2_to_53_is_exact() -> None:
    assert _attrs(_with_attr({"intValue": "9007199254740993"})) == [{"a": 9007199254740993}]


@pytest.mark.parametrize(
    "bad", [str(2**63), str(-(2**63) - 1), "1_000", " 7", "\u0661\u0662", "0x10", "1.5", 1.5, "", True]
)
def test_json_int_values_outside_int64_or_not_decimal_reject_the_span(bad: object) -> None:
    decoded = decode_json(json.dumps(_with_attr({"intValue": bad})))
    assert decoded.spans == [] and decoded.rejected == 1


@pytest.mark.parametrize("bad", ["-5", str(2**64), "1e3x"])
def test_json_timestamps_must_be_uint64(bad: str) -> None:
    decoded = decode_json(json.dumps(_doc(_span(startTimeUnixNano=bad))))
    assert decoded.spans == [] and decoded.rejected == 1
    (ok,) = decode_json(json.dumps(_doc(_span(endTimeUnixNano=str(2**64 - 1))))).spans
    assert ok.end_time_ns == 2**64 - 1


def test_json_double_values_follow_the_proto3_json_mapping() -> None:
    (attrs,) = _attrs(
        _doc(
            _span(
                attributes=[
                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                    {"key": "inf", "value": {"doubleValue": "Infinity"}},
                    {"key": "ninf", "value": {"doubleValue": "-Infinity"}},
                    {"key": "str", "value": {"doubleValue": "0.25"}},
                    {"key": "int", "value": {"doubleValue": 2}},
                ]
            )
        )
    )
    assert attrs["nan"] != attrs["nan"] and attrs["inf"] == float("inf") and attrs["ninf"] == float("-inf")
    assert (attrs["str"], attrs["int"]) == (0.25, 2.0) and type(attrs["int"]) is float
    for bad in ["1_0.5", "nan", "inf", " 1"]:
        assert decode_json(json.dumps(_with_attr({"doubleValue": bad}))).rejected == 1, bad


def test_json_nested_arrays_are_skipped_as_in_protobuf() -> None:
    nested = {"arrayValue": {"values": [{"arrayValue": {"values": [{"intValue": 1}]}}]}}
    assert _attrs(_with_attr(nested)) == [{}]
    req = ts.ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=bytes.fromhex(T), span_id=bytes.fromhex(S))
    )
    span.attributes.add(key="a").value.array_value.values.add().array_value.values.add(int_value=1)
    assert [dict(s.attributes) for s in decode_protobuf(req.SerializeToString()).spans] == [{}]
    deep = '{"arrayValue":{"values":[' * 300 + '{"intValue":1}' + "]}}" * 300
    body = json.dumps(_with_attr("DEEP")).replace('"DEEP"', deep).encode()
    assert _attrs(body) == [{}]


def test_json_very_deep_nesting_is_a_decode_error_not_a_crash() -> None:
    deep = '{"arrayValue":{"values":[' * 100_000 + "{}" + "]}}" * 100_000
    with pytest.raises(DecodeError):
        decode_json(json.dumps(_with_attr("DEEP")).replace('"DEEP"', deep).encode())


def test_json_things_that_already_conform() -> None:
    # unknown fields at every level, enum names (never read), nulls, bytes and kvlist values
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [], "droppedAttributesCount": 1, "new": {"x": [1]}},
                "schemaUrl": "u",
                "scopeSpans": [
                    {
                        "scope": {"name": "s", "attributes": None, "future": 1},
                        "spans": [
                            _span(
                                kind="SPAN_KIND_CLIENT",
                                status={"code": "STATUS_CODE_ERROR"},
                                parentSpanId="",
                                events=None,
                                flags=257,
                                attributes=[
                                    {"key": "b", "value": {"bytesValue": "AAE="}},
                                    {"key": "k", "value": {"kvlistValue": {"values": []}}},
                                    {"key": "d", "value": {"intValue": 1}, "extra": 2},
                                    {"key": "d", "value": {"intValue": 2}},
                                    {"key": "e", "value": None},
                                ],
                            )
                        ],
                    }
                ],
            }
        ],
        "somethingNew": True,
    }
    (span,) = decode_json(json.dumps(doc)).spans
    assert dict(span.attributes) == {"d": 2} and span.parent_span_id is None  # last duplicate wins
    assert decode_json(b"\xef\xbb\xbf" + json.dumps(doc).encode()).spans == [span]  # BOM tolerated
    assert decode_json(b'{"resourceSpans": []}').spans == [] and decode_json(b"{}").rejected == 0
    for ids in (
        {"traceId": "0" * 32},
        {"spanId": "0" * 16},
        {"traceId": ""},
        {"traceId": "W47/95gDgQPSabYzgT/GDA=="},
    ):
        assert decode_json(json.dumps(_doc(_span(**ids)))).rejected == 1, ids
    with pytest.raises(DecodeError, match="invalid JSON"):
        decode_json(b'{"resourceSpans": [{"x": "\xff"}]}')


# --- OTLP/protobuf ---------------------------------------------------------------------------


def test_protobuf_unknown_fields_wrong_ids_and_garbage() -> None:
    req = ts.ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.spans.add(trace_id=bytes.fromhex(T), span_id=bytes.fromhex(S), name="ok")
    ss.spans.add(trace_id=b"\1" * 8, span_id=bytes.fromhex(S), name="short trace id")
    raw = req.SerializeToString() + b"\xf8\x06\x01"  # unknown field 111 (varint) at the top level
    decoded = decode_protobuf(raw)
    assert [s.name for s in decoded.spans] == ["ok"] and decoded.rejected == 1
    assert decode_protobuf(b"").spans == []
    with pytest.raises(DecodeError):
        decode_protobuf(req.SerializeToString()[:-3])


def test_protobuf_overlong_int_varint_wraps_to_64_bits_like_protobuf() -> None:
    raw = b"\x18" + b"\xff" * 9 + b"\x7f"  # ten-byte varint carrying bits above 2**64
    assert decode_any_value(raw) == common_pb2.AnyValue.FromString(raw).int_value == -1


# --- error bodies ----------------------------------------------------------------------------


def test_error_bodies_are_google_rpc_status_in_both_encodings() -> None:
    for retry in (1.5, 1_000_000.0):
        body = status_body(JSON, 14, "later", retry)
        status = json_format.Parse(body, status_pb2.Status())  # valid proto3 JSON, not just JSON
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info) and info.retry_delay.ToTimedelta().total_seconds() == retry
    bad = status_pb2.Status.FromString(status_body(PROTOBUF, 3, "cannot parse"))
    request = error_details_pb2.BadRequest()
    assert bad.details[0].Unpack(request)  # the spec: Status.details SHOULD contain a BadRequest
    assert request.field_violations[0].description == "cannot parse"


# --- transports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("conformance"))
    yield srv
    srv.stop()


def _pb_status(r: httpx.Response) -> status_pb2.Status:
    assert r.headers["content-type"] == PROTOBUF, r.headers
    return status_pb2.Status.FromString(r.content)


def test_http_every_error_body_is_a_status(server: Server) -> None:
    url, pb, js = server.traces_url, {"content-type": PROTOBUF}, {"content-type": JSON}
    assert "POST /v1/traces" in _pb_status(httpx.post(url.replace("traces", "logs"), headers=pb)).message
    r = httpx.put(url, content=b"", headers=js)
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.headers["content-type"] == JSON
    assert "method" in json_format.Parse(r.content, status_pb2.Status()).message
    r = httpx.get(url)  # no content type at all: the spec's default, protobuf
    assert r.status_code == 405 and _pb_status(r).message
    r = httpx.post(url, content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/x-protobuf" in _pb_status(r).message
    r = httpx.post(url, content=b"\xff\xff\xff\xff", headers=pb)
    assert r.status_code == 400 and _pb_status(r).details[0].Is(error_details_pb2.BadRequest.DESCRIPTOR)
    r = httpx.post(url, content=b"{}", headers={**js, "content-encoding": "br"})
    assert r.status_code == 400 and "gzip" in r.headers["accept-encoding"]
    assert "br" in json_format.Parse(r.content, status_pb2.Status()).message


def test_http_content_types_with_parameters_and_identity_encoding(server: Server) -> None:
    body = _export_request(genai_spans(1, prefix="params")).SerializeToString()
    for ctype, encoding in [
        ("application/x-protobuf; proto=opentelemetry.proto.collector.trace.v1", "identity"),
        ("Application/X-Protobuf", ""),
    ]:
        r = httpx.post(
            server.traces_url, content=body, headers={"content-type": ctype, "content-encoding": encoding}
        )
        assert r.status_code == 200 and r.headers["content-type"] == PROTOBUF
        assert not ts.ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
    r = httpx.post(server.traces_url, content=b"", headers={"content-type": PROTOBUF})
    assert r.status_code == 200 and r.content == b""  # empty request, empty (full success) response


def _export_request(spans: list[Any]) -> ts.ExportTraceServiceRequest:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans)


def test_http_keep_alive_chunked_and_expect_continue(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        first_socket = None
        for i in range(30):
            body = _export_request(genai_spans(1, prefix=f"ka{i}-")).SerializeToString()
            conn.request("POST", "/v1/traces", body=body, headers={"content-type": PROTOBUF})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b""
            first_socket = first_socket or conn.sock
            assert conn.sock is first_socket  # one connection for all of them
        chunks = iter([gzip.compress(_export_request(genai_spans(2, prefix="chunk")).SerializeToString())])
        conn.request(
            "POST",
            "/v1/traces",
            body=chunks,
            headers={"content-type": PROTOBUF, "content-encoding": "gzip"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
    finally:
        conn.close()

    body = json.dumps(
        _doc(
            _span(
                spanId="aaaaaaaaaaaaaaaa",
                attributes=[{"key": "gen_ai.usage.input_tokens", "value": {"intValue": 1}}],
            )
        )
    ).encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        reply = b""
        while not reply.endswith(b"{}"):
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200 ")
    spans = {r.priced.usage.response_id for r in server.ledger_rows()}
    assert {f"chatcmpl-ka{i}-0" for i in range(30)} | {"chatcmpl-chunk0", "chatcmpl-chunk1"} <= spans


def test_grpc_empty_request_and_rejected_ids(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT)
        reply = ts.ExportTraceServiceResponse.FromString(export(b"", timeout=10))
        assert not reply.HasField("partial_success")
        req = ts.ExportTraceServiceRequest()
        req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\1" * 15, span_id=b"\2" * 8)
        reply = ts.ExportTraceServiceResponse.FromString(
            export(req.SerializeToString(), timeout=10, compression=grpc.Compression.Gzip)
        )
        assert reply.partial_success.rejected_spans == 1 and "trace id" in reply.partial_success.error_message


def test_grpc_malformed_request_is_invalid_argument_with_a_bad_request_detail(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT)
        with pytest.raises(grpc.RpcError) as caught:
            export(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == code_pb2.INVALID_ARGUMENT and status.message == error.details()  # type: ignore[attr-defined]
    [detail] = status.details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad) and bad.field_violations[0].description == status.message
    # the server lives on: a good request still lands
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        assert channel.unary_unary(EXPORT)(b"", timeout=10) == b""


# --- replay ----------------------------------------------------------------------------------


def test_replay_reports_a_bad_line_by_number_and_ingests_the_rest(tmp_path: Path) -> None:
    good = json.dumps(_doc(_span()))
    path = tmp_path / "t.jsonl"
    path.write_text(f"{good}\n\n{{oops\n{good}\n")
    names: list[str] = []
    stats = read_file(path, "auto", lambda d: names.extend(s.name for s in d.spans))
    assert names == ["x", "x"] and stats.bad_messages == 1
    assert stats.errors[0].startswith("line 3:"), stats.errors


def test_replay_reads_a_pretty_printed_json_document(tmp_path: Path) -> None:
    # like opentelemetry-proto's examples/trace.json: one request spread over many lines
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(_doc(_span(), _span(spanId="aaaaaaaaaaaaaaaa")), indent=2))
    names: list[str] = []
    stats = read_file(path, "auto", lambda d: names.extend(s.name for s in d.spans))
    assert names == ["x", "x"] and (stats.messages, stats.bad_messages) == (1, 0)


def test_replay_zstd_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.json.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    with pytest.raises(ReplayError, match="zstd"):
        read_file(path, "auto", lambda d: None)
    proto = tmp_path / "t.pb"
    proto.write_bytes(struct.pack(">I", 100) + b"\0" * 10)
    with pytest.raises(ReplayError, match="truncated"):
        read_file(proto, "proto", lambda d: None)


def test_replay_cli_ingests_the_rest_and_reports_the_bad_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from otel_aibill.cli import app
    from otel_aibill.ledger import open_ledger

    def usage_span(span_id: str) -> dict[str, Any]:
        kv = lambda k, v: {"key": k, "value": v}  # noqa: E731
        return _span(
            spanId=span_id,
            attributes=[
                kv("gen_ai.operation.name", {"stringValue": "chat"}),
                kv("gen_ai.provider.name", {"stringValue": "openai"}),
                kv("gen_ai.request.model", {"stringValue": "gpt-4o-mini"}),
                kv("gen_ai.usage.input_tokens", {"intValue": "1000"}),
                kv("gen_ai.usage.output_tokens", {"intValue": 200}),
                kv("customer.id", {"stringValue": "acme"}),
            ],
        )

    path = tmp_path / "traces.json"
    lines = [json.dumps(_doc(usage_span("a" * 16))), "", "{oops", json.dumps(_doc(usage_span("b" * 16)))]
    path.write_text("\n".join(lines) + "\n")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.delenv("OTEL_AIBILL_DB", raising=False)
    result = CliRunner().invoke(app, ["--db", db, "replay", str(path)])
    assert result.exit_code == 1, result.output  # something was skipped: say so in the exit code
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "traces.json: line 3: invalid JSON" in output
    assert "1 of 3 message(s) could not be decoded and were skipped" in output
    ledger = open_ledger(db)
    try:
        assert sorted(r.priced.usage.span_id for r in ledger.rows(limit=10)) == ["a" * 16, "b" * 16]
    finally:
        ledger.close()
