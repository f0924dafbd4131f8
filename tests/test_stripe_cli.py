"""``otel-aibill stripe setup|export|reconcile`` through the real CLI against the fake Stripe."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fakestripe import API_KEY, FakeStripe
from fakestripe.support import open_test_ledger, priced
from otel_aibill.ledger.base import AppendBatch


def _app() -> Any:
    from otel_aibill.cli import app
    from otel_aibill.cli.stripe import stripe_app

    names = {g.name for g in app.registered_groups}
    if "stripe" not in names:
        app.add_typer(stripe_app, name="stripe")
    return app


def test_setup_export_reconcile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    db = store_url  # the ledger and the export store, in one database
    cfg = tmp_path / "c.toml"
    cfg.write_text('[customers]\nacme = "cus_acme"\n', encoding="utf-8")
    hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600 - 3600
    ledger = open_test_ledger(db)
    ledger.append(AppendBatch(rows=[priced(i, "acme", hour + 60 * i, "0.0123456") for i in range(1, 11)]))
    ledger.close()
    runner, app = CliRunner(), _app()
    base = ["--db", db, "--config", str(cfg), "stripe"]

    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    dry = runner.invoke(app, [*base, "export", "--once"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and "cus_acme" in dry.output and "123456" in dry.output

    with FakeStripe() as fake:
        fake.add_customer("cus_acme")
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_API_BASE", fake.api_base)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_METER_EVENTS_BASE", fake.meter_events_base)
        first = runner.invoke(app, [*base, "setup"])
        assert first.exit_code == 0 and "created" in first.output, first.output
        again = runner.invoke(app, [*base, "setup"])
        assert "created" not in again.output and "exists" in again.output
        assert "0.0001" in again.output  # 1 micro-dollar = 0.0001 cents

        sent = runner.invoke(app, [*base, "export", "--once"])
        assert sent.exit_code == 0, sent.output
        assert fake.totals("aibill_cost") == {"cus_acme": 123456}

        span = [
            "--from",
            datetime.fromtimestamp(hour, UTC).isoformat(),
            "--to",
            datetime.fromtimestamp(hour + 3600, UTC).isoformat(),
        ]
        ok = runner.invoke(app, [*base, "reconcile", *span])
        assert ok.exit_code == 0, ok.output
        fake.state.customers.add("cus_acme")
        fake.state.record_sync(
            "aibill_cost", "extra", {"stripe_customer_id": "cus_acme", "value": "5"}, hour + 5, v2=False
        )
        bad = runner.invoke(app, [*base, "reconcile", *span])
        assert bad.exit_code == 1 and "MISMATCH" in bad.output


def test_held_lists_reasons_and_releases_a_rejected_customer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    from otel_aibill.stripe.store import ExportStore

    db = store_url
    cfg = tmp_path / "c.toml"
    cfg.write_text('[customers]\nacme = "cus_acme"\nglobex = "cus_gone"\n', encoding="utf-8")
    hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600 - 3600
    ledger = open_test_ledger(db)
    rows = [priced(1, "acme", hour, "0.5"), priced(2, "hooli", hour, "0.25"), priced(3, "globex", hour, "1")]
    ledger.append(AppendBatch(rows=rows))
    ledger.close()
    store = ExportStore(db)
    store.reject_customer("cus_gone", "meter_event_customer_not_found", "no such customer", 0, hour)
    runner, app = CliRunner(), _app()
    base = ["--db", db, "--config", str(cfg), "stripe"]
    with FakeStripe() as fake:
        fake.add_customer("cus_acme")
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_API_BASE", fake.api_base)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_METER_EVENTS_BASE", fake.meter_events_base)
        assert runner.invoke(app, [*base, "setup"]).exit_code == 0
        assert runner.invoke(app, [*base, "export", "--once"]).exit_code == 0
        assert fake.totals("aibill_cost") == {"cus_acme": 500000}

        listed = runner.invoke(app, [*base, "held"])
        assert listed.exit_code == 0, listed.output
        assert "no_stripe_mapping" in listed.output and "rejected_customer" in listed.output

        fake.add_customer("cus_gone")  # fixed in Stripe
        released = runner.invoke(app, [*base, "held", "--release-rejected", "cus_gone"])
        assert "released 1" in released.output, released.output
        assert runner.invoke(app, [*base, "export", "--once"]).exit_code == 0
        assert fake.totals("aibill_cost") == {"cus_acme": 500000, "cus_gone": 1000000}
        still = runner.invoke(app, [*base, "held"]).output
        assert "no_stripe_mapping" in still and "rejected_customer" not in still
    store.close()


def test_reconcile_when_stripe_refuses_the_key_is_an_error_not_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 1 means "the numbers differ"; a refused key must not look like that to a script."""
    db = f"sqlite:///{tmp_path / 'k.db'}"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[customers]\nacme = "cus_acme"\n', encoding="utf-8")
    open_test_ledger(db).close()
    runner, app = CliRunner(), _app()
    with FakeStripe() as fake:
        monkeypatch.setenv("STRIPE_API_KEY", "sk_test_wrong")
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_API_BASE", fake.api_base)
        span = ["--from", "2025-01-01T00:00:00", "--to", "2025-01-02T00:00:00"]
        result = runner.invoke(app, ["--db", db, "--config", str(cfg), "stripe", "reconcile", *span])
        assert result.exit_code == 2, result.output
        assert "Invalid API Key" in result.output
