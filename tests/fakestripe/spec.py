"""Request validation against the transcribed Stripe OpenAPI subset (stripe-meters-openapi.json).

Form bodies are decoded the way Stripe does (``a[b]=1``, ``a[0]=x``, ``a[]=x``) and checked against
the operation's schema: unknown parameters, missing required ones, types, enums and lengths fail
with Stripe's ``invalid_request_error`` shapes. Products and prices are outside that subset; their
few parameters are described by hand below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

SPEC_PATH = Path(__file__).with_name("stripe-meters-openapi.json")
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def _add_meter_dimensions(spec: dict[str, Any]) -> None:
    """``dimension_payload_keys`` on meters: "set of keys that will be used to group meter events
    by; each key must be present in the event payload" (Stripe's .NET SDK and Terraform provider).
    The public spec transcribed above does not list it yet, though its error reports name
    ``missing_dimension_payload_keys``; LLM token billing meters group by ``model`` and
    ``token_type`` with it."""
    keys = {"type": "array", "items": {"type": "string", "maxLength": 100}}
    create = spec["paths"]["/v1/billing/meters"]["post"]["requestBody"]["content"]
    create["application/x-www-form-urlencoded"]["schema"]["properties"]["dimension_payload_keys"] = keys
    spec["components"]["schemas"]["billing.meter"]["properties"]["dimension_payload_keys"] = {
        **keys,
        "nullable": True,
    }


_add_meter_dimensions(SPEC)

_STR = {"type": "string", "maxLength": 5000}
_EXTRA_OPS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/products"): {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "id": _STR,
            "name": _STR,
            "description": _STR,
            "expand": {"type": "array", "items": _STR},
            "metadata": {"type": "object", "additionalProperties": _STR},
        },
    },
    ("post", "/v1/prices"): {
        "type": "object",
        "additionalProperties": False,
        "required": ["currency"],
        "properties": {
            "currency": _STR,
            "product": _STR,
            "unit_amount_decimal": {"type": "string", "format": "decimal"},
            "billing_scheme": {"type": "string", "enum": ["per_unit", "tiered"]},
            "lookup_key": {"type": "string", "maxLength": 200},
            "nickname": _STR,
            "expand": {"type": "array", "items": _STR},
            "recurring": {
                "type": "object",
                "required": ["interval"],
                "properties": {
                    "interval": {"type": "string", "enum": ["day", "week", "month", "year"]},
                    "usage_type": {"type": "string", "enum": ["licensed", "metered"]},
                    "meter": _STR,
                },
            },
        },
    },
}
_EXTRA_QUERY: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/v1/prices"): {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "lookup_keys": {"type": "array", "items": _STR},
            "limit": {"type": "integer"},
            "expand": {"type": "array", "items": _STR},
        },
    },
    ("get", "/v1/products/{id}"): {
        "type": "object",
        "additionalProperties": False,
        "properties": {"expand": {"type": "array", "items": _STR}},
    },
    ("get", "/v2/core/events/{id}"): {"type": "object", "additionalProperties": False, "properties": {}},
}


class RequestError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def v1_error(
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    status: int = 400,
    type_: str = "invalid_request_error",
) -> RequestError:
    err: dict[str, Any] = {"type": type_, "message": message}
    if code:
        err["code"] = code
        err["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        err["param"] = param
    return RequestError(status, {"error": err})


def v2_error(message: str, code: str, *, status: int = 400, type_: str | None = None) -> RequestError:
    err: dict[str, Any] = {"code": code, "message": message}
    if type_:
        err["type"] = type_
        err["doc_url"] = f"https://docs.stripe.com/error-codes#{code}"
    return RequestError(status, {"error": err})


def decode_form(body: str) -> dict[str, Any]:
    """``a[b][c]=1&l[0]=x&m[]=y`` -> nested dicts and lists, as Stripe reads them."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        head, *rest = re.split(r"\[", key)
        node: Any = out
        path = [head, *[r.rstrip("]") for r in rest]]
        for i, name in enumerate(path):
            last = i == len(path) - 1
            nxt_is_list = not last and (path[i + 1] == "" or path[i + 1].isdigit())
            if isinstance(node, list):
                if last:
                    node.append(value)
                    break
                if name == "" or (name.isdigit() and int(name) >= len(node)):
                    node.append([] if nxt_is_list else {})
                node = node[-1 if name == "" else int(name)]
                continue
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, [] if nxt_is_list else {})
    return out


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        node: Any = SPEC
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return _resolve(node)
    return schema


