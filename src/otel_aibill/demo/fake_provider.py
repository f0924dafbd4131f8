"""A local stand-in for the OpenAI and Anthropic APIs, good enough for their official SDKs.

One stdlib HTTP server (no extra dependency: ``otel-aibill demo`` runs on the base install)
serves both APIs on one port: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/responses``
(OpenAI) and ``/v1/messages`` (Anthropic). Token counts are deterministic functions of the request
and every exchange is logged, so tests can compute the usage they expect to be billed. A chat
completion offered function tools calls the first one until a tool result is in the conversation,
so agent loops run against it.

Scripting, for tests that need an exact usage or an error:

- header ``x-fake-usage: {json}`` merges into the usage the response reports;
- header ``x-fake-error: 429|500|503|529`` answers with that error: every attempt, or only the
  first N requests of a tag with ``x-fake-error-times: N`` (so the SDK's own retry succeeds);
- header ``x-fake-tag: NAME`` labels the exchange in the log, for tests to find it;
- ``FakeProvider.script_usage(...)`` / ``script_error(...)`` apply to the next request(s) only,
  so an SDK's retry after a scripted error succeeds.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from otel_aibill.demo import anthropic_api, openai_api
from otel_aibill.demo.prompt_cache import PromptCache
from otel_aibill.demo.wire import JSON, ApiError, Reply, new_id

USAGE_HEADER = "x-fake-usage"
ERROR_HEADER = "x-fake-error"
ERROR_TIMES_HEADER = "x-fake-error-times"
TAG_HEADER = "x-fake-tag"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the fake answered, as the tests need to see it."""

    provider: str  # "openai" or "anthropic"
    path: str
    request: JSON | None
    status: int
    response: Any  # the JSON body, or the list of SSE event payloads of a stream
    usage: JSON | None  # the usage the response reported (None: none, e.g. stream without include_usage)
    response_id: str | None
    model: str | None  # the served model
    stream: bool
    tag: str | None = None  # the request's x-fake-tag header


@dataclass(frozen=True, slots=True)
class _ScriptedError:
    status: int
    retry_after: float | None


_OPENAI_ROUTES: dict[str, Callable[[JSON, openai_api.Ctx], Reply]] = {
    "/v1/chat/completions": openai_api.chat_completions,
    "/v1/embeddings": openai_api.embeddings,
    "/v1/responses": openai_api.responses,
}
_ANTHROPIC_ROUTES: dict[str, Callable[[JSON, anthropic_api.Ctx], Reply]] = {
    "/v1/messages": anthropic_api.messages,
}


