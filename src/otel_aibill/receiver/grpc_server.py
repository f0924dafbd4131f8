"""OTLP/gRPC: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

The handler takes the raw request bytes (no deserializer) so a malformed message becomes a clear
INVALID_ARGUMENT, and so the fast view decoder is used instead of the generated classes. Each
handler thread decodes and prepares its spans, then waits for its group commit; the thread pool
bounds concurrent in-flight exports.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import grpc

from otel_aibill.receiver.committer import CommitFailed, Overloaded, ShuttingDown
from otel_aibill.receiver.grpc_auth import BearerAuth
from otel_aibill.receiver.ingest import Ingestor
from otel_aibill.receiver.otlp_common import DecodeError
from otel_aibill.receiver.responses import (
    PROTOBUF,
    export_response,
    grpc_bad_request_trailers,
    grpc_retry_trailers,
)
from otel_aibill.receiver.settings import ReceiverSettings

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class TraceService:
    def __init__(self, ingestor: Ingestor, settings: ReceiverSettings) -> None:
        self._ingestor = ingestor
        self._limit = settings.max_message_bytes
        self._retry_after = settings.retry_after_seconds

    def _outcome(self, outcome: str) -> None:
        self._ingestor.metrics.requests.labels("grpc", outcome).inc()

    def _retry_later(self, context: grpc.ServicerContext, message: str, retry_after: float) -> NoReturn:
        context.set_trailing_metadata(grpc_retry_trailers(message, retry_after))
        context.abort(grpc.StatusCode.UNAVAILABLE, message)
        raise AssertionError("unreachable")  # abort raises

    def export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """The bearer token was checked from metadata before the message was received
        (``grpc_auth.BearerAuth``)."""
        if len(request) > self._limit:
            self._outcome("too_large")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request larger than {self._limit} bytes")
        budget = self._ingestor.budget
        if not budget.take(len(request)):
            self._outcome("overloaded")
            self._ingestor.metrics.overloaded.inc()
            self._retry_later(context, "receiver holds too many request bytes", self._retry_after)
        try:
            return self._export(request, context)
        finally:
            budget.give_back(len(request))

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            decoded = self._ingestor.decode(request, PROTOBUF)
        except DecodeError as exc:
            self._outcome("invalid")
            context.set_trailing_metadata(grpc_bad_request_trailers(str(exc)))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            accepted = self._ingestor.accept(decoded)
            outcome = self._ingestor.outcome(accepted, accepted.done.result())
        except Overloaded as exc:
            self._outcome("overloaded")
            self._retry_later(context, str(exc), exc.retry_after_s)
        except ShuttingDown:
            self._outcome("shutting_down")
            self._retry_later(context, "receiver is shutting down", self._retry_after)
        except CommitFailed as exc:
            self._outcome("commit_failed")
            self._retry_later(context, str(exc), self._retry_after)
        self._outcome("ok" if not outcome.rejected else "partial")
        return export_response(PROTOBUF, outcome.rejected, outcome.error_message)


def build_grpc_server(ingestor: Ingestor, settings: ReceiverSettings) -> tuple[grpc.Server, int]:
    """Create (not start) the gRPC server; returns it with the bound port."""
    service = TraceService(ingestor, settings)
    limit = settings.max_message_bytes
    options: list[tuple[str, Any]] = [
        # grpcio checks this on the decompressed message, which is what OTLP's limit means
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ]
    interceptors = []
    if settings.auth_token:
        interceptors.append(BearerAuth(settings.auth_token, lambda: service._outcome("unauthenticated")))
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="otlp-grpc"),
        options=options,
        interceptors=interceptors,
    )
    handler = grpc.unary_unary_rpc_method_handler(service.export)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
    address = f"{settings.host}:{settings.grpc_port}"
    if settings.tls_cert and settings.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0 and settings.grpc_port != 0:
        raise OSError(f"cannot listen on {address} for OTLP/gRPC")
    return server, port
