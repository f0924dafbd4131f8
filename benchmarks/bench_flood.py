"""Peak memory of ``otel-aibill serve`` under large-value floods (the report's reproductions).

    .venv/bin/python benchmarks/bench_flood.py [--requests 24] [--value-mib 30]

1. ``--requests`` OTLP/HTTP requests, 4 at a time, each carrying a distinct ``--value-mib`` MiB
   attribute value on a billable span: the server's RSS after, and its peak (VmHWM).
2. Eight concurrent unauthenticated 60 MiB gRPC messages to a server that requires a token.
Figures are the server's own (``/proc``), against its RSS at start in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2

sys.path.insert(0, str(Path(__file__).parent))
from bench_receiver import EXPORT, ServerProc

MIB = 1024 * 1024


def request(i: int, value_mib: int) -> bytes:
    req = ts.ExportTraceServiceRequest()
    span = (
        req.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"), name="chat gpt-4o-mini"
        )
    )
    span.start_time_unix_nano, span.end_time_unix_nano = 1_765_000_000_000_000_000, 1_765_000_001_000_000_000
    for key, value in (
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o-mini"),
        ("customer.id", "acme"),
        ("gen_ai.prompt", chr(ord("a") + i % 26) * (value_mib * MIB - 1) + str(i)),
    ):
        span.attributes.add(key=key, value=common_pb2.AnyValue(string_value=value))
    span.attributes.add(key="gen_ai.usage.input_tokens", value=common_pb2.AnyValue(int_value=10))
    span.attributes.add(key="gen_ai.usage.output_tokens", value=common_pb2.AnyValue(int_value=5))
    return req.SerializeToString()


def parallel(n: int, fn: object) -> None:
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--value-mib", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProc(Path(tmp) / "flood.db")
        try:
            start = server.rss_mib()[0]
            url = f"http://127.0.0.1:{server.ports['http']}/v1/traces"
            statuses: list[int] = []
            lock = threading.Lock()
            left = list(range(args.requests))

            def send(_: int) -> None:
                with httpx.Client(timeout=300) as client:
                    while True:
                        with lock:
                            if not left:
                                return
                            i = left.pop()
                        r = client.post(
                            url,
                            content=request(i, args.value_mib),
                            headers={"content-type": "application/x-protobuf"},
                        )
                        with lock:
                            statuses.append(r.status_code)

            parallel(4, send)
            rss, peak = server.rss_mib()
            print(
                f"HTTP flood: {args.requests} requests with a distinct {args.value_mib} MiB value "
                f"(status {sorted(set(statuses))}): RSS {start:.0f} MiB at start, {rss:.0f} MiB after, "
                f"peak {peak:.0f} MiB"
            )
        finally:
            server.stop()

        os.environ["OTEL_AIBILL_AUTH_TOKEN"] = "bench-token"  # the server requires a token
        server = ServerProc(Path(tmp) / "auth.db")
        try:
            start = server.rss_mib()[0]
            body = b"\x0a" + b"\x00" * (60 * MIB)
            codes: list[str] = []

            def unauthenticated(_: int) -> None:
                with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
                    try:
                        channel.unary_unary(EXPORT)(body, timeout=120)
                    except grpc.RpcError as exc:
                        codes.append(exc.code().name)

            parallel(8, unauthenticated)
            rss, peak = server.rss_mib()
            print(
                f"gRPC: 8 concurrent unauthenticated 60 MiB messages ({sorted(set(codes))}): "
                f"RSS {start:.0f} MiB "
                f"at start, {rss:.0f} MiB after, peak {peak:.0f} MiB"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
