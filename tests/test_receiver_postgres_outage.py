"""The receiver on a PostgreSQL ledger whose database goes away and comes back.

The database is reached through a TCP proxy the test stops (every connection cut, nothing
listening) and starts again. While it is down, OTLP/HTTP answers 503 with ``Retry-After`` and
OTLP/gRPC UNAVAILABLE with a retry hint, and nothing is acknowledged; the SDK's own exporters
keep retrying, and once the database is back their spans are billed, each exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_aibill.ledger import open_ledger
from pg_support import BASE_URL, fresh_schema, with_schema
from tcp_proxy import TcpProxy
from test_receiver_server import EXPORT, Server, _ids, _row_ids, genai_spans


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Server, TcpProxy, str]]:
    """A receiver whose ledger's database is behind a proxy, and the direct URL of that ledger."""
    host, _, rest = BASE_URL.removeprefix("postgresql://").partition(":")
    port = int(rest.partition("/")[0] or 5432)
    proxy = TcpProxy((host, port))
    with fresh_schema("outage") as direct:
        schema = direct.rpartition("schema=")[2]
        through = with_schema(
            schema, f"postgresql://{host}:{proxy.port}/{rest.partition('/')[2].partition('?')[0]}"
        )
        srv = Server(tmp_path, db=through)
        try:
            yield srv, proxy, direct
        finally:
            if not proxy.running:
                proxy.start()  # let the receiver drain and stop cleanly
            srv.stop()
            proxy.stop()


def _export_in_thread(
    exporter: HttpExporter | GrpcExporter, spans: list[ReadableSpan], out: list[object]
) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.append(exporter.export(spans)))
    thread.start()
    return thread


def test_a_database_outage_makes_clients_retry_and_loses_or_doubles_nothing(
    proxied: tuple[Server, TcpProxy, str],
) -> None:
    srv, proxy, direct = proxied
    before = genai_spans(4, prefix="before-")
    assert HttpExporter(endpoint=srv.traces_url).export(before) is SpanExportResult.SUCCESS

    proxy.stop()
    refused = genai_spans(3, prefix="refused-")
    body = encode_spans(refused).SerializeToString()
    reply = httpx.post(
        srv.traces_url, content=body, headers={"content-type": "application/x-protobuf"}, timeout=60
    )
    assert reply.status_code == 503 and int(reply.headers["retry-after"]) >= 1
    with (
        grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel,
        pytest.raises(grpc.RpcError) as failed,
    ):
        channel.unary_unary(EXPORT)(body, timeout=60)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE

    # the SDK exporters retry (503 / UNAVAILABLE) until the database is back
    via_http, via_grpc = genai_spans(5, prefix="http-"), genai_spans(6, prefix="grpc-")
    results: list[object] = []
    threads = [
        _export_in_thread(HttpExporter(endpoint=srv.traces_url, timeout=60), via_http, results),
        _export_in_thread(
            GrpcExporter(endpoint=f"127.0.0.1:{srv.grpc_port}", insecure=True, timeout=60), via_grpc, results
        ),
    ]
    time.sleep(3)
    assert not results  # nothing acknowledged while the database is down
    proxy.start()
    for thread in threads:
        thread.join(90)
    assert results == [SpanExportResult.SUCCESS] * 2
    # the request refused during the outage is sent again, the first one redelivered: no-ops
    assert HttpExporter(endpoint=srv.traces_url).export(refused) is SpanExportResult.SUCCESS
    assert HttpExporter(endpoint=srv.traces_url).export(before) is SpanExportResult.SUCCESS

    ledger = open_ledger(direct)
    try:
        rows = ledger.rows(limit=10_000)
    finally:
        ledger.close()
    assert len(rows) == 4 + 3 + 5 + 6
    assert _row_ids(rows) == _ids(before) | _ids(refused) | _ids(via_http) | _ids(via_grpc)
    assert srv.metric("otel_aibill_spans_billed_total") == 18
    assert srv.stop() == 0
