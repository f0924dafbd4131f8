"""gRPC authentication happens from metadata before the message is received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts

from otel_aibill.ledger import open_ledger
from otel_aibill.pipeline import Pipeline
from otel_aibill.receiver.committer import GroupCommitter
from otel_aibill.receiver.grpc_server import build_grpc_server
from otel_aibill.receiver.ingest import Ingestor
from otel_aibill.receiver.metrics import ReceiverMetrics
from otel_aibill.receiver.settings import ReceiverSettings

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOKEN = "s3cret-token"
LIMIT = 4096


@pytest.fixture
def export(tmp_path: Path) -> Iterator[tuple[Any, Ingestor]]:
    url = f"sqlite:///{tmp_path / 'auth.db'}"

    def sink() -> Any:
        ledger = open_ledger(url)
        return Pipeline(ledger), ledger.close

    metrics = ReceiverMetrics()
    committer = GroupCommitter(sink, metrics)
    committer.start()
    ingestor = Ingestor(committer, metrics)
    settings = ReceiverSettings(
        grpc_port=0, http_port=0, ui_port=0, auth_token=TOKEN, max_message_bytes=LIMIT
    )
    server, port = build_grpc_server(ingestor, settings)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel.unary_unary(EXPORT), ingestor
    finally:
        channel.close()
        server.stop(None).wait()
        committer.close()


def _code(call: Any, body: bytes, token: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    try:
        call(body, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_an_unauthenticated_message_is_refused_without_being_received(export: tuple[Any, Ingestor]) -> None:
    """Over the receive limit: had the message been received first, grpcio would answer
    RESOURCE_EXHAUSTED; refused from metadata alone, it is UNAUTHENTICATED."""
    call, ingestor = export
    oversize = b"\x0a" + b"\xff" * (LIMIT * 16)
    assert _code(call, oversize, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(call, oversize, "wrong") == grpc.StatusCode.UNAUTHENTICATED
    assert _code(call, oversize, TOKEN) == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = ts.ExportTraceServiceRequest().SerializeToString()
    assert _code(call, ok, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(call, ok, TOKEN) == grpc.StatusCode.OK
    refused = ingestor.metrics.requests.labels("grpc", "unauthenticated")._value.get()
    assert refused == 3
