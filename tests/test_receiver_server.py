"""``otel-aibill serve`` as a subprocess, fed by the OpenTelemetry SDK's own OTLP exporters.

Every test reads the resulting SQLite ledger back through ``open_ledger``.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from net_support import free_ports
from otel_aibill.ledger import open_ledger

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# gpt-4o-mini: $0.15 / $0.60 per million input / output tokens
COST_1000_IN_200_OUT = Decimal("0.00027")


class Server:
    def __init__(
        self, tmp: Path, *args: str, env: dict[str, str] | None = None, db: str | None = None
    ) -> None:
        self.db = tmp / "ledger.db"
        self.url = db or f"sqlite:///{self.db}"
        self.grpc_port, self.http_port, self.ui_port = free_ports(3)
        cmd = [
            sys.executable,
            "-m",
            "otel_aibill.cli",
            "serve",
            "--db",
            self.url,
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--ui-port",
            str(self.ui_port),
            *args,
        ]
        self.log = tmp / "server.log"
        self.proc = subprocess.Popen(
            cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.ui}/healthz", timeout=1).json()["ok"]:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.log.read_text()}")
            time.sleep(0.1)

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def metric(self, name: str) -> float:
        total = 0.0
        for line in httpx.get(f"{self.ui}/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def ledger_rows(self) -> list[Any]:
        ledger = open_ledger(self.url)
        try:
            return ledger.rows(limit=1_000_000)
        finally:
            ledger.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def server_on(tmp_path: Path, ledger_url: str) -> Iterator[Server]:
    """A receiver on each backend's ledger."""
    srv = Server(tmp_path, db=ledger_url)
    yield srv
    srv.stop()


