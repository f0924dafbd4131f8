"""The app on the ops port (``--ui-port``): ``/healthz``, Prometheus ``/metrics``, and the routes
given in ``routes`` (the Stripe webhook when it is configured).

A Starlette app, so other routes can be mounted next to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from otel_aibill.receiver.metrics import ReceiverMetrics


def build_ops_app(
    metrics: ReceiverMetrics,
    health: Callable[[], dict[str, Any]],
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """``health()`` returns a JSON-able status; a false ``"ok"`` turns /healthz into a 503."""

    async def healthz(request: Request) -> Response:
        status = health()
        return JSONResponse(status, status_code=200 if status.get("ok", True) else 503)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/metrics", prometheus), *routes],
    )
