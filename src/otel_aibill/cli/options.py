"""What every command shares: the error exit, the configuration in the context, the ``--db`` and
``--config`` given after a command name, ledger opening and time parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from otel_aibill.config import Config, ConfigError, load_config
from otel_aibill.display import visible

DbOption = Annotated[
    str | None, typer.Option("--db", metavar="URL", help="Ledger URL (overrides the global --db).")
]
ConfigOption = Annotated[
    str | None, typer.Option("--config", metavar="FILE", help="TOML configuration file.")
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise (so callers can chain)."""
    shown = "\n".join(visible(line) for line in message.split("\n"))
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(shown)}")
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


def open_ledger_or_fail(db: str, *, must_exist: bool = False) -> Any:
    """The ledger at ``db``; an unusable URL (exit 2), a database that cannot be reached or opened,
    or with ``must_exist`` (commands that only read) one that is not there (exit 1) is a one-line
    error, not a traceback, and nothing is created."""
    import sqlite3

    from otel_aibill.errors import RetryLaterError
    from otel_aibill.ledger import open_ledger

    path = _sqlite_file(db)
    if must_exist and path is not None and not path.exists():
        raise fail(f"no ledger at {db}: {path} does not exist (demo, serve or replay create one)", code=1)
    try:
        return open_ledger(db)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    except RetryLaterError as exc:
        raise fail(str(exc), code=1) from exc
    except sqlite3.Error as exc:
        hint = ""
        if path is not None and not path.parent.is_dir():
            hint = f" (the directory {path.parent} does not exist)"
        raise fail(f"cannot open the ledger at {db}: {exc}{hint}", code=1) from exc


def check_sqlite_file(db: str) -> None:
    """Before a long-running command starts: a SQLite ledger file that cannot be opened is the
    one-line error of ``open_ledger_or_fail`` (other URLs are checked where they are opened)."""
    if _sqlite_file(db) is not None:
        open_ledger_or_fail(db).close()


def _sqlite_file(db: str) -> Path | None:
    """The file of a SQLite ledger URL; None for other URLs, in-memory ones and bad ones (which
    opening reports)."""
    from otel_aibill.ledger.url import parse_sqlite_url

    if not db.lower().startswith("sqlite:"):
        return None
    try:
        options = parse_sqlite_url(db)
    except ValueError:
        return None
    return None if options.in_memory else Path(options.path)


def parse_time(value: str, name: str) -> datetime:
    """An ISO 8601 date or time given to option ``name``; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise fail(f"{name}: not an ISO 8601 date or time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
