"""OTLP reply bodies and gRPC retry metadata, in the encoding the client spoke."""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def export_response(content_type: str, rejected: int, error_message: str) -> bytes:
    """An ExportTraceServiceResponse; ``partial_success`` only when something was rejected."""
    if content_type == JSON:
        if not rejected and not error_message:
            return b"{}"
        partial = {"rejectedSpans": str(rejected), "errorMessage": error_message}
        return json.dumps({"partialSuccess": partial}).encode()
    response = trace_service_pb2.ExportTraceServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error_message
    return bytes(response.SerializeToString())


def retry_info(retry_after_s: float) -> error_details_pb2.RetryInfo:
    seconds = int(retry_after_s)
    return error_details_pb2.RetryInfo(
        retry_delay=Duration(seconds=seconds, nanos=int((retry_after_s - seconds) * 1e9))
    )


def status(code: int, message: str, retry_after_s: float | None = None) -> status_pb2.Status:
    """A google.rpc.Status: retryable ones carry a RetryInfo, bad data (INVALID_ARGUMENT) the
    BadRequest the OTLP spec asks for."""
    result = status_pb2.Status(code=code, message=message)
    if retry_after_s is not None:
        result.details.add().Pack(retry_info(retry_after_s))
    if code == code_pb2.INVALID_ARGUMENT:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(description=message)
        result.details.add().Pack(bad)
    return result


def status_body(content_type: str, code: int, message: str, retry_after_s: float | None = None) -> bytes:
    """The ``status`` as the body OTLP/HTTP prescribes for every 4xx and 5xx reply.

    JSON goes through ``json_format`` so the details are proto3 JSON (``@type``, durations as
    ``"1.500s"``) that any Status parser reads back.
    """
    status_message = status(code, message, retry_after_s)
    if content_type == JSON:
        return json.dumps(json_format.MessageToDict(status_message)).encode()
    return bytes(status_message.SerializeToString())


def grpc_retry_trailers(message: str, retry_after_s: float) -> tuple[tuple[str, bytes], ...]:
    """UNAVAILABLE trailers carrying RetryInfo where each exporter family looks for it.

    The Go collector reads ``grpc-status-details-bin`` (a google.rpc.Status), the Python SDK
    exporter reads ``google.rpc.retryinfo-bin``; both are sent.
    """
    info = retry_info(retry_after_s)
    return (
        ("grpc-status-details-bin", status(code_pb2.UNAVAILABLE, message, retry_after_s).SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


def grpc_bad_request_trailers(message: str) -> tuple[tuple[str, bytes], ...]:
    """INVALID_ARGUMENT trailers: the Status with its BadRequest, as the HTTP body carries it."""
    return (("grpc-status-details-bin", status(code_pb2.INVALID_ARGUMENT, message).SerializeToString()),)
