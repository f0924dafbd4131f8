"""gRPC bearer-token check from the call's metadata, before its message is received.

A server interceptor sees only the method and metadata. A call without the right token gets a
handler declared as *client streaming* that aborts at once: grpcio receives a request message
only when a handler reads it, so an unauthenticated 60 MiB message is never taken into memory
(a unary handler would have it received, whole, before it runs). Unary clients see the usual
UNAUTHENTICATED status. This is the HTTP side's refusal without reading the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from otel_aibill.receiver.auth import bearer_ok

MESSAGE = "missing or wrong bearer token"


def _refuse(_requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)


_REFUSE = grpc.stream_unary_rpc_method_handler(_refuse)


class BearerAuth(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str, on_refused: Callable[[], None]) -> None:
        self._token = token
        self._on_refused = on_refused

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        metadata = dict(details.invocation_metadata or ())
        value = metadata.get("authorization")
        if bearer_ok(self._token, value if isinstance(value, str) else None):
            return continuation(details)
        self._on_refused()
        return _REFUSE