def genai_spans(n: int, customer: str = "acme", prefix: str = "") -> list[ReadableSpan]:
    """Real SDK spans with the GenAI attributes the openai-v2 instrumentation writes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "chat-api"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    for i in range(n):
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": f"chatcmpl-{prefix}{i}",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "customer.id": customer,
        }
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attrs):
            pass
    return list(memory.get_finished_spans())


def _ids(spans: list[ReadableSpan]) -> set[tuple[str, str]]:
    return {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in spans}


def _row_ids(rows: list[Any]) -> set[tuple[str, str]]:
    return {(r.priced.usage.trace_id, r.priced.usage.span_id) for r in rows}


def test_sdk_exporters_grpc_and_http_bill_exactly_once(server_on: Server) -> None:
    server = server_on
    via_grpc, via_http = genai_spans(7, prefix="g"), genai_spans(5, prefix="h")
    grpc_exp = GrpcExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True)
    http_exp = HttpExporter(endpoint=server.traces_url)
    assert grpc_exp.export(via_grpc) is SpanExportResult.SUCCESS
    assert http_exp.export(via_http) is SpanExportResult.SUCCESS
    # redelivery, over the other transport, is a no-op
    assert grpc_exp.export(via_http) is SpanExportResult.SUCCESS
    assert http_exp.export(via_grpc) is SpanExportResult.SUCCESS
    rows = server.ledger_rows()
    assert len(rows) == 12
    assert _row_ids(rows) == _ids(via_grpc) | _ids(via_http)
    for row in rows:
        assert row.priced.usage.customer == "acme"
        assert (row.priced.usage.input_tokens, row.priced.usage.output_tokens) == (1000, 200)
        assert row.priced.cost == COST_1000_IN_200_OUT
    assert server.metric("otel_aibill_spans_billed_total") == 12
    assert server.metric("otel_aibill_spans_duplicate_total") == 12
    assert server.metric("otel_aibill_spans_received_total") == 24
    assert server.stop() == 0


def test_compressed_requests_gzip_and_deflate(server: Server) -> None:
    a, b, c = genai_spans(3, prefix="a"), genai_spans(3, prefix="b"), genai_spans(3, prefix="c")
    assert HttpExporter(endpoint=server.traces_url, compression=HttpCompression.Gzip).export(a) is (
        SpanExportResult.SUCCESS
    )
    grpc_exp = GrpcExporter(
        endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True, compression=grpc.Compression.Gzip
    )
    assert grpc_exp.export(b) is SpanExportResult.SUCCESS
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    body = encode_spans(c).SerializeToString()
    r = httpx.post(
        server.traces_url,
        content=zlib.compress(body),
        headers={"content-type": "application/x-protobuf", "content-encoding": "deflate"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert _row_ids(server.ledger_rows()) == _ids(a) | _ids(b) | _ids(c)


def _json_request(trace: str, span: str, n_in: int, customer: str) -> dict[str, Any]:
    kv = lambda k, v: {"key": k, "value": v}  # noqa: E731
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        kv("service.name", {"stringValue": "svc"}),
                        kv("customer.id", {"stringValue": customer}),
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": span,
                                "name": "chat gpt-4o-mini",
                                "kind": 3,
                                "startTimeUnixNano": "1760000000000000000",
                                "endTimeUnixNano": "1760000001000000000",
                                "attributes": [
                                    kv("gen_ai.operation.name", {"stringValue": "chat"}),
                                    kv("gen_ai.provider.name", {"stringValue": "openai"}),
                                    kv("gen_ai.request.model", {"stringValue": "gpt-4o-mini"}),
                                    kv("gen_ai.usage.input_tokens", {"intValue": str(n_in)}),
                                    kv("gen_ai.usage.output_tokens", {"intValue": 200}),
                                ],
                                "status": {},
                            },
                            {"traceId": trace, "spanId": "zz", "name": "bad id"},
                        ],
                    }
                ],
            }
        ]
    }


def test_otlp_json_partial_success_and_errors(server: Server) -> None:
    trace, span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    doc = json.dumps(_json_request(trace.upper(), span, 1000, "globex")).encode()
    r = httpx.post(
        server.traces_url,
        content=gzip.compress(doc),
        headers={"content-type": "application/json; charset=utf-8", "content-encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["partialSuccess"]["rejectedSpans"] == "1"
    assert "spanId is not hex" in body["partialSuccess"]["errorMessage"]
    (row,) = server.ledger_rows()
    assert (row.priced.usage.trace_id, row.priced.usage.span_id) == (trace, span)
    assert row.priced.usage.customer == "globex" and row.priced.cost == COST_1000_IN_200_OUT

    bad = [
        ({"content-type": "application/json"}, b"{not json", 400),
        ({"content-type": "application/x-protobuf"}, b"\xff\xff\xff\xff", 400),
        ({"content-type": "application/json", "content-encoding": "gzip"}, b"not gzip", 400),
        ({"content-type": "application/json", "content-encoding": "br"}, b"{}", 400),
        ({"content-type": "text/plain"}, b"{}", 415),
    ]
    for headers, content, status in bad:
        resp = httpx.post(server.traces_url, content=content, headers=headers)
        assert resp.status_code == status, (headers, resp.text)
    err = httpx.post(
        server.traces_url, content=b"{not json", headers={"content-type": "application/json"}
    ).json()
    assert err["code"] == 3 and "invalid JSON" in err["message"]
    assert httpx.get(server.traces_url).status_code == 405
    assert httpx.post(server.traces_url.replace("traces", "logs"), content=b"{}").status_code == 404
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT)
        with pytest.raises(grpc.RpcError) as info:
            export(b"\xff\xff\xff\xff", timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert httpx.get(f"{server.ui}/healthz").json()["ok"] is True
    assert len(server.ledger_rows()) == 1


def test_oversize_requests_are_refused_after_decompression(server: Server) -> None:
    huge = b"\0" * (65 * 1024 * 1024)  # 65 MiB of zeros: about 64 KiB gzipped
    r = httpx.post(
        server.traces_url,
        content=gzip.compress(huge),
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
        timeout=60,
    )
    assert r.status_code == 413
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", compression=grpc.Compression.Gzip) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(EXPORT)(huge, timeout=60)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert httpx.get(f"{server.ui}/healthz").json()["ok"] is True


def test_auth_token(tmp_path: Path) -> None:
    srv = Server(tmp_path, "--auth-token", "s3cret")
    try:
        spans = genai_spans(2)
        target = f"127.0.0.1:{srv.grpc_port}"
        assert GrpcExporter(endpoint=target, insecure=True).export(spans) is SpanExportResult.FAILURE
        wrong = {"authorization": "Bearer nope"}
        assert GrpcExporter(endpoint=target, insecure=True, headers=wrong).export(spans) is (
            SpanExportResult.FAILURE
        )
        assert HttpExporter(endpoint=srv.traces_url, headers=wrong).export(spans) is SpanExportResult.FAILURE
        r = httpx.post(srv.traces_url, content=b"", headers={"content-type": "application/x-protobuf"})
        assert r.status_code == 401
        assert srv.ledger_rows() == []
        good = {"authorization": "Bearer s3cret"}
        assert (
            GrpcExporter(endpoint=target, insecure=True, headers=good).export(spans)
            is SpanExportResult.SUCCESS
        )
        assert HttpExporter(endpoint=srv.traces_url, headers=good).export(spans) is SpanExportResult.SUCCESS
        assert len(srv.ledger_rows()) == 2
    finally:
        assert srv.stop() == 0


def test_overload_makes_standard_exporters_retry_and_nothing_is_lost(tmp_path: Path) -> None:
    srv = Server(tmp_path, "--max-pending-spans", "40", env={"OTEL_AIBILL_RECEIVER_COMMIT_DELAY_MS": "200"})
    try:
        batches = [genai_spans(20, prefix=f"{i}-") for i in range(8)]
        results: list[SpanExportResult] = []

        def send(i: int, spans: list[ReadableSpan]) -> None:
            exporter: SpanExporter
            if i % 2:
                exporter = GrpcExporter(endpoint=f"127.0.0.1:{srv.grpc_port}", insecure=True, timeout=60)
            else:
                exporter = HttpExporter(endpoint=srv.traces_url, timeout=60)
            results.append(exporter.export(spans))

        threads = [threading.Thread(target=send, args=(i, b)) for i, b in enumerate(batches)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == [SpanExportResult.SUCCESS] * 8
        rows = srv.ledger_rows()
        assert len(rows) == 160 and _row_ids(rows) == set().union(*(_ids(b) for b in batches))
        assert srv.metric("otel_aibill_receiver_overloaded_total") > 0  # backpressure did happen
    finally:
        assert srv.stop() == 0


def test_overload_replies_carry_retry_hints(tmp_path: Path) -> None:
    srv = Server(tmp_path, "--max-pending-spans", "1", env={"OTEL_AIBILL_RECEIVER_COMMIT_DELAY_MS": "1500"})
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        first = encode_spans(genai_spans(1, prefix="x")).SerializeToString()
        second = encode_spans(genai_spans(1, prefix="y")).SerializeToString()
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            export = channel.unary_unary(EXPORT)
            pending = export.future(first, timeout=30)
            time.sleep(0.5)  # the first request now waits on its slow commit, filling the queue
            with pytest.raises(grpc.RpcError) as info:
                export(second, timeout=30)
            trailers = dict(info.value.trailing_metadata())
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
            assert retry.retry_delay.seconds >= 1
            status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
            assert status.code == 14 and status.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)
            r = httpx.post(srv.traces_url, content=second, headers={"content-type": "application/x-protobuf"})
            assert r.status_code in (429, 503) and int(r.headers["retry-after"]) >= 1
            pending.result()
        assert len(srv.ledger_rows()) == 1
    finally:
        assert srv.stop() == 0


def test_sigterm_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    srv = Server(tmp_path, env={"OTEL_AIBILL_RECEIVER_COMMIT_DELAY_MS": "20"})
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    acked: set[tuple[str, str]] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            export = channel.unary_unary(EXPORT)
            i = 0
            while not stop.is_set():
                spans = genai_spans(10, prefix=f"{worker}-{i}-")
                i += 1
                try:
                    reply = ts.ExportTraceServiceResponse.FromString(
                        export(encode_spans(spans).SerializeToString(), timeout=10)
                    )
                except grpc.RpcError:
                    continue  # not acknowledged: the client would retry elsewhere
                assert reply.partial_success.rejected_spans == 0
                with lock:
                    acked.update(_ids(spans))

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(60)
    stop.set()
    for t in threads:
        t.join(30)
    assert code == 0, srv.log.read_text()
    stored = _row_ids(srv.ledger_rows())
    assert len(acked) >= 200
    assert acked <= stored  # everything acknowledged was committed
