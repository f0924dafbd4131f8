"""Run the receivers: OTLP/gRPC, OTLP/HTTP and the ops app, around one group committer.

Shutdown (SIGTERM/SIGINT) order is what makes "acknowledged means committed" hold at exit too:
stop accepting (listeners close, new RPCs are refused), let in-flight requests finish — their
spans are committed by the still-running committer — then drain and close the committer and the
ledger, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import uvicorn
from starlette.routing import BaseRoute

from otel_aibill.receiver.budget import ByteBudget
from otel_aibill.receiver.committer import GroupCommitter, SinkFactory
from otel_aibill.receiver.grpc_server import build_grpc_server
from otel_aibill.receiver.http_app import OtlpHttpApp
from otel_aibill.receiver.ingest import Ingestor
from otel_aibill.receiver.log_limits import limit_client_error_logs
from otel_aibill.receiver.metrics import ReceiverMetrics
from otel_aibill.receiver.ops_app import build_ops_app
from otel_aibill.receiver.settings import ReceiverSettings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (we run several servers in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048, reuse_port=False)
    sock.set_inheritable(True)
    return sock


class Receiver:
    def __init__(
        self,
        settings: ReceiverSettings,
        sink_factory: SinkFactory,
        *,
        ui_routes: Sequence[BaseRoute] = (),
        metrics: ReceiverMetrics | None = None,
        on_ready: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ReceiverMetrics()
        self.committer = GroupCommitter(
            sink_factory,
            self.metrics,
            max_pending_spans=settings.max_pending_spans,
            max_batch_spans=settings.max_batch_spans,
            retry_after_s=settings.retry_after_seconds,
            sweep_interval_s=settings.sweep_interval_seconds,
            commit_delay_s=settings.commit_delay_ms / 1000,
        )
        self.ingestor = Ingestor(self.committer, self.metrics, ByteBudget(settings.max_inflight_bytes))
        self.ops_app = build_ops_app(
            self.metrics, self._health, ui_routes, self._endpoints, ready=self._ready
        )
        self.ports: dict[str, int] = {}
        self._state = "starting"
        self._on_ready = on_ready

    def _endpoints(self) -> dict[str, str]:
        """Where the OTLP receivers listen, once they do."""
        if not self.ports:
            return {}
        host, scheme = self.settings.host, "https" if self.settings.tls_cert else "http"
        where = f"[{host}]" if ":" in host else host
        return {
            "OTLP/gRPC": f"{where}:{self.ports['grpc']} (TraceService/Export)",
            "OTLP/HTTP": f"POST {scheme}://{where}:{self.ports['http']}/v1/traces (protobuf or JSON)",
        }

    def _health(self) -> dict[str, Any]:
        return {
            "ok": self._state == "serving",
            "state": self._state,
            "queue_spans": self.committer.pending_spans,
            **{f"{name}_port": port for name, port in self.ports.items()},
        }

    def _ready(self) -> dict[str, Any]:
        why = "not serving" if self._state != "serving" else self.committer.not_ready()
        status: dict[str, Any] = {
            "ok": why is None,
            "state": self._state,
            "queue_spans": self.committer.pending_spans,
        }
        if why:
            status["reason"] = why
        return status

    def _uvicorn(self, app: Any, lifespan: Literal["auto", "off"]) -> _Server:
        s = self.settings
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan=lifespan,
            ssl_certfile=s.tls_cert,
            ssl_keyfile=s.tls_key,
            timeout_graceful_shutdown=int(s.shutdown_grace_seconds) or None,
            timeout_keep_alive=30,
        )
        limit_client_error_logs()  # after the config: it sets uvicorn's logging up
        return _Server(config)

    async def serve(self, stop: asyncio.Event) -> None:
        s = self.settings
        await asyncio.to_thread(self.committer.start)
        grpc_server, grpc_port = build_grpc_server(self.ingestor, s)
        http_sock = _listen(s.host, s.http_port)
        ui_sock = _listen(s.host, s.ui_port)
        self.ports = {"grpc": grpc_port, "http": http_sock.getsockname()[1], "ui": ui_sock.getsockname()[1]}
        http = self._uvicorn(OtlpHttpApp(self.ingestor, s), "off")
        ui = self._uvicorn(self.ops_app, "auto")
        grpc_server.start()
        http_task = asyncio.create_task(http.serve(sockets=[http_sock]))
        ui_task = asyncio.create_task(ui.serve(sockets=[ui_sock]))
        stopped = asyncio.create_task(stop.wait())
        while not (http.started and ui.started):
            if http_task.done() or ui_task.done():
                break
            await asyncio.sleep(0.01)
        self._state = "serving"
        if self._on_ready:
            self._on_ready(self.ports)
        try:
            await asyncio.wait({stopped, http_task, ui_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._state = "draining"
            http.should_exit = True
            grace = s.shutdown_grace_seconds
            grpc_done: threading.Event = grpc_server.stop(grace)
            await asyncio.gather(
                http_task, asyncio.to_thread(grpc_done.wait, grace + 5), return_exceptions=True
            )
            await asyncio.to_thread(self.committer.close)
            self._state = "stopped"
            ui.should_exit = True
            await asyncio.gather(ui_task, return_exceptions=True)
            stopped.cancel()


def run(
    settings: ReceiverSettings,
    sink_factory: SinkFactory,
    *,
    ui_routes: Sequence[BaseRoute] = (),
    on_ready: Callable[[dict[str, int]], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    receiver = Receiver(settings, sink_factory, ui_routes=ui_routes, on_ready=on_ready)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await receiver.serve(stop)

    asyncio.run(main())
    return 0
