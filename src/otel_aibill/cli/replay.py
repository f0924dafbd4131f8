"""``otel-aibill replay FILE...``: bill OTLP trace files (Collector ``file`` exporter output)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from otel_aibill.cli.options import ConfigOption, DbOption, command_config, fail, open_ledger_or_fail
from otel_aibill.usage import SpanView


def replay(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(help="OTLP JSON-lines or length-prefixed protobuf files, gzip ok.", metavar="FILE..."),
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="auto, json or proto.", metavar="[auto|json|proto]")
    ] = "auto",
    batch_spans: Annotated[int, typer.Option(help="Spans per ledger transaction.", metavar="N")] = 5000,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Ingest recorded spans into the ledger. Re-running is harmless: spans already billed are skipped."""
    from otel_aibill.pipeline import IngestResult, Pipeline
    from otel_aibill.receiver.otlp_common import Decoded
    from otel_aibill.receiver.replay import FileFormat, ReplayError, read_file
    from otel_aibill.watch.catalog_store import stored_pricer

    err = Console(stderr=True)
    if fmt not in ("auto", "json", "proto"):
        raise fail("--format must be auto, json or proto")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    cfg = command_config(ctx, db, config)
    ledger = open_ledger_or_fail(cfg.db)
    pipeline = Pipeline(ledger, cfg, pricer=stored_pricer(cfg.db, cfg))
    totals = IngestResult()
    buffer: list[SpanView] = []

    def flush() -> None:
        if buffer:
            totals.add(pipeline.ingest(buffer))
            buffer.clear()

    def on_decoded(decoded: Decoded) -> None:
        buffer.extend(decoded.spans)
        if len(buffer) >= batch_spans:
            flush()

    failed = 0
    rejected = 0
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
            disable=not err.is_terminal,  # a bar on a terminal; nothing in a pipe or a log file
        ) as progress:
            for path in files:
                task = progress.add_task(path.name, total=path.stat().st_size)

                def advance(pos: int, task: TaskID = task) -> None:
                    progress.update(task, completed=pos)

                try:
                    stats = read_file(path, cast(FileFormat, fmt), on_decoded, advance)
                except (ReplayError, OSError) as exc:
                    failed += 1
                    err.print(f"[red]error:[/red] {escape(f'{path}: {exc}')}")
                    continue
                flush()
                progress.update(task, completed=path.stat().st_size)
                rejected += stats.rejected
                if stats.bad_messages or stats.rejected:
                    failed += stats.bad_messages
                    for line in stats.errors:
                        err.print(f"[yellow]warning:[/yellow] {escape(f'{path}: {line}')}")
                    err.print(
                        f"[yellow]warning:[/yellow] {escape(str(path))}: {stats.bad_messages} of "
                        f"{stats.messages} message(s) could not be decoded and were skipped, "
                        f"{stats.rejected} span(s) rejected; the rest was ingested"
                    )
        flush()
    finally:
        ledger.close()
    nb = ", ".join(f"{k} {v}" for k, v in sorted(totals.not_billable.items())) or "none"
    typer.echo(
        f"spans {totals.received}: billed {totals.billed}, duplicates {totals.duplicates}, "
        f"unpriced {totals.unpriced}, pending {totals.pending}, rejected {rejected}; not billable: {nb}"
    )
    if failed:
        raise typer.Exit(1)
