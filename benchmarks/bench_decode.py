"""OTLP/protobuf decoding: the receiver's view decoder against the reference parser, one process.

    .venv/bin/python benchmarks/bench_decode.py [--rounds 5]

Payloads are the receiver benchmark's 512 GenAI spans (``bench_receiver.template``), plain and
with what real spans also carry (two events with attributes, a status, a trace state, a link).
"view alone" is the view decoder without the reference parser's check that the decoder runs
first. The reference is what the decoder must agree with: ``ExportTraceServiceRequest.FromString``
(upb) and a walk reading the same fields into dicts. Cases are interleaved in rounds and the
best round kept; compare the ratios, which are measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2

sys.path.insert(0, str(Path(__file__).parent))
from bench_receiver import SPANS_PER_REQUEST, Payloads

from otel_aibill.receiver import otlp_protobuf
from otel_aibill.receiver.otlp_protobuf import decode_protobuf


def view_alone(body: bytes) -> object:
    """The view decoder without the reference parser's check (what it was before the check)."""
    return otlp_protobuf._spans(otlp_protobuf._ViewRequest.FromString(body))


def _value(v: common_pb2.AnyValue) -> object:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def reference(body: bytes) -> int:
    """Parse with the generated classes and read ids, times and attributes, as the decoder does."""
    request = ts.ExportTraceServiceRequest.FromString(body)
    n = 0
    for rs in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            scope = (ss.scope.name, ss.scope.version)
            for s in ss.spans:
                attrs = {kv.key: _value(kv.value) for kv in s.attributes}
                _ = (s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name)
                _ = (s.start_time_unix_nano, s.end_time_unix_nano, attrs, resource, scope)
                n += 1
    return n


def with_extras(req: ts.ExportTraceServiceRequest) -> bytes:
    rich = ts.ExportTraceServiceRequest()
    rich.CopyFrom(req)
    for s in rich.resource_spans[0].scope_spans[0].spans:
        s.trace_state = "vendor=abc"
        s.status.code = 1
        for name in ("gen_ai.content.prompt", "gen_ai.content.completion"):
            event = s.events.add(name=name, time_unix_nano=s.start_time_unix_nano)
            event.attributes.add(key="gen_ai.prompt", value=common_pb2.AnyValue(string_value="hi " * 20))
        s.links.add(trace_id=s.trace_id, span_id=s.span_id)
    return rich.SerializeToString()


def rate(decode: Callable[[bytes], object], body: bytes, seconds: float) -> float:
    decode(body)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        decode(body)
        n += SPANS_PER_REQUEST
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per case and round")
    args = parser.parse_args()
    payloads = Payloads()
    bodies = {"plain": payloads.proto, "events+status+link": with_extras(payloads.req)}
    decoders = {
        "view decoder": decode_protobuf,
        "view alone": view_alone,
        "reference (generated classes)": reference,
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for body_name, body in bodies.items():
            for dec_name, decode in decoders.items():
                key = (body_name, dec_name)
                best[key] = max(best.get(key, 0.0), rate(decode, body, args.seconds))
    for body_name, body in bodies.items():
        view, ref = best[(body_name, "view decoder")], best[(body_name, "reference (generated classes)")]
        alone = best[(body_name, "view alone")]
        print(
            f"{body_name:<20} {len(body):>7} bytes: decoder {view:>9,.0f} spans/s, "
            f"view alone {alone:>9,.0f}, reference {ref:>9,.0f}; "
            f"decoder/view alone {view / alone:.2f}, decoder/reference {view / ref:.2f}"
        )


if __name__ == "__main__":
    main()
