"""``otel-aibill stripe setup|export|reconcile|held|models``."""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from otel_aibill.cli.options import fail, open_ledger_or_fail, parse_time
from otel_aibill.config import Config
from otel_aibill.display import cell, visible
from otel_aibill.stripe.config import StripeConfig, StripeEnv, currency_of, stripe_config

stripe_app = typer.Typer(help="Export usage to Stripe meters.", no_args_is_help=True)
console = Console()


def _settings(ctx: typer.Context) -> tuple[Config, StripeConfig]:
    cfg: Config = ctx.obj["config"]
    try:
        return cfg, stripe_config(cfg)
    except ValueError as exc:
        raise fail(f"invalid [stripe] settings: {exc}") from exc


def _client(sc: StripeConfig, required: bool) -> Any:
    from otel_aibill.stripe.transport import make_client

    client = make_client(StripeEnv.from_env(), sc)
    if client is None and required:
        raise fail("STRIPE_API_KEY is not set")
    return client


def _stripe_failed(exc: Exception) -> typer.Exit:
    """Stripe refused the key or failed: one line and exit 1, not a traceback."""
    status = getattr(exc, "http_status", None)
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    return fail(f"Stripe{f' answered {status}' if status else ''}: {message}", code=1)


def _open(ctx: typer.Context) -> tuple[Any, Any]:
    from otel_aibill.stripe.store import ExportStore

    db = ctx.obj["db"]
    ledger = open_ledger_or_fail(db, must_exist=True)  # no Stripe command creates a ledger
    try:
        return ledger, ExportStore(db)
    except ValueError as exc:
        ledger.close()
        raise fail(str(exc)) from exc


@stripe_app.command()
def setup(
    ctx: typer.Context,
    price: Annotated[bool, typer.Option(help="In cost mode, also create a product and a price.")] = True,
) -> None:
    """Create the meters the configured mode needs (and a price in cost mode); safe to run again."""
    import stripe

    from otel_aibill.stripe.setup import SetupError, ensure_meters, ensure_price

    cfg, sc = _settings(ctx)
    client = _client(sc, required=True)
    try:
        actions = ensure_meters(client, sc)
        if sc.mode == "cost" and price and sc.create_price:
            actions += ensure_price(client, sc, currency_of(cfg, sc), actions[0].id)
    except SetupError as exc:
        raise fail(str(exc)) from exc
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from exc
    for a in actions:
        console.print(f"{a.kind:8} {a.action:12} {a.id}  {a.detail}")


