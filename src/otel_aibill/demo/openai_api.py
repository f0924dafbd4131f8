"""The OpenAI endpoints of the fake provider: chat completions, embeddings, responses.

Shapes follow the published API reference (and what the official ``openai`` SDK parses):
``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``; ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens``; streams carry usage only with
``stream_options.include_usage``; prompt caching starts at 1024 tokens in 128-token steps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otel_aibill.demo.models import OPENAI_MODELS, Model, resolve
from otel_aibill.demo.prompt_cache import PromptCache
from otel_aibill.demo.tokens import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    count_text,
    fingerprint,
    round_down,
    text_of,
)
from otel_aibill.demo.wire import JSON, ApiError, Reply, deep_merge, json_reply, new_id, split_text, sse_body

CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128
SERVED_TIERS = {"flex": "flex", "priority": "priority", "scale": "scale"}  # anything else is served "default"
_EFFORT = {"minimal": 0, "low": 1, "medium": 2, "high": 4}


@dataclass(frozen=True, slots=True)
class Ctx:
    cache: PromptCache
    usage_override: JSON | None = None


def error_body(err: ApiError) -> JSON:
    return {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.code}}


def error_reply(err: ApiError, request_id: str) -> Reply:
    return json_reply(err.status, error_body(err), headers={"x-request-id": request_id})


def auth_error(headers: Mapping[str, str], accepted: frozenset[str] | None) -> ApiError | None:
    value = headers.get("authorization", "")
    key = value[7:].strip() if value.lower().startswith("bearer ") else ""
    if not key:
        return ApiError(
            401,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if accepted is not None and key not in accepted:
        shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
        return ApiError(
            401, "invalid_request_error", f"Incorrect API key provided: {shown}.", code="invalid_api_key"
        )
    return None


def rate_limit_error() -> ApiError:
    return ApiError(
        429,
        "requests",
        "Rate limit reached for requests. Please try again shortly.",
        code="rate_limit_exceeded",
    )


def server_error(status: int) -> ApiError:
    return ApiError(
        status, "server_error", "The server had an error while processing your request. Sorry about that!"
    )


def _require(body: JSON, name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in body:
        raise ApiError(
            400,
            "invalid_request_error",
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )
    value = body[name]
    if not isinstance(value, kind) or (isinstance(value, (list, str)) and not value):
        raise ApiError(
            400, "invalid_request_error", f"Invalid value for '{name}'.", param=name, code="invalid_value"
        )
    return value


def _model(body: JSON, *, embedding: bool, endpoint: str) -> Model:
    if "model" not in body:
        raise ApiError(400, "invalid_request_error", "you must provide a model parameter")
    name = _require(body, "model", str)
    model = resolve(OPENAI_MODELS, name)
    if model is None:
        raise ApiError(
            404,
            "invalid_request_error",
            f"The model `{name}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if bool(model.embedding_dims) != embedding:
        kind = "an embedding" if embedding else "a chat"
        raise ApiError(
            404,
            "invalid_request_error",
            f"This is not {kind} model and thus not supported in the {endpoint} endpoint.",
            code="model_not_found" if embedding else None,
        )
    return model


def _tier(body: JSON) -> str:
    return SERVED_TIERS.get(str(body.get("service_tier") or ""), "default")


def _prompt_units(model: Model, body: JSON, items: list[Any], preamble: list[Any]) -> list[tuple[Any, int]]:
    """(fingerprint part, tokens) per prompt element, in order; tools and instructions first."""
    units: list[tuple[Any, int]] = [((model.served, body.get("prompt_cache_key")), REPLY_PRIMING)]
    units += [(part, MESSAGE_OVERHEAD + count_text(text_of(part))) for part in preamble]
    for item in items:
        text = text_of(item.get("content")) if isinstance(item, dict) else text_of(item)
        units.append((item, MESSAGE_OVERHEAD + count_text(text)))
    return units


def _prompt_usage(cache: PromptCache, units: list[tuple[Any, int]]) -> tuple[int, int]:
    """(prompt tokens, cached tokens): the longest cached prefix, in 128-token steps from 1024."""
    prints = [fingerprint(part for part, _ in units[: i + 1]) for i in range(len(units))]
    totals: list[int] = []
    running = 0
    for _, tokens in units:
        running += tokens
        totals.append(running)
    cached = 0
    for i in range(len(units) - 1, -1, -1):
        if totals[i] >= CACHE_MIN_TOKENS and prints[i] in cache:
            cached = CACHE_MIN_TOKENS + round_down(totals[i] - CACHE_MIN_TOKENS, CACHE_STEP)
            break
    cache.add(p for p, total in zip(prints, totals, strict=True) if total >= CACHE_MIN_TOKENS)
    return running, cached


def _reasoning_tokens(model: Model, effort: object, prompt_tokens: int) -> int:
    if not model.reasoning:
        return 0
    factor = _EFFORT.get(str(effort), 2)
    return 64 * factor * (1 + prompt_tokens % 4)


def _reply_text(items: list[Any]) -> str:
    last = text_of(items[-1].get("content")) if items and isinstance(items[-1], dict) else text_of(items[-1:])
    return f"This is a fake reply to: {last[:60]}"


def _truncate(text: str, limit: object) -> tuple[str, bool]:
    if isinstance(limit, int) and 0 < limit < count_text(text):
        return text[: limit * 4], True
    return text, False


def _apply_override(usage: JSON, override: JSON | None, total_of: tuple[str, str, str]) -> JSON:
    if not override:
        return usage
    merged = deep_merge(usage, override)
    total, first, second = total_of
    if total not in override:
        merged[total] = int(merged.get(first, 0)) + int(merged.get(second, 0))
    return merged


def chat_completions(body: JSON, ctx: Ctx) -> Reply:
    model = _model(body, embedding=False, endpoint="v1/chat/completions")
    messages = _require(body, "messages", list)
    stream = bool(body.get("stream"))
    if body.get("stream_options") is not None and not stream:
        raise ApiError(
            400,
            "invalid_request_error",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    tools = body.get("tools") or []
    prompt, cached = _prompt_usage(ctx.cache, _prompt_units(model, body, messages, list(tools)))
    text, truncated = _truncate(
        _reply_text(messages), body.get("max_completion_tokens") or body.get("max_tokens")
    )
    reasoning = _reasoning_tokens(model, body.get("reasoning_effort"), prompt)
    completion = count_text(text) + reasoning
    usage = _apply_override(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        ctx.usage_override,
        ("total_tokens", "prompt_tokens", "completion_tokens"),
    )
    head = {
        "id": new_id("chatcmpl-"),
        "created": int(time.time()),
        "model": model.served,
        "service_tier": _tier(body),
        "system_fingerprint": "fp_fake0001",
    }
    finish = "length" if truncated else "stop"
    if stream:
        return _chat_stream(head, text, finish, usage, include_usage=_include_usage(body))
    message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    call = _tool_call(body, messages)
    if call is not None:  # an agent's first step: call the first tool, answer once it has run
        message, finish = (
            {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]},
            "tool_calls",
        )
    payload = {
        **head,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return json_reply(200, payload, usage=usage, response_id=head["id"], model=model.served)


def _tool_call(body: JSON, messages: list[Any]) -> JSON | None:
    """A call of the request's first function tool, when the model should make one: tools are
    offered, not refused by ``tool_choice``, and no tool result is in the conversation yet. Its
    arguments name ``"Paris"`` for every required string parameter."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    if not tools or body.get("tool_choice") == "none":
        return None
    if any(isinstance(m, dict) and m.get("role") == "tool" for m in messages):
        return None
    function = tools[0].get("function") or {}
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    arguments = {
        name: "Paris"
        for name in parameters.get("required") or []
        if (properties.get(name) or {}).get("type") == "string"
    }
    return {
        "id": new_id("call_"),
        "type": "function",
        "function": {"name": function.get("name", "tool"), "arguments": json.dumps(arguments)},
    }


