"""What a fake provider endpoint returns, independent of the HTTP server that sends it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(slots=True)
class Reply:
    """One HTTP response, plus what the exchange log needs to know about it."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    payload: Any = None  # the JSON object sent, or the list of SSE event payloads
    usage: JSON | None = None  # the usage object as the provider reported it (None: none reported)
    response_id: str | None = None
    model: str | None = None  # the served model
    stream: bool = False


class ApiError(Exception):
    """An error answer in the provider's own shape; raised by request validation."""

    def __init__(
        self, status: int, kind: str, message: str, *, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code


def json_reply(status: int, payload: Any, **kwargs: Any) -> Reply:
    return Reply(status, json.dumps(payload).encode(), payload=payload, **kwargs)


def sse_body(events: Sequence[tuple[str | None, Any]], *, done_marker: bool = False) -> bytes:
    """Server-sent events: ``event:`` lines when a name is given (Anthropic), ``[DONE]`` for OpenAI."""
    out: list[str] = []
    for name, data in events:
        if name is not None:
            out.append(f"event: {name}\n")
        out.append(f"data: {json.dumps(data)}\n\n")
    if done_marker:
        out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> JSON:
    """``override`` on top of ``base``, recursing into nested objects (scripted usage)."""
    merged: JSON = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def split_text(text: str, pieces: int = 3) -> list[str]:
    """A reply cut into a few deltas, as a stream delivers it."""
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