@stripe_app.command()
def export(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    retry_rejected: Annotated[
        bool, typer.Option(help="Forget Stripe's rejections of customers and send their usage again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Send pending usage as meter events. Without STRIPE_API_KEY: show what would be sent."""
    from otel_aibill.stripe.exporter import StripeExporter

    cfg, sc = _settings(ctx)
    ledger, store = _open(ctx)
    exporter = StripeExporter(ledger, store, cfg, _client(sc, required=False), stripe_settings=sc)
    if retry_rejected:
        store.clear_rejections()
    if not once:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            exporter.run_forever(stop)
        except KeyboardInterrupt:
            stop.set()
        return
    import stripe

    try:
        report = exporter.run_once()
        held_now = exporter.held_counts()
    except stripe.StripeError as exc:
        raise _stripe_failed(exc) from exc
    finally:
        ledger.close()
    _print_report(report, held_now, as_json)
    if not report.dry_run and not report.settled:
        raise fail(
            f"{report.pending} meter event(s) not sent: Stripe did not take them this time; they are"
            " kept and sent again by the next run",
            code=1,
        )


def _print_report(report: Any, held_now: Any, as_json: bool) -> None:
    if as_json:
        out = {k: getattr(report, k) for k in report.__dataclass_fields__}
        out["held_total"] = held_now  # what `stripe held` lists; "held" is what this run held back
        console.print_json(json.dumps(out, default=str))
        return
    if report.dry_run:
        console.print(f"dry run (no STRIPE_API_KEY): {len(report.dry_run_events)} events would be sent")
        table = Table("identifier", "event", "payload", "timestamp")
        for ev in report.dry_run_events:
            table.add_row(
                cell(ev["identifier"]),
                cell(ev["event_name"]),
                cell(json.dumps(ev["payload"])),
                cell(ev["timestamp"]),
            )
        console.print(table)
    else:
        console.print(
            f"batches {len(report.batches)}  rows {report.rows_staged}"
            f"  events planned {report.events_planned}"
            f"  sent {report.events_sent}  already in Stripe {report.events_already_in_stripe}"
            f"  requests {report.requests}  pending {report.pending}  review {report.review}"
        )
    _print_held(held_now)
    for err in report.errors:
        console.print(f"[red]{escape(visible(str(err)))}[/red]")


@stripe_app.command()
def reconcile(
    ctx: typer.Context,
    start: Annotated[
        str, typer.Option("--from", help="Start (inclusive), ISO 8601; align to windows.", metavar="TIME")
    ],
    end: Annotated[str, typer.Option("--to", help="End (exclusive), ISO 8601.", metavar="TIME")],
) -> None:
    """Per customer and meter: ledger vs sent vs Stripe's event summaries. Exit 1 on a mismatch."""
    from otel_aibill.stripe.reconcile import reconcile_range

    cfg, sc = _settings(ctx)
    client = _client(sc, required=True)
    import stripe

    ledger, store = _open(ctx)
    t0, t1 = parse_time(start, "--from"), parse_time(end, "--to")
    try:
        lines = reconcile_range(ledger, store, client, cfg, sc, t0, t1)
    except stripe.StripeError as exc:
        # Exit 1 is kept for "the numbers differ"; Stripe not answering is a different failure.
        raise fail(f"Stripe: {exc.user_message or exc}") from exc
    table = Table("customer", "meter", "ledger units", "sent", "unsent", "stripe", "status")
    for ln in lines:
        table.add_row(
            cell(ln.stripe_customer),
            cell(ln.event_name),
            str(ln.ledger_units),
            str(ln.sent_units),
            str(ln.unsent_units),
            "no meter" if ln.stripe_units is None else str(ln.stripe_units),
            "ok" if ln.ok else "MISMATCH",
        )
    console.print(table)
    _print_held(_held_now(ledger, store, cfg, sc))
    for err in store.webhook_errors():
        reported = visible(f"{err.type} {err.code} {err.identifier}: {err.message}")
        console.print(f"[red]stripe reported[/red] {escape(reported)}")
    if any(not ln.ok for ln in lines):
        raise typer.Exit(1)


def _held_now(ledger: Any, store: Any, cfg: Config, sc: StripeConfig) -> dict[str, int]:
    from otel_aibill.stripe.exporter import StripeExporter

    return StripeExporter(ledger, store, cfg, None, stripe_settings=sc).held_counts()


def _print_held(counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        console.print(f"[yellow]held[/yellow] {n:,} rows: {escape(visible(reason))}")
    if counts:
        console.print("held usage is kept and listed by `otel-aibill stripe held`")


@stripe_app.command("models")
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """The model name each ledger model is sent as in tokens mode (Stripe's LLM token billing)."""
    from otel_aibill.ledger.base import UsageQuery
    from otel_aibill.stripe.models import token_billing_model

    _, sc = _settings(ctx)
    ledger = open_ledger_or_fail(ctx.obj["db"], must_exist=True)
    try:
        summary = ledger.usage_summary(UsageQuery(by=("provider", "model")))
    finally:
        ledger.close()
    spans: dict[tuple[str, str], int] = {}
    for row in summary:
        key = (row.key["provider"], row.key["model"])
        spans[key] = spans.get(key, 0) + row.spans
    names = [(token_billing_model(p, m, sc.models), n) for (p, m), n in sorted(spans.items())]
    if as_json:
        out = [{"ledger": x.ledger, "stripe": x.stripe, "source": x.source, "spans": n} for x, n in names]
        console.print_json(json.dumps(out))
        return
    table = Table()
    table.add_column("ledger model", overflow="fold")
    table.add_column("sent as", overflow="fold")
    table.add_column("from", no_wrap=True)
    table.add_column("spans", justify="right", no_wrap=True)
    for x, n in names:
        source = {"map": "[stripe.models]", "rule": "Stripe's naming", "as is": "as is"}[x.source]
        table.add_row(cell(x.ledger), cell(x.stripe), cell(source), f"{n:,}")
    console.print(table)
    if any(x.source == "as is" for x, _ in names):
        console.print(
            escape(
                "Models sent as is are from providers Stripe's token billing does not name: map them"
                ' to a listed model under [stripe.models] ("provider/model" = "openai/gpt-4o").'
            )
        )


@stripe_app.command("held")
def held(
    ctx: typer.Context,
    release_rejected: Annotated[
        str | None,
        typer.Option(
            help="Forget Stripe's rejection of this customer (cus_..., or 'all') once it is fixed in Stripe; "
            "a running 'serve' sends its held usage on its next pass.",
            metavar="CUSTOMER",
        ),
    ] = None,
) -> None:
    """Usage held back from Stripe (no mapping, rejected customer, too old, ...), by reason:
    held rows, and rows not exported yet that an export would hold."""
    cfg, sc = _settings(ctx)
    ledger, store = _open(ctx)
    try:
        if release_rejected:
            n = store.clear_rejections(None if release_rejected == "all" else release_rejected)
            console.print(f"released {n} rejected customer(s)")
        table = Table("reason")
        table.add_column("rows", justify="right")
        for reason, n in _held_now(ledger, store, cfg, sc).items():
            table.add_row(cell(reason), f"{n:,}")
        console.print(table)
    finally:
        ledger.close()