class FakeProvider:
    """The server; use ``start_fake_provider()`` to run one for the length of a ``with`` block."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_keys: set[str] | None = None) -> None:
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.openai_cache = PromptCache()
        self.anthropic_cache = PromptCache()
        self._exchanges: list[Exchange] = []
        self._usage_queue: deque[JSON] = deque()
        self._error_queue: deque[_ScriptedError] = deque()
        self._errors_by_tag: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    def start(self) -> FakeProvider:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-llm-provider",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- scripting -------------------------------------------------------------------------------

    def script_usage(self, usage: JSON) -> None:
        """Merge ``usage`` into the usage of the next successful response (FIFO)."""
        with self._lock:
            self._usage_queue.append(usage)

    def script_error(self, status: int, *, times: int = 1, retry_after: float | None = 0.01) -> None:
        """Answer the next ``times`` requests with ``status`` (429, 500, 503, 529) in the provider's shape."""
        with self._lock:
            self._error_queue.extend(_ScriptedError(status, retry_after) for _ in range(times))

    # --- inspection ------------------------------------------------------------------------------

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def clear(self) -> None:
        """Forget the exchange log, the scripts and the prompt caches."""
        with self._lock:
            self._exchanges.clear()
            self._usage_queue.clear()
            self._error_queue.clear()
            self._errors_by_tag.clear()
        self.openai_cache.clear()
        self.anthropic_cache.clear()

    # --- request handling (called from server threads) -------------------------------------------

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        route = path.split("?", 1)[0].rstrip("/")
        if route in _ANTHROPIC_ROUTES:
            provider = "anthropic"
        elif route in _OPENAI_ROUTES:
            provider = "openai"
        else:
            reply = _not_found(route)
            self._log("unknown", route, None, reply, headers)
            return reply
        request_id = new_id("req_")
        body: JSON | None = None
        try:
            reply, body = self._answer(provider, route, headers, raw)
        except ApiError as err:
            reply = _error(provider, err, request_id)
        reply.headers.setdefault("x-request-id" if provider == "openai" else "request-id", request_id)
        self._log(provider, route, body, reply, headers)
        return reply

    def _answer(
        self, provider: str, route: str, headers: dict[str, str], raw: bytes
    ) -> tuple[Reply, JSON | None]:
        api: Any = openai_api if provider == "openai" else anthropic_api
        auth = api.auth_error(headers, self.api_keys)
        if auth is not None:
            raise auth
        body = _parse(raw, provider)
        scripted = self._next_error(headers)
        if scripted is not None:
            raise _with_retry_after(api, scripted)
        override = self._next_usage(headers)
        if provider == "openai":
            return _OPENAI_ROUTES[route](body, openai_api.Ctx(self.openai_cache, override)), body
        return _ANTHROPIC_ROUTES[route](body, anthropic_api.Ctx(self.anthropic_cache, override)), body

    def _next_error(self, headers: dict[str, str]) -> _ScriptedError | None:
        value = headers.get(ERROR_HEADER)
        if value:
            try:
                status, times = int(value), int(headers.get(ERROR_TIMES_HEADER) or 0)
            except ValueError:
                raise ApiError(
                    400, "invalid_request_error", f"{ERROR_HEADER} must be an HTTP status"
                ) from None
            if times <= 0:
                return _ScriptedError(status, 0.01)
            key = headers.get(TAG_HEADER) or value
            with self._lock:
                served = self._errors_by_tag.get(key, 0)
                if served < times:
                    self._errors_by_tag[key] = served + 1
                    return _ScriptedError(status, 0.01)
            return None
        with self._lock:
            return self._error_queue.popleft() if self._error_queue else None

    def _next_usage(self, headers: dict[str, str]) -> JSON | None:
        value = headers.get(USAGE_HEADER)
        if value:
            try:
                usage = json.loads(value)
            except ValueError:
                usage = None
            if not isinstance(usage, dict):
                raise ApiError(400, "invalid_request_error", f"{USAGE_HEADER} must be a JSON object")
            return usage
        with self._lock:
            return self._usage_queue.popleft() if self._usage_queue else None

    def _log(
        self, provider: str, path: str, body: JSON | None, reply: Reply, headers: dict[str, str]
    ) -> None:
        exchange = Exchange(
            provider=provider,
            path=path,
            request=body,
            status=reply.status,
            response=reply.payload,
            usage=reply.usage,
            response_id=reply.response_id,
            model=reply.model,
            stream=reply.stream,
            tag=headers.get(TAG_HEADER),
        )
        with self._lock:
            self._exchanges.append(exchange)


class _RetryableError(ApiError):
    def __init__(self, base: ApiError, retry_after: float | None) -> None:
        super().__init__(base.status, base.kind, base.message, param=base.param, code=base.code)
        self.retry_after = retry_after


def _with_retry_after(api: Any, scripted: _ScriptedError) -> ApiError:
    base = api.rate_limit_error() if scripted.status == 429 else api.server_error(scripted.status)
    return _RetryableError(base, scripted.retry_after)


def _error(provider: str, err: ApiError, request_id: str) -> Reply:
    reply: Reply = (openai_api if provider == "openai" else anthropic_api).error_reply(err, request_id)
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        reply.headers["retry-after"] = str(max(1, round(retry_after)))
        reply.headers["retry-after-ms"] = str(round(retry_after * 1000))
    if err.status == 429 and provider == "openai":
        reply.headers["x-ratelimit-remaining-requests"] = "0"
    if err.status == 429 and provider == "anthropic":
        reply.headers["anthropic-ratelimit-requests-remaining"] = "0"
    return reply


def _parse(raw: bytes, provider: str) -> JSON:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    if provider == "openai":
        raise ApiError(
            400,
            "invalid_request_error",
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
            "sent was not valid JSON.",
        )
    raise ApiError(400, "invalid_request_error", "There was an issue with the request body: invalid JSON")


def _not_found(route: str) -> Reply:
    payload = {
        "error": {
            "message": f"Invalid URL (POST {route})",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    return Reply(404, json.dumps(payload).encode(), payload=payload)


def _handler_for(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs; every reply has a length

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(fake.handle(self.path, headers, raw))

        def do_GET(self) -> None:
            self._send(_not_found(self.path))

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            self.send_header("content-length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

    return Handler


@contextmanager
def start_fake_provider(
    host: str = "127.0.0.1", port: int = 0, *, api_keys: set[str] | None = None
) -> Iterator[FakeProvider]:
    """Run a fake provider on a free port (by default) for the length of the block."""
    fake = FakeProvider(host, port, api_keys=api_keys).start()
    try:
        yield fake
    finally:
        fake.stop()
