"""OTLP/protobuf ExportTraceServiceRequest → ``SpanView``s, reading only what billing needs.

Speed trick: the request is parsed with a *view* schema built at import time. It has the same
field numbers as ``opentelemetry.proto.trace.v1`` but declares ``attributes`` as
``map<string, bytes>``: a ``KeyValue`` (key = 1, value = 2) is byte-for-byte a map entry, and a
length-delimited ``AnyValue`` reads as ``bytes``. upb then builds the key → raw value dict in C,
and scalar values are decoded from their few bytes through a cache (GenAI attribute values repeat
a lot: provider, model, operation). Fields billing never reads (events, links, status) are left
as unknown fields. This is about twice as fast as walking the generated classes; the JSON test
suite cross-checks both paths against the generated classes.

What the view skips is not checked by it (invalid UTF-8 in ``trace_state`` or an event, say),
and a map keeps only the last of repeated keys, so every request is first parsed by the
reference parser (the generated ``ExportTraceServiceRequest``, upb, in C, nothing read from it):
a request it refuses is refused, one it accepts the view reads. That pass costs ~0.7 µs a
span, 8-17 % of decoding (``benchmarks/bench_decode.py``).
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as _PbDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2

from otel_aibill.receiver.otlp_common import (
    MAX_ATTRIBUTE_BYTES,
    Decoded,
    DecodeError,
    check_ids,
    new_span_view,
)
from otel_aibill.usage import AttrValue

_PKG = "otel_aibill.otlp_view"
_F = descriptor_pb2.FieldDescriptorProto


def _build_view_request() -> Any:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="otel_aibill/otlp_view.proto", package=_PKG, syntax="proto3"
    )
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

    def message(name: str, fields: list[tuple[str, int, int, int, str]], with_attrs: int = 0) -> None:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PKG}.{type_name}"
        if with_attrs:
            entry = msg.nested_type.add(name="AttributesEntry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
            entry.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=opt)
            msg.field.add(
                name="attributes",
                number=with_attrs,
                type=_F.TYPE_MESSAGE,
                label=rep,
                type_name=f".{_PKG}.{name}.AttributesEntry",
            )

    message("Resource", [], with_attrs=1)
    message("Scope", [("name", 1, _F.TYPE_STRING, opt, ""), ("version", 2, _F.TYPE_STRING, opt, "")])
    message(
        "Span",
        [
            ("trace_id", 1, _F.TYPE_BYTES, opt, ""),
            ("span_id", 2, _F.TYPE_BYTES, opt, ""),
            ("parent_span_id", 4, _F.TYPE_BYTES, opt, ""),
            ("name", 5, _F.TYPE_STRING, opt, ""),
            ("start_time_unix_nano", 7, _F.TYPE_FIXED64, opt, ""),
            ("end_time_unix_nano", 8, _F.TYPE_FIXED64, opt, ""),
        ],
        with_attrs=9,
    )
    message(
        "ScopeSpans",
        [("scope", 1, _F.TYPE_MESSAGE, opt, "Scope"), ("spans", 2, _F.TYPE_MESSAGE, rep, "Span")],
    )
    message(
        "ResourceSpans",
        [
            ("resource", 1, _F.TYPE_MESSAGE, opt, "Resource"),
            ("scope_spans", 2, _F.TYPE_MESSAGE, rep, "ScopeSpans"),
        ],
    )
    message("Request", [("resource_spans", 1, _F.TYPE_MESSAGE, rep, "ResourceSpans")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.Request"))


_ViewRequest = _build_view_request()
_DOUBLE = struct.Struct("<d")
_MASK64 = (1 << 64) - 1
_SKIP = object()  # an attribute value billing cannot use (kvlist, bytes, mixed arrays, empty)


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = raw[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _scalar(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    return _SKIP


def decode_any_value(raw: bytes) -> Any:
    """Decode a serialized AnyValue; ``_SKIP`` for kinds billing cannot use."""
    if raw:
        tag = raw[0]
        if tag == 0x0A:  # string_value
            n, i = _varint(raw, 1)
            if i + n == len(raw):
                return raw[i:].decode("utf-8")
        elif tag == 0x18:  # int_value (int64, two's complement varint)
            n, i = _varint(raw, 1)
            if i == len(raw) and i <= 11:  # longer varints are malformed: let protobuf refuse them
                n &= _MASK64  # as protobuf does with a ten-byte varint's excess bits
                return n - (1 << 64) if n >= (1 << 63) else n
        elif tag == 0x21 and len(raw) == 9:  # double_value
            return _DOUBLE.unpack_from(raw, 1)[0]
        elif tag == 0x10 and len(raw) == 2:  # bool_value
            return raw[1] != 0
    # anything else (arrays, unusual encodings such as repeated fields): the generated class decides
    value = common_pb2.AnyValue.FromString(raw)
    if value.WhichOneof("value") == "array_value":
        items = [_scalar(v) for v in value.array_value.values]
        if items and all(type(x) is type(items[0]) for x in items) and items[0] is not _SKIP:
            return tuple(items)
        return _SKIP if items else ()
    return _scalar(value)


MAX_CACHED_BYTES = 256
"""Only values of at most this many encoded bytes are cached: the ones that repeat (provider,
model, operation, small counts) are short, and a long one would pin its bytes and its text."""


class _ValueCache(dict[bytes, Any]):
    """raw AnyValue bytes → python value; cleared when full, so it holds at most ``limit``
    values of at most ``MAX_CACHED_BYTES`` each (~45 MiB at worst with both copies and the
    dict, a few MiB in practice). Values over ``MAX_ATTRIBUTE_BYTES`` are not decoded."""

    __slots__ = ()
    limit = 65_536

    def __missing__(self, raw: bytes) -> Any:
        if len(raw) > MAX_CACHED_BYTES:
            return decode_any_value(raw) if len(raw) <= MAX_ATTRIBUTE_BYTES else _SKIP
        value = decode_any_value(raw)
        if len(self) >= self.limit:
            self.clear()
        self[raw] = value
        return value


_cache = _ValueCache()


def _attributes(raw_map: Any, out: Decoded) -> dict[str, AttrValue]:
    cache = _cache
    attrs = {key: cache[raw] for key, raw in raw_map.items()}
    if _SKIP in attrs.values():
        attrs = {k: v for k, v in attrs.items() if v is not _SKIP}
        out.dropped_attributes += sum(len(raw) > MAX_ATTRIBUTE_BYTES for raw in raw_map.values())
    return attrs


def decode_protobuf(data: bytes) -> Decoded:
    """Decode an ExportTraceServiceRequest; raises ``DecodeError`` when it is not one."""
    try:
        ExportTraceServiceRequest.FromString(data)  # the reference decides what is valid
        request = _ViewRequest.FromString(data)
    except (_PbDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"cannot parse ExportTraceServiceRequest: {exc}") from exc
    try:
        return _spans(request)
    except (UnicodeDecodeError, _PbDecodeError, IndexError) as exc:
        raise DecodeError(f"malformed attribute value: {exc}") from exc


def _spans(request: Any) -> Decoded:
    out = Decoded()
    append = out.spans.append
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes, out)
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            scope_version = ss.scope.version or None
            for s in ss.spans:
                trace_id = s.trace_id.hex()
                span_id = s.span_id.hex()
                parent = s.parent_span_id.hex() or None
                problem = check_ids(trace_id, span_id, parent)
                if problem is not None:
                    out.reject(problem)
                    continue
                append(
                    new_span_view(
                        trace_id,
                        span_id,
                        s.name,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        _attributes(s.attributes, out),
                        resource,
                        scope_name,
                        scope_version,
                        parent,
                    )
                )
    return out
