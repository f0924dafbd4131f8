"""Sustained OTLP ingest through `otel-aibill serve` into SQLite, acknowledged after commit.

    .venv/bin/python benchmarks/bench_receiver.py [--spans 300000] [--concurrency 8] [--long]

Starts the server as a subprocess, sends 512-span requests of GenAI spans (~10 attributes each,
every span and response id unique) from client threads that each wait for the acknowledgement,
and reports acked spans/s per transport next to a decode-only baseline (parse + read the needed
attributes with the receiver's own decoder) of the same payload in the same run, with the time
the single committing thread spent per span (from the server's commit histogram) and the server
process's CPU time per span. ``--long`` sends
5M spans over gRPC and samples the server's RSS to show it stays flat.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2

from otel_aibill.receiver.otlp_json import decode_json
from otel_aibill.receiver.otlp_protobuf import decode_protobuf

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MARK = b"\xa5\x5a\xa5\x5a\xa5\x5a\xa5\x5a"  # first 8 bytes of every trace id, replaced per request
RESPONSE_MARK = "R" * 16  # part of every response id, replaced per request: provider ids are unique
SPANS_PER_REQUEST = 512


def _kv(key: str, value: object) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        v = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = common_pb2.AnyValue(int_value=value)
    elif isinstance(value, float):
        v = common_pb2.AnyValue(double_value=value)
    else:
        v = common_pb2.AnyValue(string_value=str(value))
    return common_pb2.KeyValue(key=key, value=v)


def template() -> ts.ExportTraceServiceRequest:
    req = ts.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "chat-api"), _kv("deployment.environment", "prod")])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    now = time.time_ns()
    for i in range(SPANS_PER_REQUEST):
        s = ss.spans.add(trace_id=MARK + i.to_bytes(8, "big"), span_id=(i + 1).to_bytes(8, "big"))
        s.name, s.kind = "chat gpt-4o-mini", 3
        s.start_time_unix_nano, s.end_time_unix_nano = now, now + 900_000_000
        s.attributes.extend(
            [
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.provider.name", "openai"),
                _kv("gen_ai.request.model", "gpt-4o-mini"),
                _kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
                _kv("gen_ai.usage.input_tokens", 1000 + i),
                _kv("gen_ai.usage.output_tokens", 200),
                _kv("gen_ai.response.id", f"chatcmpl-{RESPONSE_MARK}-{i}"),
                _kv("server.address", "api.openai.com"),
                _kv("gen_ai.request.temperature", 0.7),
                _kv("customer.id", f"cust-{i % 50}"),
            ]
        )
    return req


def json_template(req: ts.ExportTraceServiceRequest) -> str:
    def value(v: common_pb2.AnyValue) -> dict[str, object]:
        kind = v.WhichOneof("value")
        if kind == "int_value":
            return {"intValue": str(v.int_value)}
        return {
            {"string_value": "stringValue", "double_value": "doubleValue", "bool_value": "boolValue"}[
                kind
            ]: getattr(v, kind)
        }

    def attrs(items: object) -> list[dict[str, object]]:
        return [{"key": kv.key, "value": value(kv.value)} for kv in items]  # type: ignore[attr-defined]

    rs = req.resource_spans[0]
    ss = rs.scope_spans[0]
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": attrs(rs.resource.attributes)},
                "scopeSpans": [
                    {
                        "scope": {"name": ss.scope.name},
                        "spans": [
                            {
                                "traceId": s.trace_id.hex(),
                                "spanId": s.span_id.hex(),
                                "name": s.name,
                                "kind": s.kind,
                                "startTimeUnixNano": str(s.start_time_unix_nano),
                                "endTimeUnixNano": str(s.end_time_unix_nano),
                                "attributes": attrs(s.attributes),
                            }
                            for s in ss.spans
                        ],
                    }
                ],
            }
        ]
    }
    return json.dumps(doc)


class Payloads:
    """Unique requests made cheaply: the template with a fresh 8-byte trace-id prefix."""

    def __init__(self) -> None:
        self.req = template()
        self.proto = self.req.SerializeToString()
        self.json = json_template(self.req)

    def next_proto(self) -> bytes:
        unique = random.randbytes(8)
        return self.proto.replace(MARK, unique).replace(RESPONSE_MARK.encode(), unique.hex().encode())

    def next_json(self) -> bytes:
        unique = random.randbytes(8).hex()
        return self.json.replace(MARK.hex(), unique).replace(RESPONSE_MARK, unique).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProc:
    def __init__(self, db: Path) -> None:
        self.ports = {k: free_port() for k in ("grpc", "http", "ui")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_aibill.cli",
                "serve",
                "--db",
                f"sqlite:///{db}",
                "--grpc-port",
                str(self.ports["grpc"]),
                "--http-port",
                str(self.ports["http"]),
                "--ui-port",
                str(self.ports["ui"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{self.ports['ui']}/healthz", timeout=1).json()["ok"]:
                    return
            except (httpx.HTTPError, ValueError):
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def rss_mib(self) -> tuple[float, float]:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def commit_totals(self) -> tuple[float, float]:
        """(seconds spent in group commits, spans committed) from the server's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.ports['ui']}/metrics", timeout=10).text
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        return (
            float(values["otel_aibill_ledger_commit_seconds_sum"]),
            float(values["otel_aibill_ledger_commit_spans_sum"]),
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def drive(
    send: Callable[[], None], total_spans: int, concurrency: int, on_tick: Callable[[int], None] | None = None
) -> float:
    """Run ``send`` (one acknowledged 512-span request) from threads; return acked spans/s."""
    requests = total_spans // SPANS_PER_REQUEST
    lock = threading.Lock()
    state = {"left": requests, "done": 0}

    def worker() -> None:
        while True:
            with lock:
                if state["left"] == 0:
                    return
                state["left"] -= 1
            send()
            with lock:
                state["done"] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(1.0)  # returns as soon as the thread ends: the clock is read right after the last
            if on_tick:
                on_tick(state["done"] * SPANS_PER_REQUEST)
    return requests * SPANS_PER_REQUEST / (time.perf_counter() - started)


def decode_rate(decode: Callable[[bytes], object], payload: bytes, seconds: float = 3.0) -> float:
    decode(payload)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        decode(payload)
        n += SPANS_PER_REQUEST
    return n / (time.perf_counter() - started)


class _Timed:
    """Wraps a once-per-batch call and adds up its time (per-span calls are not wrapped: the
    wrapper's own cost would show up as theirs)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.seconds = 0.0

    def __call__(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.fn(*args)
        finally:
            self.seconds += time.perf_counter() - started


def stages(payloads: Payloads, rounds: int = 3) -> None:
    """Work per span in this process on the same payload, by stage: the committing thread used to
    run all of ``ingest``; it now runs only ``commit``, the request threads ``prepare``.
    8,192-span batches, as the committer groups them; best of ``rounds`` against noisy neighbours.

    ``prepare`` runs per 512-span request right after its decode, as on a request thread, and is
    split into pricing (``Pricer.price`` over the request's usages again, timed on its own)
    and the rest (customer ids and extraction); ``commit`` into the nested-call rule, the ledger
    append and the ledger's trace-customer and pending-usage lookups (each timed around its few
    calls per batch) and the rest."""
    from otel_aibill.ledger import open_ledger
    from otel_aibill.pipeline import Pipeline, Prepared

    best: dict[str, float] = {}
    group = 8192 // SPANS_PER_REQUEST
    with tempfile.TemporaryDirectory() as tmp:
        ledger = open_ledger(f"sqlite:///{Path(tmp) / 'stages.db'}")
        pipeline = Pipeline(ledger)
        append = _Timed(ledger.append)
        nesting = _Timed(pipeline._calls.decide)
        pending = _Timed(ledger.pending_attribution)
        named = _Timed(ledger.trace_customers)
        ledger.append = append  # type: ignore[method-assign]
        ledger.pending_attribution = pending  # type: ignore[method-assign]
        ledger.trace_customers = named  # type: ignore[method-assign]
        pipeline._calls.decide = nesting  # type: ignore[method-assign]
        price = pipeline.pricer.price
        for _ in range(rounds):
            timings = dict.fromkeys(("decode", "prepare", "pricing", "commit", "ingest"), 0.0)
            append.seconds = nesting.seconds = pending.seconds = named.seconds = 0.0
            spans = 0
            for _batch in range(4):
                parts = []
                for _ in range(group):  # as a request thread does: decode, then prepare at once
                    t0 = time.perf_counter()
                    request = decode_protobuf(payloads.next_proto()).spans
                    t1 = time.perf_counter()
                    part = pipeline.prepare(request)
                    t2 = time.perf_counter()
                    for usage in part.usages:
                        price(usage)
                    t3 = time.perf_counter()
                    parts.append(part)
                    timings["decode"] += t1 - t0
                    timings["prepare"] += t2 - t1
                    timings["pricing"] += t3 - t2
                prepared = Prepared.merge(parts)
                t0 = time.perf_counter()
                pipeline.commit(prepared)
                timings["commit"] += time.perf_counter() - t0
                spans += len(prepared.spans)
            commit_append, commit_nesting = append.seconds, nesting.seconds
            commit_lookups = pending.seconds + named.seconds
            for _batch in range(4):
                fresh = [s for _ in range(group) for s in decode_protobuf(payloads.next_proto()).spans]
                t0 = time.perf_counter()
                pipeline.ingest(fresh)
                timings["ingest"] += time.perf_counter() - t0
            timings["extract"] = timings["prepare"] - timings["pricing"]
            timings["nesting"] = commit_nesting
            timings["append"] = commit_append
            timings["lookups"] = commit_lookups
            timings["commit_rest"] = timings["commit"] - commit_nesting - commit_append - commit_lookups
            timings["outside_ledger"] = timings["prepare"] + timings["commit_rest"] + commit_nesting
            for name, total in timings.items():
                best[name] = min(best.get(name, float("inf")), 1e6 * total / spans)
        ledger.close()
    print(
        "per span, one thread: decode {decode:.1f} us, prepare {prepare:.1f} us, commit {commit:.1f} us; "
        "ingest (prepare + commit, what the committer ran before) {ingest:.1f} us".format(**best)
    )
    print(f"single-writer work: commit / ingest = {best['commit'] / best['ingest']:.2f}")
    print(
        "  prepare: customer ids + extraction {extract:.2f} us, pricing {pricing:.2f} us\n"
        "  commit:  same-call rule {nesting:.2f} us, ledger append {append:.2f} us, "
        "ledger lookups (trace customers, pending usage) {lookups:.2f} us, rest {commit_rest:.2f} us\n"
        "  outside the ledger (prepare + same-call rule + rest of commit): {outside_ledger:.2f} us".format(
            **best
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=300_000, help="spans per transport")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--long", action="store_true", help="5M spans over gRPC, sampling server RSS")
    parser.add_argument("--stages", action="store_true", help="only the in-process per-stage timings")
    parser.add_argument(
        "--gc",
        choices=("default", "off", "tuned"),
        default="default",
        help="with --stages: cyclic GC as is, off, or frozen after start-up with a 50,000 gen-0 threshold",
    )
    args = parser.parse_args()
    payloads = Payloads()
    print(
        f"payload: {SPANS_PER_REQUEST} spans, {len(payloads.proto)} bytes protobuf, "
        f"{len(payloads.json)} bytes JSON"
    )
    if args.stages:
        if args.gc == "off":
            gc.disable()
        elif args.gc == "tuned":
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        stages(payloads)
        return
    base_pb = decode_rate(decode_protobuf, payloads.next_proto())
    base_json = decode_rate(decode_json, payloads.next_json())
    print(f"decode-only baseline: protobuf {base_pb:,.0f} spans/s, JSON {base_json:,.0f} spans/s")

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProc(Path(tmp) / "bench.db")
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}")
            export = channel.unary_unary(EXPORT)
            url = f"http://127.0.0.1:{server.ports['http']}/v1/traces"
            client = httpx.Client(limits=httpx.Limits(max_connections=args.concurrency * 2), timeout=120)

            def grpc_send() -> None:
                export(payloads.next_proto(), timeout=120)

            def http_send(json_body: bool) -> Callable[[], None]:
                def send() -> None:
                    body = payloads.next_json() if json_body else payloads.next_proto()
                    ctype = "application/json" if json_body else "application/x-protobuf"
                    r = client.post(url, content=body, headers={"content-type": ctype})
                    r.raise_for_status()

                return send

            if args.long:
                total = 5_000_000
                samples: list[tuple[int, float]] = []

                def tick(done: int) -> None:
                    samples.append((done, server.rss_mib()[0]))

                rate = drive(grpc_send, total, args.concurrency, tick)
                rss, hwm = server.rss_mib()
                print(
                    f"long gRPC run: {total:,} spans at {rate:,.0f} spans/s; server RSS now {rss:.0f} MiB, "
                    f"peak {hwm:.0f} MiB"
                )
                for done, mib in samples[:: max(1, len(samples) // 10)]:
                    print(f"  after {done:>9,} spans: RSS {mib:.0f} MiB")
                return
            drive(grpc_send, 20 * SPANS_PER_REQUEST, args.concurrency)  # warm-up
            runs = {
                "grpc/protobuf": (grpc_send, args.spans),
                "http/protobuf": (http_send(False), args.spans),
                "http/json": (http_send(True), args.spans // 2),
            }
            for name, (send, spans) in runs.items():
                cpu0, (commit0, committed0) = server.cpu_seconds(), server.commit_totals()
                started = time.perf_counter()
                rate = drive(send, spans, args.concurrency)
                wall = time.perf_counter() - started
                cpu1, (commit1, committed1) = server.cpu_seconds(), server.commit_totals()
                n = committed1 - committed0
                base = base_json if name == "http/json" else base_pb
                print(
                    f"{name:14s} {rate:>9,.0f} spans/s acked after commit; "
                    f"ratio to decode-only {rate / base:.2f}; "
                    f"committer {1e6 * (commit1 - commit0) / n:.1f} us/span "
                    f"(busy {100 * (commit1 - commit0) / wall:.0f} %), "
                    f"server CPU {1e6 * (cpu1 - cpu0) / n:.1f} us/span"
                )
            rss, hwm = server.rss_mib()
            print(f"server RSS {rss:.0f} MiB (peak {hwm:.0f} MiB)")
        finally:
            server.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