def _include_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _chat_stream(head: JSON, text: str, finish: str, usage: JSON, *, include_usage: bool) -> Reply:
    base = {**head, "object": "chat.completion.chunk"}
    extra: JSON = {"usage": None} if include_usage else {}
    chunks: list[JSON] = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            **extra,
        }
    ]
    chunks += [
        {
            **base,
            "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}],
            **extra,
        }
        for piece in split_text(text)
    ]
    chunks.append(
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}], **extra}
    )
    if include_usage:
        chunks.append({**base, "choices": [], "usage": usage})
    return Reply(
        200,
        sse_body([(None, c) for c in chunks], done_marker=True),
        content_type="text/event-stream; charset=utf-8",
        payload=chunks,
        usage=usage if include_usage else None,
        response_id=head["id"],
        model=head["model"],
        stream=True,
    )


def _vector(text: str, dims: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return [((seed + i * 2654435761) % 2001) / 1000.0 - 1.0 for i in range(dims)]


def _embedding_inputs(value: object) -> list[tuple[str, int]]:
    """(text used for the vector, tokens) per input: strings, token arrays, or lists of either."""
    if isinstance(value, str):
        return [(value, count_text(value))]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [(repr(value), len(value))]
    if isinstance(value, list) and value:
        out: list[tuple[str, int]] = []
        for item in value:
            if isinstance(item, str) and item:
                out.append((item, count_text(item)))
            elif isinstance(item, list) and item and all(isinstance(v, int) for v in item):
                out.append((repr(item), len(item)))
            else:
                break
        else:
            return out
    raise ApiError(
        400, "invalid_request_error", "'input' : input must be a string or an array.", param="input"
    )


def embeddings(body: JSON, ctx: Ctx) -> Reply:
    model = _model(body, embedding=True, endpoint="v1/embeddings")
    inputs = _embedding_inputs(_require(body, "input", (str, list)))
    dims = body.get("dimensions") or model.embedding_dims
    if not isinstance(dims, int) or dims < 1 or dims > model.embedding_dims:
        raise ApiError(
            400, "invalid_request_error", f"Invalid value for 'dimensions': {dims}.", param="dimensions"
        )
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, (text, _) in enumerate(inputs):
        vector = _vector(text, dims)
        embedding: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(t for _, t in inputs)
    usage = _apply_override(
        {"prompt_tokens": tokens, "total_tokens": tokens},
        ctx.usage_override,
        ("total_tokens", "prompt_tokens", "_"),
    )
    payload = {"object": "list", "data": data, "model": model.served, "usage": usage}
    return json_reply(200, payload, usage=usage, model=model.served)


def _response_items(value: object) -> list[Any]:
    if isinstance(value, str) and value:
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        return value
    raise ApiError(400, "invalid_request_error", "Invalid value for 'input'.", param="input")


def responses(body: JSON, ctx: Ctx) -> Reply:
    model = _model(body, embedding=False, endpoint="v1/responses")
    items = _response_items(_require(body, "input", (str, list)))
    if body.get("stream"):
        raise ApiError(
            400, "invalid_request_error", "Streaming is not supported by this fake endpoint.", param="stream"
        )
    preamble: list[Any] = list(body.get("tools") or [])
    if body.get("instructions"):
        preamble.append({"role": "developer", "content": body["instructions"]})
    prompt, cached = _prompt_usage(ctx.cache, _prompt_units(model, body, items, preamble))
    text, truncated = _truncate(_reply_text(items), body.get("max_output_tokens"))
    reasoning_cfg = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    reasoning = _reasoning_tokens(model, (reasoning_cfg or {}).get("effort"), prompt)
    output = count_text(text) + reasoning
    usage = _apply_override(
        {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + output,
        },
        ctx.usage_override,
        ("total_tokens", "input_tokens", "output_tokens"),
    )
    out_items: list[JSON] = []
    if model.reasoning:
        out_items.append({"type": "reasoning", "id": new_id("rs_"), "summary": []})
    out_items.append(
        {
            "type": "message",
            "id": new_id("msg_"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }
    )
    payload = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if truncated else "completed",
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model.served,
        "output": out_items,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (reasoning_cfg or {}).get("effort"), "summary": None},
        "service_tier": _tier(body),
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }
    return json_reply(200, payload, usage=usage, response_id=payload["id"], model=model.served)
