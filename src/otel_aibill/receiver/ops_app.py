"""The app on the ops port (``--ui-port``): ``/healthz``, Prometheus ``/metrics``, and the routes
given in ``routes`` (the Stripe webhook when it is configured); ``/`` lists them all with the
OTLP endpoints, so the address ``serve`` prints answers with what is there.

A Starlette app, so other routes can be mounted next to them.

``/healthz`` is liveness (the process serves; restarting it would not help), ``/readyz``
readiness (send it spans now: its ledger takes writes and its committer keeps up). They differ
through a full disk or a database that is down: spans should go elsewhere, not the process away.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from otel_aibill.receiver.metrics import ReceiverMetrics


def build_ops_app(
    metrics: ReceiverMetrics,
    health: Callable[[], dict[str, Any]],
    routes: Sequence[BaseRoute] = (),
    endpoints: Callable[[], Mapping[str, str]] = dict,
    ready: Callable[[], dict[str, Any]] | None = None,
) -> Starlette:
    """``health()`` and ``ready()`` (default: ``health``) return a JSON-able status; a false
    ``"ok"`` is a 503. ``endpoints()`` names the other listeners (OTLP), for the index page."""

    async def healthz(request: Request) -> Response:
        """Liveness: the receiver's state as JSON; 503 until it serves (and while it stops)."""
        status = health()
        return JSONResponse(status, status_code=200 if status.get("ok", True) else 503)

    async def readyz(request: Request) -> Response:
        """Readiness: 503 while the last ledger commit failed or the commit queue is full."""
        status = (ready or health)()
        return JSONResponse(status, status_code=200 if status.get("ok", True) else 503)

    async def prometheus(request: Request) -> Response:
        """Prometheus metrics: spans received, billed, refused; queue depth; commit times."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    own = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", prometheus), *routes]

    async def index(request: Request) -> Response:
        """This page (JSON when asked for ``application/json``)."""
        listed = [_describe(r) for r in [Route("/", index), *own]]
        served = dict(endpoints())
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"routes": listed, "otlp": served})
        return HTMLResponse(_page(listed, served))

    return Starlette(routes=[Route("/", index), *own])


def _describe(route: BaseRoute) -> dict[str, str]:
    path = getattr(route, "path", "")
    methods = sorted(getattr(route, "methods", None) or ())
    doc = (getattr(getattr(route, "endpoint", None), "__doc__", None) or "").strip()
    method = "POST" if "POST" in methods and "GET" not in methods else "GET"
    return {"path": path, "method": method, "about": " ".join(doc.split("\n\n")[0].split())}


def _page(routes: Sequence[Mapping[str, str]], otlp: Mapping[str, str]) -> str:
    e = html.escape
    items = "".join(
        f'<li><code>{e(r["method"])} <a href="{e(r["path"])}">{e(r["path"])}</a></code> {e(r["about"])}</li>'
        if r["method"] == "GET"
        else f"<li><code>{e(r['method'])} {e(r['path'])}</code> {e(r['about'])}</li>"
        for r in routes
    )
    receivers = "".join(f"<li>{e(name)}: <code>{e(where)}</code></li>" for name, where in otlp.items())
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>otel-aibill</title></head><body>'
        "<h1>otel-aibill</h1><p>This port serves operations; usage and billing are read with the"
        " command line (<code>otel-aibill usage</code>, <code>otel-aibill stripe ...</code>).</p>"
        f"<h2>Here</h2><ul>{items}</ul>"
        + (f"<h2>OTLP receivers (send spans here)</h2><ul>{receivers}</ul>" if receivers else "")
        + "</body></html>"
    )
