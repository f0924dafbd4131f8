"""The proof under crashes: ``serve`` killed with SIGKILL again and again while the OpenTelemetry
SDK's gRPC and HTTP exporters keep sending (and retrying); afterwards every acknowledged span is
in the ledger exactly once, with the exact cost. Bounded in time: ten kills take ~30 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from net_support import free_ports
from otel_aibill.ledger import open_ledger
from test_receiver_server import COST_1000_IN_200_OUT, _ids, genai_spans

KILLS = 10
BATCH = 20


class Restartable:
    """``serve`` on fixed ports and one ledger, started again after each kill."""

    def __init__(self, tmp: Path) -> None:
        self.url = f"sqlite:///{tmp / 'ledger.db'}"
        self.grpc_port, self.http_port, self.ui_port = free_ports(3)
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "otel_aibill.cli", "serve", "--db", self.url]
        cmd += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        cmd += ["--ui-port", str(self.ui_port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.ui_port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(60) == 0


def test_sigkill_loses_nothing_acknowledged_and_bills_nothing_twice(tmp_path: Path) -> None:
    server = Restartable(tmp_path)
    server.start()
    acked: set[tuple[str, str]] = set()
    sent: set[tuple[str, str]] = set()
    lock = threading.Lock()
    stop = threading.Event()
    attempts = {"failed": 0}

    def load(worker: int, exporter: GrpcExporter | HttpExporter) -> None:
        i = 0
        while not stop.is_set():
            spans = genai_spans(BATCH, prefix=f"{worker}-{i}-")
            i += 1
            with lock:
                sent.update(_ids(spans))
            # as an exporter behind a retrying queue does: the same batch until it is acknowledged
            while exporter.export(spans) is not SpanExportResult.SUCCESS:
                with lock:
                    attempts["failed"] += 1
                time.sleep(0.05)
            with lock:
                acked.update(_ids(spans))

    grpc_target = f"127.0.0.1:{server.grpc_port}"
    http_url = f"http://127.0.0.1:{server.http_port}/v1/traces"
    exporters: list[GrpcExporter | HttpExporter] = [
        GrpcExporter(endpoint=grpc_target, insecure=True, timeout=5),
        GrpcExporter(endpoint=grpc_target, insecure=True, timeout=5),
        HttpExporter(endpoint=http_url, timeout=5),
        HttpExporter(endpoint=http_url, timeout=5),
    ]
    threads = [threading.Thread(target=load, args=w, daemon=True) for w in enumerate(exporters)]
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            with lock:
                target = len(acked) + 4 * BATCH
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with lock:
                    if len(acked) >= target:
                        break
                time.sleep(0.02)
            server.kill()
            server.start()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.stop()
    assert not any(t.is_alive() for t in threads)

    ledger = open_ledger(server.url)
    try:
        rows = ledger.rows(limit=10_000_000)
    finally:
        ledger.close()
    stored = [(r.priced.usage.trace_id, r.priced.usage.span_id) for r in rows]
    assert len(acked) >= KILLS * 4 * BATCH
    assert attempts["failed"] > 0  # the kills were felt
    assert acked <= set(stored)  # nothing acknowledged lost
    assert len(stored) == len(set(stored))  # nothing billed twice
    assert set(stored) <= sent
    assert sum((r.priced.cost for r in rows), Decimal(0)) == COST_1000_IN_200_OUT * len(stored)
    print(
        f"kills {KILLS}, spans acknowledged {len(acked)}, stored {len(stored)},"
        f" failed exports {attempts['failed']}"
    )
