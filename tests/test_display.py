"""Span text shown as text: hostile customer ids and model names through every output."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from otel_aibill.cli import app
from otel_aibill.display import csv_text, visible
from otel_aibill.ledger import open_ledger
from otel_aibill.pipeline import Pipeline
from otel_aibill.usage import SpanView

HOSTILE = [
    "[/]",
    "[link=http://evil.example]click[/link]",
    "[bold red]loud",
    "\x1b[31mred",
    "\x1b]0;owned\x07",
    "\x1b[2J",
    "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "abc\u202edcba",
    "zero\u200bwidth\u2028line",
    "bell\x07back\x08\rcr",
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "-2+3",
    "=1+1\tx",
    "'; DROP TABLE usage_rows; --",
]
AT = int(datetime(2026, 1, 5, 10, tzinfo=UTC).timestamp()) * 1_000_000_000


def _span(n: int, customer: str, model: str) -> SpanView:
    return SpanView(
        trace_id=f"{n + 1:032x}",
        span_id=f"{n + 1:016x}",
        name="chat",
        start_time_ns=AT,
        end_time_ns=AT + 1000,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 5,
            "customer.id": customer,
        },
    )


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("OTEL_AIBILL_DB", "OTEL_AIBILL_CONFIG", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    ledger = open_ledger(url)
    try:
        Pipeline(ledger).ingest([_span(i, text, text) for i, text in enumerate(HOSTILE)])
        for text in HOSTILE:
            ledger.set_customer(text, None, text)
    finally:
        ledger.close()
    yield url


def _run(*args: str, terminal: bool = False) -> Result:
    env = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"} if terminal else {"TERM": "dumb", "NO_COLOR": "1"}
    return CliRunner().invoke(app, list(args), env=env)


def _assert_inert(output: str) -> None:
    """No hyperlink, title or screen-clearing sequence, no bidi override, no raw control text."""
    for raw in ("\x1b]", "\x1b[2J", "\u202e", "\u200b", "\u2028", "\x07", "\x08", "\r"):
        assert raw not in output, repr(raw)
    assert "evil.example" in output  # shown, as text
    for shown in (
        "\\x1b[31mred",
        "\\x1b]0;owned\\x07",
        "abc\\u202edcba",
        "[/]",
        "[link=http://evil.example]",
    ):
        assert shown in output, shown


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize("command", [["usage"], ["customers", "list"]])
def test_tables_show_span_text_as_visible_text(db: str, command: list[str], terminal: bool) -> None:
    result = _run("--db", db, *command, terminal=terminal)
    assert result.exit_code == 0, result.output
    _assert_inert(result.stdout)
    if not terminal:
        assert "\x1b" not in result.stdout


def test_json_is_exact(db: str) -> None:
    result = _run("--db", db, "usage", "--format", "json", "--by", "customer,model")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert {item["customer"] for item in items} == set(HOSTILE)
    assert {item["model"] for item in items} == set(HOSTILE)
    assert "\x1b" not in result.stdout  # JSON escapes, not raw


def test_csv_neutralises_formulas_the_owasp_way_and_keeps_the_rest(db: str) -> None:
    result = _run("--db", db, "usage", "--format", "csv", "--by", "customer,model")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(HOSTILE)
    formulas = ("=", "+", "-", "@", "\t", "\r")
    for row in rows:
        for key in ("customer", "model"):
            assert not row[key].startswith(formulas), row[key]
            original = (
                row[key][1:] if row[key].startswith("'") and row[key][1:].startswith(formulas) else row[key]
            )
            assert original in {visible(text) for text in HOSTILE}
            assert "\x1b" not in row[key]
        float(row["cost"])  # amounts stay numbers


def test_visible_and_csv_text() -> None:
    assert visible("plain text, ünïcödé, 中文 ✓") == "plain text, ünïcödé, 中文 ✓"
    assert visible("a\x1b[2Jb\u202ec\ud800") == "a\\x1b[2Jb\\u202ec\\ud800"
    assert visible("\x00\x7f\x9b") == "\\x00\\x7f\\x9b"
    assert [csv_text(v) for v in ("=1", "+1", "-1", "@a", "\tx", "\rx", "a=1", "")] == [
        "'=1",
        "'+1",
        "'-1",
        "'@a",
        "'\\x09x",
        "'\\x0dx",
        "a=1",
        "",
    ]


def test_errors_are_shown_as_text(tmp_path: Path) -> None:
    result = _run("--db", "sqlite:///" + str(tmp_path / "x.db"), "usage", "--since", "[/]\x1b]0;t\x07")
    assert result.exit_code == 2
    assert "MarkupError" not in result.output and "\x1b]" not in result.output
    assert "[/]\\x1b]0;t\\x07" in result.output


def test_hostile_rows_are_stored_as_they_came(db: str) -> None:
    ledger = open_ledger(db)
    try:
        customers: set[Any] = {r.priced.usage.customer for r in ledger.rows(limit=100)}
    finally:
        ledger.close()
    assert customers == set(HOSTILE)
