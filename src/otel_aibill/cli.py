"""``otel-aibill``: the command line. Global ``--db`` and ``--config`` on every command."""

from __future__ import annotations

import csv
import importlib
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from otel_aibill.config import Config, ConfigError, load_config
from otel_aibill.ledger.base import GROUP_FIELDS, UsageQuery, UsageSummary

app = typer.Typer(
    name="otel-aibill",
    help="Bill customers for AI usage from OpenTelemetry spans.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
customers_app = typer.Typer(help="Map your customer ids to Stripe customer ids.", no_args_is_help=True)
app.add_typer(customers_app, name="customers")


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@app.callback()
def _main(
    ctx: typer.Context,
    db: Annotated[
        str | None, typer.Option("--db", envvar="OTEL_AIBILL_DB", help="Ledger URL (sqlite:///aibill.db).")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", envvar="OTEL_AIBILL_CONFIG", help="TOML configuration file.")
    ] = None,
) -> None:
    try:
        cfg = load_config(config, db=db)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    ctx.obj = {"db": cfg.db, "config": cfg}


def _cfg(ctx: typer.Context) -> Config:
    cfg: Config = ctx.obj["config"]
    return cfg


def _open(ctx: typer.Context) -> Any:
    from otel_aibill.ledger import open_ledger

    try:
        return open_ledger(_cfg(ctx).db)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _fail(f"{name}: not an ISO 8601 date or time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def decimal_text(value: Decimal) -> str:
    """Positional notation, full precision: ``str`` would write small amounts as ``1.5E-7``."""
    return format(value, "f")


def summary_dicts(rows: list[UsageSummary], by: tuple[str, ...]) -> list[dict[str, Any]]:
    """The documented JSON shape: decimal strings for money, every grouping key present."""
    out = []
    for row in rows:
        item: dict[str, Any] = {k: row.key.get(k, "*") for k in ("customer", "provider", "model")}
        item.update({k: row.key[k] for k in by if k not in item})
        item.update(
            spans=row.spans,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_read_tokens=row.cache_read_tokens,
            cache_write_tokens=row.cache_write_tokens,
            reasoning_tokens=row.reasoning_tokens,
            cost=decimal_text(row.cost),
            billed=decimal_text(row.billed),
            margin=decimal_text(row.billed - row.cost),
            currency=row.currency,
            unpriced_spans=row.unpriced_spans,
            pending_spans=row.pending_spans,
        )
        out.append(item)
    return out


def _money(value: str) -> str:
    return f"{Decimal(value):.6f}"


def wide_console() -> Console:
    """A console that does not squash tables to 80 columns when output goes to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def render_usage_table(items: list[dict[str, Any]], by: tuple[str, ...], console: Console) -> None:
    table = Table(title="Usage", show_lines=False)
    for key in by:
        table.add_column(key, overflow="fold")
    numeric: tuple[str, ...] = ("spans", "input", "output", "cache read", "cache write", "reasoning")
    numeric += ("cost", "billed", "margin")
    for col in numeric:
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("notes")
    for item in items:
        notes = []
        if item["unpriced_spans"]:
            notes.append(f"{item['unpriced_spans']} unpriced")
        if item["pending_spans"]:
            notes.append(f"{item['pending_spans']} pending")
        table.add_row(
            *(str(item[k]) for k in by),
            f"{item['spans']:,}",
            f"{item['input_tokens']:,}",
            f"{item['output_tokens']:,}",
            f"{item['cache_read_tokens']:,}",
            f"{item['cache_write_tokens']:,}",
            f"{item['reasoning_tokens']:,}",
            _money(item["cost"]),
            _money(item["billed"]),
            _money(item["margin"]),
            ", ".join(notes),
        )
    console.print(table)


@app.command()
def usage(
    ctx: typer.Context,
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, inclusive (span start).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time, exclusive.")] = None,
    by: Annotated[str, typer.Option(help=f"Group by, comma-separated: {','.join(GROUP_FIELDS)}.")] = (
        "customer,provider,model"
    ),
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """Usage, provider cost, billed amount and margin, grouped."""
    group = tuple(part.strip() for part in by.split(",") if part.strip())
    unknown = [g for g in group if g not in GROUP_FIELDS]
    if unknown or not group:
        raise _fail(f"--by: unknown field(s) {unknown}; choose from {', '.join(GROUP_FIELDS)}")
    if len(set(group)) != len(group):
        raise _fail(f"--by: a field is repeated: {by}")
    if fmt not in ("table", "json", "csv"):
        raise _fail("--format must be table, json or csv")
    query = UsageQuery(
        customer=customer, since=_parse_time(since, "--since"), until=_parse_time(until, "--until"), by=group
    )
    ledger = _open(ctx)
    try:
        items = summary_dicts(ledger.usage_summary(query), group)
    finally:
        ledger.close()
    if fmt == "json":
        typer.echo(json.dumps(items, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        if items:
            writer = csv.DictWriter(buf, fieldnames=list(items[0]))
            writer.writeheader()
            writer.writerows(items)
        typer.echo(buf.getvalue(), nl=False)
    else:
        render_usage_table(items, group, wide_console())


@customers_app.command("set")
def customers_set(
    ctx: typer.Context,
    customer_id: str,
    stripe_customer_id: Annotated[str | None, typer.Argument(help="cus_... (omit to clear).")] = None,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
) -> None:
    """Map one of your customer ids to a Stripe customer id."""
    if stripe_customer_id is not None and not stripe_customer_id.startswith("cus_"):
        raise _fail(f"not a Stripe customer id (cus_...): {stripe_customer_id!r}")
    ledger = _open(ctx)
    try:
        ledger.set_customer(customer_id, stripe_customer_id, name)
    finally:
        ledger.close()
    typer.echo(f"{customer_id} -> {stripe_customer_id or '(no Stripe customer)'}")


@customers_app.command("list")
def customers_list(ctx: typer.Context) -> None:
    """The customer mapping stored in the ledger."""
    ledger = _open(ctx)
    try:
        rows = ledger.customers()
    finally:
        ledger.close()
    table = Table("customer", "stripe customer", "name")
    for c in rows:
        table.add_row(c.customer_id, c.stripe_customer_id or "-", c.name or "")
    Console().print(table)


@app.command()
def demo(
    ctx: typer.Context,
    calls: Annotated[int, typer.Option(help="LLM calls per customer.")] = 3,
) -> None:
    """Real instrumented OpenAI/Anthropic SDK calls to a built-in fake provider, billed and shown."""
    try:
        from otel_aibill.demo.run import run_demo
    except ImportError as exc:
        raise _fail(f"the demo needs the 'demo' extra: pip install 'otel-aibill[demo]' ({exc})") from exc
    run_demo(_cfg(ctx).db, _cfg(ctx), calls=calls)


def _register_optional() -> None:
    """Commands whose dependencies live in extras (receiver, stripe) appear when those are installed."""
    missing_extra = ("grpc", "starlette", "uvicorn", "prometheus_client", "google", "stripe")

    def optional(module: str) -> Any:
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in missing_extra:
                return None
            raise

    if serve := optional("otel_aibill.cli_serve"):
        app.command("serve")(serve.serve)
    if replay := optional("otel_aibill.cli_replay"):
        app.command("replay")(replay.replay)
    if stripe := optional("otel_aibill.cli_stripe"):
        app.add_typer(stripe.stripe_app, name="stripe")


_register_optional()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
