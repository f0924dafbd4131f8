"""``otel-aibill customers set|list``: your customer ids and the Stripe customers they bill to."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from otel_aibill.cli.options import config_of, fail, open_ledger_or_fail
from otel_aibill.display import cell, visible

customers_app = typer.Typer(help="Map your customer ids to Stripe customer ids.", no_args_is_help=True)


@customers_app.command("set")
def customers_set(
    ctx: typer.Context,
    customer_id: str,
    stripe_customer_id: Annotated[
        str | None, typer.Argument(help="cus_... (omit to clear).", metavar="[STRIPE_CUSTOMER_ID]")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Display name.", metavar="TEXT")] = None,
) -> None:
    """Map one of your customer ids to a Stripe customer id."""
    if stripe_customer_id is not None and not stripe_customer_id.startswith("cus_"):
        raise fail(f"not a Stripe customer id (cus_...): {stripe_customer_id!r}")
    ledger = open_ledger_or_fail(config_of(ctx).db)
    try:
        ledger.set_customer(customer_id, stripe_customer_id, name)
    finally:
        ledger.close()
    typer.echo(f"{visible(customer_id)} -> {visible(stripe_customer_id or '(no Stripe customer)')}")


@customers_app.command("list")
def customers_list(ctx: typer.Context) -> None:
    """The customer mapping stored in the ledger."""
    ledger = open_ledger_or_fail(config_of(ctx).db, must_exist=True)
    try:
        rows = ledger.customers()
    finally:
        ledger.close()
    table = Table("customer", "stripe customer", "name")
    for c in rows:
        table.add_row(cell(c.customer_id), cell(c.stripe_customer_id or "-"), cell(c.name or ""))
    Console().print(table)
