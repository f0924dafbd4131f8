"""A span the ledger cannot store is refused alone, as OTLP partial success, through ``serve``.

Before, such a span (text that is not valid Unicode, e.g. an OTLP/JSON ``\\ud800`` escape in a
scope name) failed the transaction of its whole request: 503, the collector retried the same
request until it gave up, and every good span of it was lost. Requests grouped into the same
commit must not be affected either.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_receiver_server import COST_1000_IN_200_OUT, Server

TRACE = "0af7651916cd43dd8448eb211c80319c"


def _span(span_id: str, customer: str, output_tokens: str = "200") -> dict[str, Any]:
    kv = lambda k, v: {"key": k, "value": {"stringValue": v}}  # noqa: E731
    return {
        "traceId": TRACE,
        "spanId": span_id,
        "name": "chat gpt-4o-mini",
        "startTimeUnixNano": "1760000000000000000",
        "endTimeUnixNano": "1760000001000000000",
        "attributes": [
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o-mini"),
            kv("customer.id", customer),
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": output_tokens}},
        ],
    }


def _body(scopes: dict[str, list[str]], customer: str = "acme") -> bytes:
    """An OTLP/JSON request with the given span ids under each scope name (spans of the scopes
    with unstorable names report other counts: equal counts by another scope at the same time
    would be one call seen twice)."""
    doc = {
        "resourceSpans": [
            {
                "resource": {},
                "scopeSpans": [
                    {
                        "scope": {"name": name},
                        "spans": [_span(s, customer, "199" if "BAD" in name else "200") for s in spans],
                    }
                    for name, spans in scopes.items()
                ],
            }
        ]
    }
    return json.dumps(doc).replace("BAD", "\\ud800").encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


def _post(server: Server, body: bytes) -> httpx.Response:
    return httpx.post(
        server.traces_url, content=body, headers={"content-type": "application/json"}, timeout=60
    )


def _stored(server: Server) -> dict[str, Any]:
    return {r.priced.usage.span_id: r.priced for r in server.ledger_rows()}


def test_unstorable_span_is_refused_alone_as_partial_success(server: Server) -> None:
    body = _body({"app": ["00000000000000a1", "00000000000000a3"], "appBAD": ["00000000000000a2"]})
    r = _post(server, body)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "00000000000000a2" in partial["errorMessage"] and "could not be stored" in partial["errorMessage"]
    json.dumps(partial).encode()  # the message itself is valid text
    stored = _stored(server)
    assert set(stored) == {"00000000000000a1", "00000000000000a3"}
    assert all(p.usage.customer == "acme" and p.cost == COST_1000_IN_200_OUT for p in stored.values())
    assert server.metric("otel_aibill_spans_rejected_total") == 1
    # a retry of the same request changes nothing: the good spans are duplicates, the bad one refused
    again = _post(server, body)
    assert again.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert set(_stored(server)) == set(stored)


def test_requests_committed_together_with_an_unstorable_span_are_unaffected(tmp_path: Path) -> None:
    srv = Server(tmp_path, env={"OTEL_AIBILL_RECEIVER_COMMIT_DELAY_MS": "300"})
    try:
        bodies = [_body({"app": [f"00000000000000{i:x}0"]}, customer=f"c{i}") for i in range(1, 7)]
        bodies.append(_body({"appBAD": ["00000000000000bb"], "app": ["00000000000000cc"]}))
        replies: list[httpx.Response | None] = [None] * len(bodies)

        def send(i: int) -> None:
            replies[i] = _post(srv, bodies[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        good, bad = replies[:-1], replies[-1]
        assert all(r is not None and r.status_code == 200 and r.json() == {} for r in good)
        assert bad is not None and bad.status_code == 200
        assert bad.json()["partialSuccess"]["rejectedSpans"] == "1"
        stored = _stored(srv)
        assert set(stored) == {f"00000000000000{i:x}0" for i in range(1, 7)} | {"00000000000000cc"}
        assert {stored[f"00000000000000{i:x}0"].usage.customer for i in range(1, 7)} == {
            f"c{i}" for i in range(1, 7)
        }
    finally:
        assert srv.stop() == 0
