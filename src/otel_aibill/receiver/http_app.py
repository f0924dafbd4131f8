"""OTLP/HTTP: ``POST /v1/traces`` with protobuf or JSON bodies, as a plain ASGI app.

One path and one method do not need a router; reading ``receive`` directly lets the body be
decompressed chunk by chunk under the size limit. All but small bodies are decoded and prepared
(extracted, priced) on a worker thread, so the event loop (health checks, other requests) stays
responsive and that work overlaps the committer's time in SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from otel_aibill.receiver.auth import bearer_ok
from otel_aibill.receiver.body import BadEncoding, BodyReader, BodyTooLarge
from otel_aibill.receiver.committer import CommitFailed, Overloaded, ShuttingDown
from otel_aibill.receiver.ingest import Accepted, Ingestor
from otel_aibill.receiver.otlp_common import DecodeError
from otel_aibill.receiver.responses import JSON, PROTOBUF, export_response, status_body
from otel_aibill.receiver.settings import ReceiverSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_OFFLOAD_BYTES = 64 * 1024  # decode and prepare bodies larger than this off the event loop

# google.rpc.Code values used in error bodies
_INVALID_ARGUMENT, _NOT_FOUND, _RESOURCE_EXHAUSTED, _UNIMPLEMENTED, _INTERNAL = 3, 5, 8, 12, 13
_UNAVAILABLE, _UNAUTHENTICATED = 14, 16


class OtlpHttpApp:
    def __init__(self, ingestor: Ingestor, settings: ReceiverSettings) -> None:
        self._ingestor = ingestor
        self._token = settings.auth_token
        self._limit = settings.max_message_bytes
        self._retry_after = settings.retry_after_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket handling needed
        try:
            status, ctype, body, extra = await self._handle(scope, receive)
        except Exception as exc:  # a bug: still answer in OTLP's terms, and keep serving
            log.exception("OTLP/HTTP request failed")
            status, ctype, extra = 500, PROTOBUF, []
            body = status_body(ctype, _INTERNAL, f"internal error: {type(exc).__name__}")
        self._ingestor.metrics.requests.labels("http", _OUTCOMES.get(status, str(status))).inc()
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()), *extra]
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except Exception:  # the server already refused the request (garbage framing) or it is gone
            log.debug("OTLP/HTTP reply not sent", exc_info=True)

    async def _handle(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        headers = _headers(scope)
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        # every 4xx/5xx body is a google.rpc.Status: in the request's encoding, else protobuf
        reply = ctype if ctype in (PROTOBUF, JSON) else PROTOBUF
        if scope["path"] != TRACES_PATH:
            msg = f"not found: {scope['path'][:200]}; OTLP traces are accepted at POST {TRACES_PATH}"
            return 404, reply, status_body(reply, _NOT_FOUND, msg), []
        if scope["method"] != "POST":
            msg = f"method {scope['method']} not allowed: OTLP traces are sent with POST"
            return 405, reply, status_body(reply, _UNIMPLEMENTED, msg), [(b"allow", b"POST")]
        if ctype not in (PROTOBUF, JSON):
            msg = f"unsupported content type {ctype[:100]!r}: use {PROTOBUF} or {JSON}"
            return 415, reply, status_body(reply, _INVALID_ARGUMENT, msg), []
        if not bearer_ok(self._token, headers.get("authorization")):
            body = status_body(ctype, _UNAUTHENTICATED, "missing or wrong bearer token")
            return 401, ctype, body, [(b"www-authenticate", b"Bearer")]
        try:
            length = int(headers.get("content-length", "0") or "0")
        except ValueError:
            length = 0
        if length > self._limit:
            msg = f"body larger than {self._limit} bytes"
            return 413, ctype, status_body(ctype, _RESOURCE_EXHAUSTED, msg), [(b"connection", b"close")]
        budget = self._ingestor.budget
        held = 0  # the body's bytes are held in the budget until the request is answered
        try:
            try:
                reader = BodyReader(headers.get("content-encoding", ""), self._limit)
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return 400, ctype, b"", []
                    reader.feed(message.get("body", b""))
                    more = message.get("more_body", False)
                    grown = reader.size - held
                    if grown and not budget.take(grown):
                        self._ingestor.metrics.overloaded.inc()
                        msg = "receiver holds too many request bytes, retry later"
                        retry = self._retry(ctype, 429, msg, self._retry_after)
                        return retry[0], retry[1], retry[2], [*retry[3], (b"connection", b"close")]
                    held += grown
                raw = reader.finish()
            except BodyTooLarge:
                msg = f"decompressed body larger than {self._limit} bytes"
                return 413, ctype, status_body(ctype, _RESOURCE_EXHAUSTED, msg), [(b"connection", b"close")]
            except BadEncoding as exc:
                accepted = [(b"accept-encoding", b"gzip, deflate, identity")]  # RFC 9110 section 12.5.3
                return 400, ctype, status_body(ctype, _INVALID_ARGUMENT, str(exc)), accepted
            return await self._ingest(raw, ctype)
        finally:
            budget.give_back(held)

    def _accept(self, raw: bytes, ctype: str) -> Accepted:
        return self._ingestor.accept(self._ingestor.decode(raw, ctype))

    async def _ingest(self, raw: bytes, ctype: str) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        try:
            if len(raw) > _OFFLOAD_BYTES:
                accepted = await asyncio.to_thread(self._accept, raw, ctype)
            else:
                accepted = self._accept(raw, ctype)
            outcome = self._ingestor.outcome(accepted, await asyncio.wrap_future(accepted.done))
        except DecodeError as exc:
            return 400, ctype, status_body(ctype, _INVALID_ARGUMENT, str(exc)), []
        except Overloaded as exc:
            return self._retry(ctype, 429, str(exc), exc.retry_after_s)
        except ShuttingDown:
            return self._retry(ctype, 503, "receiver is shutting down", self._retry_after)
        except CommitFailed as exc:
            return self._retry(ctype, 503, str(exc), self._retry_after)
        return 200, ctype, export_response(ctype, outcome.rejected, outcome.error_message), []

    @staticmethod
    def _retry(
        ctype: str, status: int, message: str, retry_after: float
    ) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        seconds = max(1, round(retry_after))  # Retry-After takes whole seconds
        body = status_body(ctype, _UNAVAILABLE, message, retry_after)
        return status, ctype, body, [(b"retry-after", str(seconds).encode())]


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


_OUTCOMES = {
    200: "ok",
    400: "invalid",
    401: "unauthenticated",
    404: "not_found",
    405: "bad_method",
    413: "too_large",
    415: "bad_content_type",
    429: "overloaded",
    500: "internal_error",
    503: "unavailable",
}
