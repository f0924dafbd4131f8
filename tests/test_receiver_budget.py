"""The receiver's bound in bytes on request bodies held between reading and commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import httpx
import pytest

from otel_aibill.receiver.budget import ByteBudget
from otel_aibill.receiver.committer import GroupCommitter
from otel_aibill.receiver.grpc_server import TraceService
from otel_aibill.receiver.http_app import OtlpHttpApp
from otel_aibill.receiver.ingest import Ingestor
from otel_aibill.receiver.metrics import ReceiverMetrics
from otel_aibill.receiver.settings import ReceiverSettings


def _ingestor(limit: int) -> Ingestor:
    def no_sink() -> Any:
        raise AssertionError("nothing may reach the ledger")

    metrics = ReceiverMetrics()
    return Ingestor(GroupCommitter(no_sink, metrics), metrics, ByteBudget(limit))


def _post(app: OtlpHttpApp, body: bytes) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
            return await client.post("/v1/traces", content=body, headers={"content-type": "application/json"})

    return asyncio.run(post())


def test_budget_lets_one_request_through_when_idle_and_refuses_what_goes_over() -> None:
    budget = ByteBudget(100)
    assert budget.take(500)  # nothing held: one request always fits
    assert not budget.take(1)
    budget.give_back(500)
    assert budget.take(60) and budget.take(40) and not budget.take(1)


def test_http_body_over_the_budget_is_told_to_retry_and_its_bytes_given_back() -> None:
    ingestor = _ingestor(64 * 1024)
    app = OtlpHttpApp(ingestor, ReceiverSettings(http_port=0, grpc_port=0, ui_port=0))
    assert ingestor.budget.take(60 * 1024)  # another request's body
    response = _post(app, b"{" + b" " * (8 * 1024) + b"}")
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert ingestor.budget.held == 60 * 1024
    assert ingestor.metrics.overloaded._value.get() == 1


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.trailers: Sequence[tuple[str, Any]] = ()

    def invocation_metadata(self) -> Sequence[tuple[str, str]]:
        return ()

    def set_trailing_metadata(self, trailers: Sequence[tuple[str, Any]]) -> None:
        self.trailers = trailers

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise _Aborted(details)


def test_grpc_message_over_the_budget_is_unavailable_with_a_retry_hint() -> None:
    ingestor = _ingestor(64 * 1024)
    service = TraceService(ingestor, ReceiverSettings(http_port=0, grpc_port=0, ui_port=0))
    assert ingestor.budget.take(60 * 1024)
    context = _Context()
    with pytest.raises(_Aborted):
        service.export(b"\x00" * (8 * 1024), context)  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert any(key == "google.rpc.retryinfo-bin" for key, _ in context.trailers)
    assert ingestor.budget.held == 60 * 1024
