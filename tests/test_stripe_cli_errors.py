"""``stripe setup`` and ``stripe export --once`` when Stripe refuses the key or fails: one line, non-zero."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakestripe import API_KEY, FakeStripe
from fakestripe.server import Faults
from fakestripe.support import open_test_ledger, priced
from otel_aibill.ledger.base import AppendBatch
from test_stripe_cli import _app


@pytest.mark.parametrize(
    ("key", "faults", "message"),
    [
        ("sk_test_wrong", None, "Invalid API Key"),
        (API_KEY, Faults(rate=1.0, kinds=("500",)), "not sent"),
    ],
)
def test_stripe_failures_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, faults: Faults | None, message: str
) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[customers]\nacme = "cus_acme"\n[stripe]\nmax_network_retries = 0\n', encoding="utf-8")
    hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600 - 3600
    ledger = open_test_ledger(db)
    ledger.append(AppendBatch(rows=[priced(1, "acme", hour, "0.5")]))
    ledger.close()
    runner, app = CliRunner(), _app()
    base = ["--db", db, "--config", str(cfg), "stripe"]
    with FakeStripe(faults=faults) as fake:
        fake.add_customer("cus_acme")
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_API_BASE", fake.api_base)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_METER_EVENTS_BASE", fake.meter_events_base)
        assert runner.invoke(app, [*base, "setup"]).exit_code == 0 or key != API_KEY
        monkeypatch.setenv("STRIPE_API_KEY", key)
        commands = [["export", "--once"]] + ([["setup"]] if key != API_KEY else [])
        for command in commands:
            result = runner.invoke(app, [*base, *command])
            assert result.exit_code != 0, (command, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), repr(
                result.exception
            )
            assert message in result.output, (command, result.output)
            assert "Traceback" not in result.output
