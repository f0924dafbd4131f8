"""The Stripe webhook endpoint under bad deliveries: bounded, signature first, 400s, never a 500."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from otel_aibill.stripe.store import ExportStore
from otel_aibill.stripe.webhook import MAX_BODY_BYTES, TOLERANCE, webhook_route

SECRET = "whsec_test_hostile"
EVENT = json.dumps({"id": "evt_1", "object": "v2.core.event", "type": "v1.billing.meter.no_meter_found"})


def sign(body: bytes | str, t: int | None = None, secret: str = SECRET) -> str:
    raw = body.encode() if isinstance(body, str) else body
    t = int(time.time()) if t is None else t
    return f"t={t},v1={hmac.new(secret.encode(), str(t).encode() + b'.' + raw, hashlib.sha256).hexdigest()}"


class _Stream:
    """A request body that counts how much of it the server pulled."""

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk, self.chunks, self.sent = chunk, chunks, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.sent += len(self.chunk)
            yield self.chunk


@pytest.fixture
def web(tmp_path: Path) -> Iterator[TestClient]:
    store = ExportStore(f"sqlite:///{tmp_path / 'w.db'}")
    with TestClient(
        Starlette(routes=[webhook_route(store, SECRET)]), raise_server_exceptions=False
    ) as client:
        yield client


def _post(web: TestClient, body: bytes | str, header: str | None) -> int:
    headers = {"Stripe-Signature": header} if header is not None else {}
    return web.post("/stripe/webhook", content=body, headers=headers).status_code


def test_a_signed_event_is_received(web: TestClient) -> None:
    assert _post(web, EVENT, sign(EVENT)) == 200


def test_invalid_utf8_is_a_400_not_a_500(web: TestClient) -> None:
    body = b'{"id": "\xff\xfe"}'
    assert _post(web, body, sign(body)) == 400
    assert _post(web, body, "t=1,v1=00") == 400


def test_a_delivery_signed_in_the_future_is_refused(web: TestClient) -> None:
    assert _post(web, EVENT, sign(EVENT, t=int(time.time()) + 3600)) == 400
    assert _post(web, EVENT, sign(EVENT, t=int(time.time()) + TOLERANCE - 30)) == 200
    assert _post(web, EVENT, sign(EVENT, t=int(time.time()) - 3600)) == 400


def test_unsigned_or_badly_signed_deliveries_are_refused_before_the_body_is_read(web: TestClient) -> None:
    big = _Stream(b"x" * 65536, 3200)  # 200 MiB if read
    response = web.post("/stripe/webhook", content=big)  # no signature header
    assert response.status_code == 400
    assert big.sent < 16 * 65536
    for header in ("garbage", "t=abc,v1=00", "v1=00", "t=1"):
        assert _post(web, EVENT, header) == 400
    assert _post(web, EVENT, sign(EVENT, secret="whsec_other")) == 400


def test_a_large_body_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """Called as ASGI directly, counting the chunks the endpoint pulls (a test client would
    read the whole body before the app sees it)."""
    store = ExportStore(f"sqlite:///{tmp_path / 'big.db'}")
    app = Starlette(routes=[webhook_route(store, SECRET)])
    chunk, pulled, sent = b"x" * 65536, [0], []

    async def receive() -> dict[str, object]:
        pulled[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled[0] < 3200}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/stripe/webhook",
        "headers": [(b"stripe-signature", sign(b"whatever").encode())],
        "query_string": b"",
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 400
    assert pulled[0] * len(chunk) <= MAX_BODY_BYTES + len(chunk)

    with TestClient(app) as web:
        declared = b"y" * (MAX_BODY_BYTES + 1)
        response = web.post("/stripe/webhook", content=declared, headers={"Stripe-Signature": sign(declared)})
        assert response.status_code == 400 and "larger" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        "[1, 2]",
        "null",
        '"text"',
        '{"id": 5, "type": "v1.billing.meter.no_meter_found"}',
        '{"id": "evt_x"}',
        '{"id": "e", "object": "v2.core.event", "type": "v1.billing.meter.no_meter_found",'
        ' "related_object": 7}',
        "{not json",
    ],
)
def test_signed_but_malformed_events_are_400(web: TestClient, body: str) -> None:
    assert _post(web, body, sign(body)) == 400
