"""``otel-aibill serve``: the OTLP receivers (gRPC :4317, HTTP :4318) and the ops port (:8318)."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console

from otel_aibill.cli.options import ConfigOption, DbOption, check_sqlite_file, command_config, fail
from otel_aibill.config import Config


def sink_factory(cfg: Config) -> Any:
    """Open the ledger and pipeline on the committer's thread (SQLite connections are per thread)."""

    def factory() -> Any:
        from otel_aibill.ledger import open_ledger
        from otel_aibill.pipeline import Pipeline
        from otel_aibill.watch.catalog_store import stored_pricer

        ledger = open_ledger(cfg.db)
        return Pipeline(ledger, cfg, pricer=stored_pricer(cfg.db, cfg)), ledger.close

    return factory


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (loopback by default).", metavar="HOST")
    ] = None,
    grpc_port: Annotated[int | None, typer.Option(help="OTLP/gRPC port [4317].", metavar="PORT")] = None,
    http_port: Annotated[int | None, typer.Option(help="OTLP/HTTP port [4318].", metavar="PORT")] = None,
    ui_port: Annotated[
        int | None,
        typer.Option(help="Ops port: /, /healthz, /metrics, /stripe/webhook [8318].", metavar="PORT"),
    ] = None,
    auth_token: Annotated[
        str | None,
        typer.Option(
            help="Require 'Authorization: Bearer TOKEN'. Prefer --auth-token-file or the environment"
            " variable OTEL_AIBILL_AUTH_TOKEN: a value on the command line is visible to every local"
            " user in the process list.",
            show_default=False,
            metavar="TOKEN",
        ),
    ] = None,
    auth_token_file: Annotated[
        str | None,
        typer.Option(help="Read the bearer token from this file (its first line).", metavar="FILE"),
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option(help="TLS certificate (PEM) for both receivers.", metavar="FILE")
    ] = None,
    tls_key: Annotated[str | None, typer.Option(help="TLS private key (PEM).", metavar="FILE")] = None,
    max_pending_spans: Annotated[
        int | None,
        typer.Option(help="Spans waiting for commit before clients are told to retry [65536].", metavar="N"),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Receive OTLP traces (gRPC and HTTP), bill them into the ledger; acknowledge after commit."""
    from pydantic import ValidationError

    from otel_aibill.receiver.server import run
    from otel_aibill.receiver.settings import receiver_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = command_config(ctx, db, config)
    check_sqlite_file(cfg.db)
    if auth_token_file is not None:
        if auth_token is not None:
            raise fail("give --auth-token or --auth-token-file, not both")
        auth_token = read_token_file(auth_token_file)
    try:
        settings = receiver_settings(
            cfg,
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            ui_port=ui_port,
            auth_token=auth_token,
            tls_cert=tls_cert,
            tls_key=tls_key,
            max_pending_spans=max_pending_spans,
        )
    except (ValidationError, ValueError) as exc:
        raise fail(f"invalid receiver settings: {exc}") from exc
    console = Console(stderr=True, soft_wrap=True)  # one log line per message, whatever the width

    def ready(ports: dict[str, int]) -> None:
        scheme = "https" if settings.tls_cert else "http"
        console.print(
            f"otel-aibill receiving OTLP on grpc {settings.host}:{ports['grpc']} and "
            f"{scheme}://{settings.host}:{ports['http']}/v1/traces; "
            f"ops {scheme}://{settings.host}:{ports['ui']}/healthz (ledger {cfg.db})",
            highlight=False,
        )

    from otel_aibill.errors import RetryLaterError

    try:
        with stripe_side(cfg, console) as ui_routes:
            tune_gc_for_ingest()
            code = run(settings, sink_factory(cfg), ui_routes=ui_routes, on_ready=ready)
    except RetryLaterError as exc:  # the ledger's database cannot be reached at start
        raise fail(str(exc), code=1) from exc
    except ValueError as exc:  # a ledger URL that cannot be used
        raise fail(str(exc)) from exc
    raise typer.Exit(code)


def read_token_file(path: str) -> str:
    """The first line of ``path``, stripped; an unreadable or empty file is an error exit."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read --auth-token-file {path}: {exc}") from exc
    if not token:
        raise fail(f"--auth-token-file {path} is empty")
    return token


def tune_gc_for_ingest() -> None:
    """Ingest allocates millions of short-lived tuples and records a second and hardly any
    reference cycles; with the default thresholds the cyclic collector runs every 700
    allocations and walks everything loaded at start-up again and again (about 5 µs of CPU per
    span, measured in ``bench_receiver.py --stages --gc``). Freeze what start-up loaded and
    collect the youngest generation every 50,000 allocations instead: garbage is still
    collected, cycles included, just in fewer, larger passes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@contextlib.contextmanager
def stripe_side(cfg: Config, console: Console) -> Iterator[list[Any]]:
    """The Stripe exporter loop (with STRIPE_API_KEY) and webhook route (with STRIPE_WEBHOOK_SECRET).

    The loop runs on its own thread with its own connections, and stops after the receivers
    have drained, so usage committed during shutdown is still picked up next time.
    """
    try:
        from otel_aibill.stripe.config import StripeEnv, stripe_config
    except ImportError:  # the 'stripe' extra is not installed
        yield []
        return
    env = StripeEnv.from_env()
    try:
        sc = stripe_config(cfg)
    except ValueError as exc:  # checked before anything listens, like the rest of the config
        raise fail(f"invalid [stripe] settings: {exc}") from exc
    routes: list[Any] = []
    stop = threading.Event()
    thread: threading.Thread | None = None
    store: Any = None
    if not env.api_key:
        console.print(
            "Stripe export: dry run (no STRIPE_API_KEY); 'otel-aibill stripe export --once' "
            "lists what would be sent.",
            highlight=False,
        )
    if env.api_key or env.webhook_secret:
        from otel_aibill.stripe.store import ExportStore, check_store_url
        from otel_aibill.stripe.transport import make_client

        try:
            check_store_url(cfg.db)  # refuse now rather than run without export
        except ValueError as exc:
            raise fail(str(exc)) from exc
        client = make_client(env, sc)
        if env.webhook_secret:
            from otel_aibill.stripe.webhook import webhook_route

            store = ExportStore(cfg.db)
            routes.append(webhook_route(store, env.webhook_secret, client))
        if client is not None:
            thread = threading.Thread(
                target=_export_loop, args=(cfg, sc, client, stop), name="otel-aibill-stripe", daemon=True
            )
            thread.start()
            console.print(
                f"Stripe export: {sc.mode} mode, {sc.api} API, every {sc.poll_interval:g}s"
                + ("; webhook at /stripe/webhook on the ops port" if env.webhook_secret else ""),
                highlight=False,
            )
    try:
        yield routes
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=60)
        if store is not None:
            store.close()


def _export_loop(cfg: Config, sc: Any, client: Any, stop: threading.Event) -> None:
    from otel_aibill.ledger import open_ledger
    from otel_aibill.stripe.exporter import StripeExporter
    from otel_aibill.stripe.store import ExportStore

    ledger = open_ledger(cfg.db)
    try:
        StripeExporter(ledger, ExportStore(cfg.db), cfg, client, stripe_settings=sc).run_forever(stop)
    finally:
        ledger.close()
