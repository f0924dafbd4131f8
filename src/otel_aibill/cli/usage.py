"""``otel-aibill usage``: the ledger's usage, cost, billed amount and margin, grouped."""

from __future__ import annotations

from typing import Annotated

import typer

from otel_aibill.cli.options import config_of, fail, open_ledger_or_fail, parse_time
from otel_aibill.ledger.base import GROUP_FIELDS, UsageQuery
from otel_aibill.report import FORMATS, render_usage_table, summary_dicts, usage_csv, usage_json, wide_console


def usage(
    ctx: typer.Context,
    customer: Annotated[str | None, typer.Option(help="Only this customer.", metavar="ID")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO time, inclusive (span start).", metavar="TIME")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO time, exclusive.", metavar="TIME")] = None,
    by: Annotated[
        str, typer.Option(help=f"Group by, comma-separated: {','.join(GROUP_FIELDS)}.", metavar="FIELDS")
    ] = ("customer,provider,model"),
    fmt: Annotated[
        str, typer.Option("--format", help="table, json or csv.", metavar="[table|json|csv]")
    ] = "table",
) -> None:
    """Usage, provider cost, billed amount and margin, grouped."""
    group = tuple(part.strip() for part in by.split(",") if part.strip())
    unknown = [g for g in group if g not in GROUP_FIELDS]
    if unknown or not group:
        raise fail(f"--by: unknown field(s) {unknown}; choose from {', '.join(GROUP_FIELDS)}")
    if len(set(group)) != len(group):
        raise fail(f"--by: a field is repeated: {by}")
    if fmt not in FORMATS:
        raise fail("--format must be table, json or csv")
    query = UsageQuery(
        customer=customer,
        since=None if since is None else parse_time(since, "--since"),
        until=None if until is None else parse_time(until, "--until"),
        by=group,
    )
    ledger = open_ledger_or_fail(config_of(ctx).db, must_exist=True)
    try:
        items = summary_dicts(ledger.usage_summary(query), group)
    finally:
        ledger.close()
    if fmt == "json":
        typer.echo(usage_json(items))
    elif fmt == "csv":
        typer.echo(usage_csv(items), nl=False)
    else:
        render_usage_table(items, group, wide_console())
