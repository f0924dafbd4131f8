"""What every command shares: the error exit, the configuration in the context, the ``--db`` and
``--config`` given after a command name, ledger opening and time parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from otel_aibill.config import Config, ConfigError, load_config
from otel_aibill.display import visible

DbOption = Annotated[str | None, typer.Option("--db", help="Ledger URL (overrides the global --db).")]
ConfigOption = Annotated[str | None, typer.Option("--config", help="TOML configuration file.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise (so callers can chain)."""
    Console(stderr=True).print(f"[red]error:[/red] {escape(visible(message))}")
    return typer.Exit(code)


def config_of(ctx: typer.Context) -> Config:
    """The configuration the global callback loaded from ``--db``/``--config``."""
    cfg: Config = ctx.obj["config"]
    return cfg


def command_config(ctx: typer.Context | None, db: str | None, config: str | None) -> Config:
    """The global ``--db``/``--config`` (in ``ctx.obj``), overridden by the same options given after
    the command name."""
    base: Config | None = None
    if ctx is not None and isinstance(ctx.obj, dict):
        base = ctx.obj.get("config")
    try:
        if config is not None or base is None:
            return load_config(config, db=db or (base.db if base is not None and config is None else None))
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    return base.model_copy(update={"db": db}) if db else base


def open_ledger_or_fail(db: str) -> Any:
    """The ledger at ``db``; an unusable URL (exit 2) or a database that cannot be reached (exit 1)
    is an error exit, not a traceback."""
    from otel_aibill.errors import RetryLaterError
    from otel_aibill.ledger import open_ledger

    try:
        return open_ledger(db)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    except RetryLaterError as exc:
        raise fail(str(exc), code=1) from exc


def parse_time(value: str, name: str) -> datetime:
    """An ISO 8601 date or time given to option ``name``; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise fail(f"{name}: not an ISO 8601 date or time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
