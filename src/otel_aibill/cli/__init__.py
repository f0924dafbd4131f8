"""``otel-aibill``: the command line. Global ``--db`` and ``--config`` on every command.

One module per command group; this one builds the application and registers them, the ones whose
dependencies live in extras (receiver, stripe) only when those are installed.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer

from otel_aibill.cli.customers import customers_app
from otel_aibill.cli.demo import demo
from otel_aibill.cli.options import fail
from otel_aibill.cli.prices import prices_app
from otel_aibill.cli.usage import usage
from otel_aibill.config import ConfigError, load_config

app = typer.Typer(
    name="otel-aibill",
    help="Bill customers for AI usage from OpenTelemetry spans.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"otel-aibill {version('otel-aibill')}")
        except PackageNotFoundError:  # run from a source tree that is not installed
            typer.echo("otel-aibill (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="OTEL_AIBILL_DB", metavar="URL", help="Ledger URL (sqlite:///aibill.db)."
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", envvar="OTEL_AIBILL_CONFIG", metavar="FILE", help="TOML configuration file."
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Show the version and exit."),
    ] = False,
) -> None:
    try:
        cfg = load_config(config, db=db)
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    ctx.obj = {"db": cfg.db, "config": cfg}


def _optional(module: str) -> Any:
    """The command module, or None when an extra it needs is not installed."""
    missing_extra = ("grpc", "starlette", "uvicorn", "prometheus_client", "google", "stripe")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in missing_extra:
            return None
        raise


app.add_typer(customers_app, name="customers")
app.add_typer(prices_app, name="prices")
app.command()(usage)
app.command()(demo)
if serve := _optional("otel_aibill.cli.serve"):
    app.command("serve")(serve.serve)
if replay := _optional("otel_aibill.cli.replay"):
    app.command("replay")(replay.replay)
if stripe := _optional("otel_aibill.cli.stripe"):
    app.add_typer(stripe.stripe_app, name="stripe")


def main() -> None:
    app()
