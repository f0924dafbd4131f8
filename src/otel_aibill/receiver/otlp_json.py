"""OTLP/JSON ExportTraceServiceRequest → ``SpanView``s, by hand.

Not ``google.protobuf.json_format``: OTLP/JSON differs from the proto3 JSON mapping (trace and span
ids are hex, not base64), int64 values may arrive as strings or numbers, and unknown fields must
be ignored. Keys are lowerCamelCase per the OTLP spec; the proto field names are accepted too,
as proto3 JSON parsers do.
"""

from __future__ import annotations

import json
import math
from typing import Any

from otel_aibill.receiver.otlp_common import (
    MAX_ATTRIBUTE_BYTES,
    Decoded,
    DecodeError,
    check_ids,
    new_span_view,
)
from otel_aibill.usage import AttrValue, SpanView

_HEX = frozenset("0123456789abcdef")
_SKIP = object()
_TOO_LARGE = object()  # a string over MAX_ATTRIBUTE_BYTES characters: dropped and counted


class _SpanError(ValueError):
    pass


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    if value is None and snake != camel:
        value = obj.get(snake)
    return value


_INT64 = range(-(1 << 63), 1 << 63)
_UINT64 = range(0, 1 << 64)
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _int(value: Any, what: str, bounds: range = _INT64) -> int:
    """A proto3 JSON 64-bit integer: a number, or a string of ASCII decimal digits, in range.

    Python's ``int(str)`` is laxer than the mapping (``"1_000"``, ``" 7"``, non-ASCII digits), so
    strings are checked first; out-of-range values are what a protobuf decoder would refuse.
    """
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str):
        digits = value[1:] if value[:1] == "-" else value
        if digits.isascii() and digits.isdigit():
            number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None:
        raise _SpanError(f"{what} is not an integer: {str(value)[:40]!r}")
    if number not in bounds:
        raise _SpanError(f"{what} is out of range: {str(value)[:40]!r}")
    return number


def _double(value: Any) -> float:
    if isinstance(value, bool):
        raise _SpanError("doubleValue is not a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in _SPECIAL_DOUBLES:  # proto3 JSON spells the non-finite values this way
            return _SPECIAL_DOUBLES[value]
        if value.isascii() and "_" not in value and value.strip() == value:
            try:
                number = float(value)  # proto3 JSON also accepts numbers as strings
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
    raise _SpanError(f"doubleValue is not a number: {str(value)[:40]!r}")


def _hex_id(value: Any, what: str) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise _SpanError(f"{what} is not a hex string")
    hex_id = str(value).lower()
    if not _HEX.issuperset(hex_id):
        raise _SpanError(f"{what} is not hex: {hex_id[:40]!r}")
    return hex_id


def _scalar(value: Any) -> Any:
    """An AnyValue billing can use as (part of) an attribute: string, int, double or bool.

    ``null`` is the proto3 JSON spelling of "not set", so a null member is passed over.
    """
    if not isinstance(value, dict):
        return _SKIP
    if (v := _get(value, "stringValue", "string_value")) is not None:
        if not isinstance(v, str):
            raise _SpanError("stringValue is not a string")
        return v if len(v) <= MAX_ATTRIBUTE_BYTES else _TOO_LARGE
    if (v := _get(value, "intValue", "int_value")) is not None:
        return _int(v, "intValue")
    if (v := _get(value, "doubleValue", "double_value")) is not None:
        return _double(v)
    if (v := _get(value, "boolValue", "bool_value")) is not None:
        if not isinstance(v, bool):
            raise _SpanError("boolValue is not a boolean")
        return v
    return _SKIP


def _any_value(value: Any) -> Any:
    """A scalar, or a homogeneous array of scalars; anything else (nested arrays, kvlistValue,
    bytesValue, an empty value) is ``_SKIP``, as in the protobuf decoder. Never recursive."""
    scalar = _scalar(value)
    if scalar is not _SKIP:
        return scalar  # _TOO_LARGE included
    array = _get(value, "arrayValue", "array_value") if isinstance(value, dict) else None
    if array is None:
        return _SKIP
    values = array.get("values") if isinstance(array, dict) else None
    items = [_scalar(x) for x in values or ()]
    if not items:
        return ()
    if _TOO_LARGE in items:
        return _TOO_LARGE
    if items[0] is not _SKIP and all(type(x) is type(items[0]) for x in items):
        return tuple(items)
    return _SKIP


def _attributes(items: Any, out: Decoded) -> dict[str, AttrValue]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise _SpanError("attributes is not a list")
    attrs: dict[str, AttrValue] = {}
    for item in items:
        if not isinstance(item, dict):
            raise _SpanError("attribute is not an object")
        key = item.get("key")
        if not isinstance(key, str):
            raise _SpanError("attribute key is not a string")
        value = _any_value(item.get("value"))
        if value is _TOO_LARGE:
            out.dropped_attributes += 1
        elif value is not _SKIP:
            attrs[key] = value
    return attrs


def _list(obj: dict[str, Any], camel: str, snake: str) -> list[Any]:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"{camel} is not a list")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"{what} is not an object")
    return value


def _span(
    s: Any, resource: dict[str, AttrValue], scope_name: str, scope_version: str | None, out: Decoded
) -> SpanView:
    if not isinstance(s, dict):
        raise _SpanError("span is not an object")
    trace_id = _hex_id(_get(s, "traceId", "trace_id"), "traceId")
    span_id = _hex_id(_get(s, "spanId", "span_id"), "spanId")
    parent = _hex_id(_get(s, "parentSpanId", "parent_span_id"), "parentSpanId") or None
    problem = check_ids(trace_id, span_id, parent)
    if problem is not None:
        raise _SpanError(problem)
    name = s.get("name") or ""
    if not isinstance(name, str):
        raise _SpanError(f"name of span {span_id} is not a string")
    start = _get(s, "startTimeUnixNano", "start_time_unix_nano")
    end = _get(s, "endTimeUnixNano", "end_time_unix_nano")
    return new_span_view(
        trace_id,
        span_id,
        name,
        _int(start, "startTimeUnixNano", _UINT64) if start is not None else 0,
        _int(end, "endTimeUnixNano", _UINT64) if end is not None else 0,
        _attributes(s.get("attributes"), out),
        resource,
        scope_name,
        scope_version,
        parent,
    )


def decode_json_obj(request: Any) -> Decoded:
    """Decode an already-parsed OTLP/JSON request object."""
    if not isinstance(request, dict):
        raise DecodeError("request is not a JSON object")
    out = Decoded()
    append = out.spans.append
    for rs in _list(request, "resourceSpans", "resource_spans"):
        rs = _object(rs, "resourceSpans item")
        try:
            resource = _attributes(_object(rs.get("resource"), "resource").get("attributes"), out)
        except _SpanError as exc:
            raise DecodeError(f"resource: {exc}") from exc
        for ss in _list(rs, "scopeSpans", "scope_spans"):
            ss = _object(ss, "scopeSpans item")
            scope = _object(ss.get("scope"), "scope")
            scope_name = scope.get("name") or ""
            scope_version = scope.get("version") or None
            if not isinstance(scope_name, str) or not isinstance(scope_version, str | None):
                raise DecodeError("scope name/version is not a string")
            for s in _list(ss, "spans", "spans"):
                try:
                    append(_span(s, resource, scope_name, scope_version, out))
                except _SpanError as exc:
                    out.reject(str(exc))
    return out


def decode_json(data: bytes | str) -> Decoded:
    """Decode an OTLP/JSON ExportTraceServiceRequest; raises ``DecodeError`` when it is not one."""
    try:
        request = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from exc
    return decode_json_obj(request)
