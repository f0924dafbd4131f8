"""``otel-aibill demo`` and the in-process example, each run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_aibill.demo.run import CUSTOMERS

ROOT = Path(__file__).resolve().parents[1]
CALLS = 5  # one of each call in the demo's plan


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["COLUMNS"] = "200"  # rich sizes the table to the terminal; a pipe would get 80 columns
    return env


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, str, int]]]:
    """Both programs at once; (ledger URL, output, exit code) of each."""
    work = tmp_path_factory.mktemp("demo")
    demo_db = f"sqlite:///{work / 'demo.db'}"
    procs = {
        "demo": (
            demo_db,
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from otel_aibill.cli import main; main()",
                    "--db",
                    demo_db,
                    "demo",
                    "--calls",
                    str(CALLS),
                ],
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=work,
            ),
        ),
        "example": (
            f"sqlite:///{work / 'example.db'}",
            subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / "inprocess_openai.py")],
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=work,
            ),
        ),
    }
    out = {}
    for name, (db, proc) in procs.items():
        text, _ = proc.communicate(timeout=240)
        out[name] = (db, text, proc.returncode)
    yield out


def test_demo_bills_every_call_to_its_customer(finished: dict[str, tuple[str, str, int]]) -> None:
    from otel_aibill.ledger import open_ledger
    from otel_aibill.ledger.base import UsageQuery

    db, output, code = finished["demo"]
    assert code == 0, output[-4000:]
    for customer in CUSTOMERS:
        assert customer in output
    ledger = open_ledger(db)
    try:
        by_customer = {s.key["customer"]: s for s in ledger.usage_summary(UsageQuery(by=("customer",)))}
        providers = {s.key["provider"] for s in ledger.usage_summary(UsageQuery(by=("provider",)))}
        assert ledger.not_billable_counts().get("no_usage", 0) == 0
    finally:
        ledger.close()
    assert set(by_customer) == set(CUSTOMERS)
    for summary in by_customer.values():
        assert summary.spans == CALLS
        assert summary.unpriced_spans == 0 and summary.pending_spans == 0
        assert summary.cost > 0 and summary.billed > summary.cost  # the demo's 20% markup
    assert providers == {"openai", "anthropic"}
    # the first Anthropic call writes the cached policy, the later customers' calls read it
    assert sum(s.cache_write_tokens for s in by_customer.values()) > 0
    assert sum(s.cache_read_tokens for s in by_customer.values()) > 0


def test_inprocess_example_bills_both_customers(finished: dict[str, tuple[str, str, int]]) -> None:
    from otel_aibill.ledger import open_ledger

    db, output, code = finished["example"]
    assert code == 0, output[-4000:]
    ledger = open_ledger(db)
    try:
        rows = ledger.rows()
    finally:
        ledger.close()
    assert sorted(r.priced.usage.customer or "" for r in rows) == ["acme", "globex"]
    assert all(r.priced.cost is not None and r.priced.cost > 0 for r in rows)


def test_demo_lists_the_stripe_meter_events_of_every_customer(
    finished: dict[str, tuple[str, str, int]],
) -> None:
    """The dry run at the end of the demo: one line per meter event, for every demo customer, whose
    values add up to the customer's billed total in micro-units (floored, as the export carries
    the rest); then where to look next."""
    import re
    from decimal import ROUND_FLOOR

    from otel_aibill.ledger import open_ledger
    from otel_aibill.ledger.base import UsageQuery

    db, output, code = finished["demo"]
    assert code == 0, output[-4000:]
    sent: dict[str, int] = {}
    for line in output.splitlines():
        m = re.search(r"│ (\w+)\s+│ cus_demo_(\w+)\s+│ aibill_cost\s+│.*│\s+([\d,]+) │$", line)
        if m:
            assert m.group(1) == m.group(2)
            sent[m.group(2)] = sent.get(m.group(2), 0) + int(m.group(3).replace(",", ""))
    ledger = open_ledger(db)
    try:
        billed = {s.key["customer"]: s.billed for s in ledger.usage_summary(UsageQuery(by=("customer",)))}
    finally:
        ledger.close()
    assert set(sent) == set(CUSTOMERS)
    for customer in CUSTOMERS:
        micro = billed[customer].scaleb(6).to_integral_value(rounding=ROUND_FLOOR)
        assert sent[customer] == int(micro) > 0
        assert f"{customer} → cus_demo_{customer}:" in output
    assert "Next:" in output and "stripe export --once" in output and "--stripe-mode tokens" in output