def _check(value: Any, schema: dict[str, Any], name: str, form: bool) -> Any:
    schema = _resolve(schema)
    kind = schema.get("type")
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                return _check(value, option, name, form)
            except RequestError as exc:
                errors.append(exc)
        raise errors[0]
    if kind == "object" or "properties" in schema:
        if form and value == "":
            return {}
        if not isinstance(value, dict):
            raise v1_error(f"Invalid object: {name}", code="parameter_invalid_empty", param=name)
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", not props)
        out = {}
        for key, sub in value.items():
            full = f"{name}[{key}]" if name else key
            if key in props:
                out[key] = _check(sub, props[key], full, form)
            elif extra is False or (extra is True and props):
                raise v1_error(f"Received unknown parameter: {full}", code="parameter_unknown", param=full)
            elif isinstance(extra, dict):
                out[key] = _check(sub, extra, full, form)
            else:
                out[key] = sub
        for req in schema.get("required", []):
            if req not in value:
                full = f"{name}[{req}]" if name else req
                raise v1_error(f"Missing required param: {full}.", code="parameter_missing", param=full)
        return out
    if kind == "array":
        if not isinstance(value, list):
            raise v1_error(f"Invalid array: {name}", code="parameter_invalid_empty", param=name)
        return [_check(v, schema.get("items", {}), f"{name}[{i}]", form) for i, v in enumerate(value)]
    if kind == "integer":
        if isinstance(value, bool):
            raise v1_error(f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
        if isinstance(value, str):
            if not re.fullmatch(r"-?\d+", value):
                raise v1_error(f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
            value = int(value)
        if not isinstance(value, int):
            raise v1_error(f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
        return value
    if kind == "boolean":
        if form and value in ("true", "false"):
            return value == "true"
        if not isinstance(value, bool):
            raise v1_error(f"Invalid boolean: {value}", param=name)
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise v1_error(f"Invalid string: {value!r}", param=name)
        if len(value) > schema.get("maxLength", 10**9):
            raise v1_error(f"Invalid string: {name} is too long (max {schema['maxLength']})", param=name)
        if "enum" in schema and value not in schema["enum"]:
            raise v1_error(f"Invalid {name}: must be one of {', '.join(schema['enum'])}", param=name)
        date_re = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"
        if schema.get("format") == "date-time" and not re.fullmatch(date_re, value):
            raise v1_error(f"Invalid timestamp: {name}", param=name)
        if schema.get("format") == "decimal" and not re.fullmatch(r"-?\d+(\.\d+)?", value):
            raise v1_error(f"Invalid decimal: {value}", param=name)
        return value
    return value


def operation(method: str, template: str) -> dict[str, Any] | None:
    return SPEC["paths"].get(template, {}).get(method)


def validate_body(method: str, template: str, params: dict[str, Any], form: bool) -> dict[str, Any]:
    op = operation(method, template)
    if op is not None:
        content = op.get("requestBody", {}).get("content", {})
        media = "application/x-www-form-urlencoded" if form else "application/json"
        if not content:
            if params:
                key = next(iter(params))
                raise v1_error(f"Received unknown parameter: {key}", code="parameter_unknown", param=key)
            return {}
        if media not in content:
            raise v1_error(f"This endpoint takes {next(iter(content))} bodies", param=None)
        schema = content[media]["schema"]
    else:
        schema = _EXTRA_OPS[(method, template)]
    return dict(_check(params, schema, "", form))


def validate_query(method: str, template: str, params: dict[str, Any]) -> dict[str, Any]:
    op = operation(method, template)
    if op is None:
        return dict(_check(params, _EXTRA_QUERY[(method, template)], "", True))
    declared = {p["name"]: p for p in op.get("parameters", []) if p.get("in") == "query"}
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in declared:
            raise v1_error(f"Received unknown parameter: {key}", code="parameter_unknown", param=key)
        out[key] = _check(value, declared[key]["schema"], key, True)
    for key, p in declared.items():
        if p.get("required") and key not in params:
            raise v1_error(f"Missing required param: {key}.", code="parameter_missing", param=key)
    return out
