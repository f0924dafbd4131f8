"""A local price feed server, feed builders over the bundled data, and the genai-prices oracle
on a given snapshot's data."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import Provider

from otel_aibill.pricing import snapshot as snapshots


def bundled_raw() -> list[dict[str, Any]]:
    return copy.deepcopy(snapshots.to_raw(list(snapshots.bundled().providers)))


def model_of(raw: list[dict[str, Any]], provider: str, model: str) -> dict[str, Any]:
    p = next(p for p in raw if p["id"] == provider)
    return next(m for m in p["models"] if m["id"] == model)


def add_period(raw: list[dict[str, Any]], provider: str, model: str, start: str, **prices: str) -> None:
    """A new price period of ``model`` from ``start``, the latest one's prices with ``prices`` changed."""
    m = model_of(raw, provider, model)
    periods = m["prices"] if isinstance(m["prices"], list) else [{"prices": m["prices"]}]
    latest = dict(periods[-1]["prices"])
    latest.update(prices)
    m["prices"] = [*periods, {"constraint": {"start_date": start}, "prices": latest}]


def feed_bytes(raw: Any) -> bytes:
    return snapshots.canonical(raw)


class FeedServer:
    """Serves ``body`` at ``/data.json`` with an ETag; ``delay`` makes it slow, ``status`` fail."""

    def __init__(self) -> None:
        self.body = b"[]"
        self.delay = 0.0
        self.status = 200
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(dict(self.headers))
                if server.delay:
                    time.sleep(server.delay)
                etag = f'"{snapshots.data_hash(server.body)[:16]}"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def oracle_data(providers: Any) -> Iterator[None]:
    """``genai_prices.calc_price`` on ``providers`` instead of its bundled data."""
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(list(providers), from_auto_update=False))
    try:
        yield
    finally:
        data_snapshot.set_custom_snapshot(None)


def oracle(providers: list[Provider], provider: str, model: str, at: datetime, **tokens: int) -> Decimal:
    with oracle_data(providers):
        usage = genai_prices.Usage(**tokens)  # type: ignore[arg-type]
        price: Decimal = genai_prices.calc_price(
            usage, model, provider_id=provider, genai_request_timestamp=at
        ).total_price
        return price
