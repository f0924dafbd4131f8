"""``otel-aibill demo``: real instrumented SDK calls to a built-in fake provider, billed and shown."""

from __future__ import annotations

from typing import Annotated

import typer

from otel_aibill.cli.options import check_sqlite_file, config_of, fail


def demo(
    ctx: typer.Context,
    calls: Annotated[int, typer.Option(help="LLM calls per customer.", metavar="N")] = 3,
    stripe_mode: Annotated[
        str,
        typer.Option(
            help="Stripe meter events of the dry run: cost (billed amount) or tokens (LLM token billing).",
            metavar="[cost|tokens]",
        ),
    ] = "cost",
) -> None:
    """Real instrumented OpenAI/Anthropic SDK calls to a built-in fake provider, billed and shown."""
    try:
        from otel_aibill.demo.run import run_demo
    except ImportError as exc:
        raise fail(f"the demo needs the 'demo' extra: pip install 'otel-aibill[demo]' ({exc})") from exc
    if stripe_mode not in ("cost", "tokens"):
        raise fail("--stripe-mode must be cost or tokens")
    cfg = config_of(ctx)
    check_sqlite_file(cfg.db)
    run_demo(cfg.db, cfg, calls=calls, stripe_mode=stripe_mode)
