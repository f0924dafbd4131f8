"""What a new user meets first: the commands' messages, help and output on a first run."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fakestripe import API_KEY, FakeStripe
from fakestripe.support import open_test_ledger, priced
from otel_aibill.config import Config
from otel_aibill.ledger.base import AppendBatch


def _app() -> Any:
    from otel_aibill.cli import app

    return app


def _held_table(output: str) -> dict[str, int]:
    return {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"│ (\w+)\s+│\s+([\d,]+) +│", output)}


def test_export_and_held_count_the_same_held_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dry run or not, what ``stripe export`` reports as held is what ``stripe held`` lists."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[customers]\nacme = "cus_acme"\n', encoding="utf-8")
    hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600 - 3600
    ledger = open_test_ledger(db)
    rows = [priced(i, "acme" if i % 4 == 0 else "nomap", hour + i, "0.01") for i in range(1, 13)]
    rows.append(priced(13, None, hour, "0.01"))  # pending attribution: neither exported nor held
    ledger.append(AppendBatch(rows=rows))
    ledger.close()
    runner, base = CliRunner(), ["--db", db, "--config", str(cfg), "stripe"]
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)

    dry = runner.invoke(_app(), [*base, "export", "--once"])
    assert dry.exit_code == 0, dry.output
    assert "held 9 rows: no_stripe_mapping" in dry.output
    listed = runner.invoke(_app(), [*base, "held"])
    assert _held_table(listed.output) == {"no_stripe_mapping": 9}  # pending usage is not held yet
    as_json = json.loads(runner.invoke(_app(), [*base, "export", "--once", "--json"]).output)
    assert as_json["held_total"] == _held_table(listed.output)

    with FakeStripe() as fake:
        fake.add_customer("cus_acme")
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_API_BASE", fake.api_base)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_METER_EVENTS_BASE", fake.meter_events_base)
        assert runner.invoke(_app(), [*base, "setup"]).exit_code == 0
        sent = runner.invoke(_app(), [*base, "export", "--once"])
        assert sent.exit_code == 0, sent.output
        assert "held 9 rows: no_stripe_mapping" in sent.output
        again = runner.invoke(_app(), [*base, "export", "--once"])  # nothing new: still held
        assert "held 9 rows: no_stripe_mapping" in again.output
        assert _held_table(runner.invoke(_app(), [*base, "held"]).output) == as_json["held_total"]


def test_demo_dry_run_in_tokens_mode_adds_up_to_the_tokens(tmp_path: Path) -> None:
    from otel_aibill.demo.stripe_view import dry_run

    db = f"sqlite:///{tmp_path / 'd.db'}"
    now = int(datetime.now(UTC).timestamp())
    ledger = open_test_ledger(db)
    ledger.append(
        AppendBatch(
            rows=[
                priced(1, "acme", now - 60, "0.5", model="gpt-4o-mini-2024-07-18", cache_read=40),
                priced(
                    2,
                    "acme",
                    now - 60,
                    "0.25",
                    provider="anthropic",
                    model="claude-sonnet-4-6",
                    input_tokens=500,
                    cache_write=300,
                ),
                priced(3, "globex", now - 30, "1"),
            ]
        )
    )
    ledger.close()
    run = dry_run(db, Config(db=db), "tokens", ("acme", "globex"))
    totals = {t.customer: t for t in run.totals}
    assert {c: (t.stripe_customer, t.units) for c, t in totals.items()} == {
        "acme": ("cus_demo_acme", 120 + 520),
        "globex": ("cus_demo_globex", 120),
    }
    assert all(t.units == t.source for t in run.totals)
    models = {e["payload"]["model"] for e in run.report.dry_run_events}
    assert models == {"openai/gpt-4o-mini", "anthropic/claude-sonnet-4.6", "openai/gpt-4o"}
    cost = dry_run(db, Config(db=db), "cost", ("acme", "globex"))
    assert {t.customer: t.units for t in cost.totals} == {"acme": 750_000, "globex": 1_000_000}
    assert {t.customer: t.source for t in cost.totals} == {"acme": Decimal("0.75"), "globex": Decimal(1)}


def test_the_address_serve_prints_answers_with_what_is_served(tmp_path: Path) -> None:
    import httpx

    from test_receiver_server import Server

    srv = Server(tmp_path)
    try:
        page = httpx.get(f"{srv.ui}/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for needle in (
            'href="/healthz"',
            'href="/metrics"',
            f":{srv.http_port}/v1/traces",
            f":{srv.grpc_port}",
        ):
            assert needle in page.text
        listed = httpx.get(f"{srv.ui}/", headers={"accept": "application/json"}).json()
        paths = {r["path"]: r for r in listed["routes"]}
        assert set(paths) == {"/", "/healthz", "/readyz", "/metrics"}
        assert all(r["about"] for r in listed["routes"])
        assert (
            listed["otlp"]["OTLP/HTTP"]
            == f"POST http://127.0.0.1:{srv.http_port}/v1/traces (protobuf or JSON)"
        )
        for path in paths:  # every listed page answers
            assert httpx.get(f"{srv.ui}{path}").status_code == 200
    finally:
        assert srv.stop() == 0


READ_ONLY = (
    ["usage"],
    ["customers", "list"],
    ["stripe", "held"],
    ["stripe", "models"],
    ["stripe", "export", "--once"],
)


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_commands_that_read_say_there_is_no_ledger_instead_of_creating_one(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nothing-here.db"
    result = CliRunner().invoke(_app(), ["--db", f"sqlite:///{missing}", *command])
    assert result.exit_code == 1, result.output
    assert f"no ledger at sqlite:///{missing}" in result.output
    assert not missing.exists() and list(tmp_path.iterdir()) == []


def _cli(*args: str, cwd: Path) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "otel_aibill.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


@pytest.mark.parametrize(
    "command", [["usage"], ["customers", "set", "acme", "cus_acme"], ["demo"]], ids=" ".join
)
def test_an_unopenable_ledger_path_is_one_line(tmp_path: Path, command: list[str]) -> None:
    done = _cli("--db", "sqlite:///no-such-dir/x.db", *command, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and "no-such-dir" in line


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = _cli("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"otel-aibill {version('otel-aibill')}\n")


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    found = [prefix]
    command = typer.main.get_command(group) if not prefix else group
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*prefix, name)) if hasattr(sub, "commands") else [(*prefix, name)]
    return found


def test_help_shows_the_usual_metavars() -> None:
    """Options read ``--db URL``, flags show no type; nothing prints ``<str>`` or ``<bool>``."""
    runner, seen = CliRunner(), set()
    for path in _commands(_app()):
        out = runner.invoke(_app(), [*path, "--help"]).output
        options = out.split("Options:", 1)[1].split("Commands:", 1)[0]
        assert not re.search(r"<\w+(\[\w+\])?>", options), (path, options)
        seen.add(path)
        if path == ("usage",):
            assert "--format [table|json|csv]" in options and "--since TIME" in options
    assert {(), ("usage",), ("serve",), ("stripe", "export"), ("stripe", "models")} <= seen
    top = runner.invoke(_app(), ["--help"]).output
    assert "--db URL" in top and "--config FILE" in top and re.search(r"--help\s+Show", top)


def _usage_ledger(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'u.db'}"
    ledger = open_test_ledger(db)
    ledger.append(
        AppendBatch(
            rows=[
                priced(
                    1,
                    "acme-corporation-international",
                    1_700_000_000,
                    "0.0123",
                    model="gpt-4o-mini-2024-07-18",
                ),
                priced(
                    2,
                    "globex",
                    1_700_000_000,
                    "1.5",
                    provider="anthropic",
                    model="claude-sonnet-4-5-20250929",
                ),
            ]
        )
    )
    ledger.close()
    return db


@pytest.mark.parametrize("width", [200, 150, 120, 100, 80, 60])
def test_the_usage_table_fits_the_terminal_and_json_stays_complete(tmp_path: Path, width: int) -> None:
    import os
    import subprocess
    import sys

    db = _usage_ledger(tmp_path)
    env = {**os.environ, "COLUMNS": str(width)}
    table = subprocess.run(
        [sys.executable, "-m", "otel_aibill.cli", "--db", db, "usage"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "globex" in table.stdout and "1.500000" in table.stdout
    narrowed = "--format json or csv has every field" in " ".join(table.stdout.split())
    assert narrowed == (width < 180)
    full = subprocess.run(
        [sys.executable, "-m", "otel_aibill.cli", "--db", db, "usage", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
    )
    [first, _] = json.loads(full.stdout)
    assert {"cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "margin", "cost"} <= set(first)


def _replay_file(tmp_path: Path) -> Path:
    kv = lambda k, v: {"key": k, "value": v}  # noqa: E731
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "chat",
        "attributes": [
            kv("gen_ai.operation.name", {"stringValue": "chat"}),
            kv("gen_ai.provider.name", {"stringValue": "openai"}),
            kv("gen_ai.request.model", {"stringValue": "gpt-4o-mini"}),
            kv("gen_ai.usage.input_tokens", {"intValue": "100"}),
            kv("gen_ai.usage.output_tokens", {"intValue": "10"}),
            kv("customer.id", {"stringValue": "acme"}),
        ],
    }
    doc = {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "s"}, "spans": [span]}]}]}
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    return path


def test_replay_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    path = _replay_file(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "otel_aibill.cli",
        "--db",
        f"sqlite:///{tmp_path / 'r.db'}",
        "replay",
        str(path),
    ]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "traces.jsonl" not in piped.stderr and "━" not in piped.stderr
    assert "billed 1" in piped.stdout

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower, env=env) as proc:
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed its side
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(60) == 0
    os.close(leader)
    text = seen.decode("utf-8", "replace")
    assert "traces.jsonl" in text and "━" in text  # the bar, with the file's name
