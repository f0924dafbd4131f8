"""``otel-aibill prices``: the stored catalog versions — update, list, show, history, diff,
approve, reject. Every listing marks what a pending version would change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from otel_aibill.cli.options import config_of, fail
from otel_aibill.config import Config
from otel_aibill.errors import BadDataError, RetryLaterError
from otel_aibill.pricing.diff import DiffRow, PriceRow, catalog_rows, diff, model_rows
from otel_aibill.report import FORMATS, decimal_text, print_rows

prices_app = typer.Typer(help="Price catalog versions: update, list, show, history, diff, approve.")

FormatOption = Annotated[
    str, typer.Option("--format", help="table, json or csv.", metavar="[table|json|csv]")
]
_PRICE_COLUMNS = ("provider", "model", "unit", "tier", "variant", "effective", "price", "source", "pending")
_DIFF_COLUMNS: tuple[str, ...] = ("provider", "model", "unit", "tier", "variant", "effective", "change")
_DIFF_COLUMNS += ("old", "new", "percent")


@contextmanager
def _store(ctx: typer.Context) -> Iterator[Any]:
    from otel_aibill.watch.catalog_store import CatalogStore

    try:
        store = CatalogStore(config_of(ctx).db)
    except (ValueError, RetryLaterError) as exc:
        raise fail(str(exc)) from exc
    try:
        yield store
    except (BadDataError, LookupError) as exc:
        raise fail(str(exc)) from exc
    finally:
        store.close()


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise fail("--format must be table, json or csv")
    return fmt


def _echo(text: str | None) -> None:
    if text is not None:
        typer.echo(text, nl=not text.endswith("\n"))


def _when(ns: int | None) -> str:
    return "" if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def diff_item(row: DiffRow) -> dict[str, Any]:
    pct = row.percent
    return {
        "provider": row.provider, "model": row.model, "unit": row.unit, "tier": row.tier,
        "variant": row.variant, "effective": row.effective, "change": row.change,
        "old": None if row.old is None else decimal_text(row.old),
        "new": None if row.new is None else decimal_text(row.new),
        "percent": None if pct is None else decimal_text(pct),
    }  # fmt: skip


def _price_item(row: PriceRow, source: str, pending: dict[Any, DiffRow]) -> dict[str, Any]:
    change = pending.get(row.key)
    note = None
    if change is not None:
        note = "removed" if change.new is None else decimal_text(change.new)
    return {
        "provider": row.provider, "model": row.model, "unit": row.unit, "tier": row.tier,
        "variant": row.variant, "effective": row.effective, "price": decimal_text(row.price),
        "source": source, "pending": note,
    }  # fmt: skip


def _pending_changes(store: Any, base_providers: Any) -> tuple[dict[Any, DiffRow], Any]:
    pending = store.pending()
    if not pending:
        return {}, None
    latest = pending[-1]
    rows = diff(base_providers, store.data(latest).providers)
    return {(r.provider, r.model, r.unit, r.tier, r.variant, r.effective): r for r in rows}, latest


def _pending_note(latest: Any) -> None:
    if latest is not None:
        Console(stderr=True).print(
            f"pending: {latest.label} from {latest.source} ({_when(latest.fetched_at_ns)}); "
            f"'otel-aibill prices diff' shows it, 'prices approve {latest.seq}' applies it",
            highlight=False,
        )


@prices_app.command("update")
def update(
    ctx: typer.Context,
    source: Annotated[
        str | None, typer.Option(help="URL or file (default: [prices] source).", metavar="URL|FILE")
    ] = None,
    fmt: FormatOption = "table",
) -> None:
    """Fetch the price source and store what changed; older data is refused and listed."""
    from otel_aibill.watch.update import update_prices

    _fmt(fmt)
    cfg: Config = config_of(ctx)
    with _store(ctx) as store:
        try:
            report = update_prices(store, cfg.prices, source)
        except (BadDataError, RetryLaterError) as exc:
            raise fail(f"price update from {source or cfg.prices.source} failed: {exc}", code=1) from exc
    if fmt != "table":
        item = {
            "source": report.source,
            "not_modified": report.not_modified,
            "applied": None if report.applied is None else report.applied.seq,
            "pending": None if report.pending is None else report.pending.seq,
            "changes": [diff_item(r) for r in report.diff],
            "refused": [
                {"provider": r.provider, "model": r.model, "reason": r.reason} for r in report.refused
            ],
            "kept_missing_from_feed": report.kept,
        }
        _echo(print_rows("", [item], tuple(item), fmt) if fmt == "json" else _update_csv(report))
        return
    out = Console(soft_wrap=True, highlight=False)
    if report.not_modified:
        out.print(f"{report.source}: not modified since the last update; catalog {report.base.label}")
        return
    if report.applied is not None:
        out.print(f"applied: {report.applied.label} ({len(report.changes)} models changed)")
    if report.pending is not None:
        out.print(
            f"held for approval: {report.pending.label} ({len(report.held)} models changed); "
            f"'otel-aibill prices approve {report.pending.seq}' applies it"
        )
    if not report.changed:
        out.print(f"no price changes; catalog stays {report.base.label}")
    if report.diff:
        print_rows("Changes", [diff_item(r) for r in report.diff], _DIFF_COLUMNS, "table")
    for r in report.refused:
        out.print(f"refused: {r.provider}/{r.model}: {r.reason}")
    if report.kept:
        out.print(f"kept: {report.kept} models the source does not list")


def _update_csv(report: Any) -> str:
    rows = [{**diff_item(r), "reason": ""} for r in report.diff]
    for r in report.refused:
        rows.append({"provider": r.provider, "model": r.model, "change": "refused", "reason": r.reason})
    return print_rows("", rows, (*_DIFF_COLUMNS, "reason"), "csv") or ""


@prices_app.command("list")
def list_prices(
    ctx: typer.Context,
    provider: Annotated[
        str | None, typer.Option(help="Only this provider (genai-prices id).", metavar="ID")
    ] = None,
    fmt: FormatOption = "table",
) -> None:
    """Prices of the current catalog (every period, tier and variant), and pending changes."""
    _fmt(fmt)
    with _store(ctx) as store:
        current = store.current()
        data = store.data(current)
        pending, latest = _pending_changes(store, data.providers)
        items = [_price_item(r, current.label, pending) for r in catalog_rows(data.providers, provider)]
    _echo(print_rows(f"Prices ({current.label}, {current.source})", items, _PRICE_COLUMNS, fmt))
    if fmt == "table":
        _pending_note(latest)


@prices_app.command("show")
def show(ctx: typer.Context, model: str, fmt: FormatOption = "table") -> None:
    """Every price period, tier and variant of MODEL (a model id, or a name it matches), with its
    source; config overrides for it are listed too."""
    _fmt(fmt)
    cfg: Config = config_of(ctx)
    with _store(ctx) as store:
        current = store.current()
        data = store.data(current)
        pending, latest = _pending_changes(store, data.providers)
        items = []
        for p in data.providers:
            for m in p.models:
                if m.id == model or m.is_match(model):
                    label = f"{current.label} {current.source}"
                    items += [_price_item(r, label, pending) for r in model_rows(p.id, m)]
        for i, o in enumerate(cfg.pricing.overrides):
            if o.model.strip().lower() == model.strip().lower():
                when = "" if o.effective_from is None else o.effective_from.isoformat()
                for unit, value in (("input_mtok", o.input_mtok), ("output_mtok", o.output_mtok)):
                    items.append({
                        "provider": o.provider, "model": o.model, "unit": unit, "tier": "",
                        "variant": o.service_tier or "", "effective": when, "price": decimal_text(value),
                        "source": f"config override#{i} (always wins)", "pending": None,
                    })  # fmt: skip
    if not items:
        raise fail(f"no prices for {model!r} in {current.label} or the config", code=1)
    _echo(print_rows(f"Prices of {model}", items, _PRICE_COLUMNS, fmt))
    if fmt == "table":
        _pending_note(latest)


@prices_app.command("history")
def history(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only changes of this model id.")] = None,
    fmt: FormatOption = "table",
) -> None:
    """Stored catalog versions, oldest first, with what each changed (of MODEL, if given)."""
    _fmt(fmt)
    items: list[dict[str, Any]] = []
    with _store(ctx) as store:
        for s in store.snapshots():
            head = {"version": s.label, "status": s.status, "source": s.source}
            head["fetched"] = _when(s.fetched_at_ns)
            if model is None:
                changes, refused = s.report.get("changes", []), s.report.get("refused", [])
                items.append({**head, "changes": len(changes), "refused": len(refused)})
                continue
            new = store.data(s).providers
            old = store.data(store.snapshot(s.base_seq)).providers if s.base_seq is not None else []
            items += [{**head, **diff_item(r)} for r in diff(old, new) if r.model == model]
    columns: tuple[str, ...] = ("version", "status", "source", "fetched", "changes", "refused")
    if model is not None:
        columns = ("version", "status", "fetched", "provider", *_DIFF_COLUMNS[2:])
    _echo(print_rows("Price history" + (f" of {model}" if model else ""), items, columns, fmt))


@prices_app.command("diff")
def diff_cmd(
    ctx: typer.Context,
    old: Annotated[str | None, typer.Argument(help="Version (default: the current one).")] = None,
    new: Annotated[str | None, typer.Argument(help="Version (default: latest pending, or latest).")] = None,
    fmt: FormatOption = "table",
) -> None:
    """Added, removed and changed prices between two versions."""
    _fmt(fmt)
    with _store(ctx) as store:
        a = store.snapshot(old) if old else store.current()
        if new:
            b = store.snapshot(new)
        else:
            pending = store.pending()
            b = pending[-1] if pending else store.snapshots()[-1]
        rows = [diff_item(r) for r in diff(store.data(a).providers, store.data(b).providers)]
    _echo(print_rows(f"Prices {a.label} -> {b.label}", rows, _DIFF_COLUMNS, fmt))


@prices_app.command("approve")
def approve(ctx: typer.Context, version: str) -> None:
    """Apply a pending VERSION: usage is priced with it from now on."""
    with _store(ctx) as store:
        s = store.snapshot(version)
        current = store.current()
        if s.status != "pending":
            raise fail(f"{s.label} is {s.status}, not pending", code=1)
        if s.seq < current.seq:
            raise fail(f"{s.label} is older than the current {current.label}", code=1)
        store.decide(s.seq, "approved")
        for older in store.pending():
            if older.seq < s.seq:
                store.decide(older.seq, "superseded")
    typer.echo(f"approved {s.label}; serve picks it up at its next price check")


@prices_app.command("reject")
def reject(ctx: typer.Context, version: str) -> None:
    """Reject a pending VERSION: it is never applied, and the same data is not proposed again."""
    with _store(ctx) as store:
        s = store.snapshot(version)
        if s.status != "pending":
            raise fail(f"{s.label} is {s.status}, not pending", code=1)
        store.decide(s.seq, "rejected")
    typer.echo(f"rejected {s.label}")
