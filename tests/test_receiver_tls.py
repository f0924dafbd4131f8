"""``otel-aibill serve --tls-cert/--tls-key``: both OTLP receivers speak TLS only.

A self-signed certificate for 127.0.0.1 is made at test time with ``openssl``; the OpenTelemetry
SDK's own exporters trust it (gRPC through channel credentials, HTTP through ``certificate_file``)
and the spans they send are read back from the ledger.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from net_support import free_ports
from otel_aibill.ledger import open_ledger
from test_receiver_server import COST_1000_IN_200_OUT, _ids, _row_ids, genai_spans

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_grpc_and_http_over_tls_with_the_sdk_exporters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these variables override a session's own CA file, i.e. ``certificate_file``
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    cert, key = self_signed(tmp_path)
    db = tmp_path / "ledger.db"
    grpc_port, http_port, ui_port = free_ports(3)
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "otel_aibill.cli", "serve", "--db", f"sqlite:///{db}",
            "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--ui-port", str(ui_port),
            "--tls-cert", str(cert), "--tls-key", str(key),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )  # fmt: skip
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"https://127.0.0.1:{ui_port}/healthz", verify=trust, timeout=1).json()["ok"]:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()}")
            time.sleep(0.1)

        via_grpc, via_http = genai_spans(4, prefix="tls-g"), genai_spans(3, prefix="tls-h")
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        grpc_exp = GrpcExporter(endpoint=f"127.0.0.1:{grpc_port}", credentials=credentials, timeout=10)
        http_exp = HttpExporter(
            endpoint=f"https://127.0.0.1:{http_port}/v1/traces", certificate_file=str(cert), timeout=10
        )
        assert grpc_exp.export(via_grpc) is SpanExportResult.SUCCESS
        assert http_exp.export(via_http) is SpanExportResult.SUCCESS
        grpc_exp.shutdown()
        http_exp.shutdown()

        # plaintext is not served on the TLS ports
        with pytest.raises(httpx.HTTPError):
            httpx.post(
                f"http://127.0.0.1:{http_port}/v1/traces",
                content=b"",
                headers={"content-type": "application/x-protobuf"},
                timeout=5,
            )
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(
                    b"", timeout=5
                )
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()

    ledger = open_ledger(f"sqlite:///{db}")
    try:
        rows = ledger.rows(limit=100)
    finally:
        ledger.close()
    assert _row_ids(rows) == _ids(via_grpc) | _ids(via_http)
    assert all(r.priced.usage.customer == "acme" and r.priced.cost == COST_1000_IN_200_OUT for r in rows)
