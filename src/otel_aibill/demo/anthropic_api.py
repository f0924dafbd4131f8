"""The Anthropic Messages endpoint of the fake provider (``POST /v1/messages``).

Shapes follow the published API: ``usage.input_tokens`` EXCLUDES cache reads and writes (unlike
OpenAI), ``cache_creation`` splits writes by TTL (5m / 1h), ``output_tokens`` includes thinking
(``output_tokens_details.thinking_tokens``). Prompt caching follows ``cache_control`` breakpoints
over the prefix tools → system → messages, with a 1024-token minimum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otel_aibill.demo.models import ANTHROPIC_MODELS, Model, resolve
from otel_aibill.demo.prompt_cache import PromptCache
from otel_aibill.demo.tokens import MESSAGE_OVERHEAD, count_text, fingerprint, text_of
from otel_aibill.demo.wire import JSON, ApiError, Reply, deep_merge, json_reply, new_id, split_text, sse_body

CACHE_MIN_TOKENS = 1024
SERVED_TIERS = {"standard_only": "standard", "auto": "standard"}


@dataclass(frozen=True, slots=True)
class Ctx:
    cache: PromptCache
    usage_override: JSON | None = None


@dataclass(frozen=True, slots=True)
class _Unit:
    part: Any
    tokens: int
    ttl: str | None  # "5m" / "1h" when a cache breakpoint ends here


def error_body(err: ApiError, request_id: str) -> JSON:
    return {"type": "error", "error": {"type": err.kind, "message": err.message}, "request_id": request_id}


def error_reply(err: ApiError, request_id: str) -> Reply:
    return json_reply(err.status, error_body(err, request_id), headers={"request-id": request_id})


def auth_error(headers: Mapping[str, str], accepted: frozenset[str] | None) -> ApiError | None:
    key = headers.get("x-api-key", "").strip()
    bearer = headers.get("authorization", "")
    if not key and bearer.lower().startswith("bearer "):
        key = bearer[7:].strip()
    if not key:
        return ApiError(401, "authentication_error", "x-api-key header is required")
    if accepted is not None and key not in accepted:
        return ApiError(401, "authentication_error", "invalid x-api-key")
    if not headers.get("anthropic-version"):
        return ApiError(400, "invalid_request_error", "anthropic-version: header is required")
    return None


def rate_limit_error() -> ApiError:
    return ApiError(
        429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"
    )


def server_error(status: int) -> ApiError:
    if status == 529:
        return ApiError(529, "overloaded_error", "Overloaded")
    return ApiError(status, "api_error", "Internal server error")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def _ttl(block: object) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("cache_control"), dict):
        return None
    ttl = block["cache_control"].get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise _invalid(f"cache_control.ttl: Input should be '5m' or '1h', got {ttl!r}")
    return str(ttl)


def _units(model: Model, body: JSON) -> list[_Unit]:
    units = [_Unit(model.served, 0, None)]
    for tool in body.get("tools") or []:
        units.append(_Unit(tool, count_text(json.dumps(tool, sort_keys=True)), _ttl(tool)))
    system = body.get("system")
    if isinstance(system, str) and system:
        units.append(_Unit(system, count_text(system), None))
    elif isinstance(system, list):
        units += [_Unit(block, count_text(text_of(block)), _ttl(block)) for block in system]
    for message in body["messages"]:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid("messages: each message needs a role of 'user' or 'assistant'")
        units.append(_Unit(message["role"], MESSAGE_OVERHEAD, None))
        content = message.get("content")
        if isinstance(content, str):
            units.append(_Unit(content, count_text(content), None))
        elif isinstance(content, list):
            units += [_Unit(block, count_text(text_of(block)), _ttl(block)) for block in content]
        else:
            raise _invalid("messages: content must be a string or a list of content blocks")
    return units


def _cache_usage(cache: PromptCache, units: list[_Unit]) -> tuple[int, int, int, int]:
    """(uncached input, cache read, 5m write, 1h write) for this prompt; records the new entries."""
    prints: list[str] = []
    totals: list[int] = []
    running = 0
    for i, unit in enumerate(units):
        running += unit.tokens
        totals.append(running)
        prints.append(fingerprint(u.part for u in units[: i + 1]) if unit.ttl else "")
    breakpoints = [i for i, u in enumerate(units) if u.ttl and totals[i] >= CACHE_MIN_TOKENS]
    read = 0
    for i in breakpoints:
        if prints[i] in cache:
            read = totals[i]
    writes = {"5m": 0, "1h": 0}
    covered = read
    for i in breakpoints:
        if totals[i] > covered:
            writes[str(units[i].ttl)] += totals[i] - covered
            covered = totals[i]
    cache.add(prints[i] for i in breakpoints)
    return running - covered, read, writes["5m"], writes["1h"]


def _thinking_tokens(body: JSON, prompt: int) -> int:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return 0
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        raise _invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= body["max_tokens"]:
        raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return min(budget, 256 + 64 * (prompt % 8))


def messages(body: JSON, ctx: Ctx) -> Reply:
    for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
        if not isinstance(body.get(name), kind) or body.get(name) in ("", []):
            raise _invalid(f"{name}: Field required")
    model = resolve(ANTHROPIC_MODELS, body["model"])
    if model is None:
        raise ApiError(404, "not_found_error", f"model: {body['model']}")
    units = _units(model, body)
    uncached, read, write_5m, write_1h = _cache_usage(ctx.cache, units)
    last = units[-1].part
    text = f"This is a fake reply to: {text_of(last)[:60]}"
    stop = "end_turn"
    if count_text(text) > body["max_tokens"]:
        text, stop = text[: body["max_tokens"] * 4], "max_tokens"
    thinking = _thinking_tokens(body, uncached + read + write_5m + write_1h)
    usage: JSON = {
        "input_tokens": uncached,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": count_text(text) + thinking,
        "service_tier": SERVED_TIERS.get(str(body.get("service_tier") or "auto"), "standard"),
    }
    if thinking:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    if ctx.usage_override:
        usage = deep_merge(usage, ctx.usage_override)
    content: list[JSON] = []
    if thinking:
        content.append(
            {"type": "thinking", "thinking": "Considering the request.", "signature": "c2lnbmF0dXJl"}
        )
    content.append({"type": "text", "text": text})
    message = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model.served,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if body.get("stream"):
        return _stream(message)
    return json_reply(200, message, usage=usage, response_id=message["id"], model=model.served)


def _stream(message: JSON) -> Reply:
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    start_usage.pop("output_tokens_details", None)
    events: list[tuple[str, JSON]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            },
        ),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "thinking":
            events += [
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": block["signature"]},
                    },
                ),
            ]
        else:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            if index == 0:
                events.append(("ping", {"type": "ping"}))
            events += [
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
                for piece in split_text(block["text"])
            ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta_usage = {
        key: usage[key]
        for key in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "output_tokens_details",
        )
        if key in usage
    }
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": delta_usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return Reply(
        200,
        sse_body(events),
        content_type="text/event-stream; charset=utf-8",
        payload=[data for _, data in events],
        usage=usage,
        response_id=message["id"],
        model=message["model"],
        stream=True,
    )
