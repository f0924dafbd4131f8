"""``otel-aibill`` CLI behaviour: usage reports, customers, configuration and ledger selection.

The ledger is filled through the real ``Pipeline`` (extract → attribute → price → append), and the
commands run in-process through typer's ``CliRunner``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from otel_aibill.cli import app
from otel_aibill.config import Config
from otel_aibill.ledger import open_ledger
from otel_aibill.pipeline import Pipeline
from otel_aibill.usage import SpanView

DAY1 = datetime(2026, 1, 5, 10, tzinfo=UTC)
DAY2 = datetime(2026, 1, 6, 10, tzinfo=UTC)
PLAIN_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")  # no exponent, no float artefacts
MONEY_KEYS = ("cost", "billed")
COUNT_KEYS = ("spans", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
COUNT_KEYS += ("reasoning_tokens",)


def _span(trace: int, span: int, at: datetime, attrs: dict[str, Any]) -> SpanView:
    ns = int(at.timestamp()) * 1_000_000_000
    return SpanView(
        trace_id=f"{trace:032x}",
        span_id=f"{span:016x}",
        name="chat",
        start_time_ns=ns,
        end_time_ns=ns + 1_000_000,
        attributes=attrs,
        resource={"service.name": "chat-api"},
        scope_name="chat-api.llm",
    )


def _chat(provider: str, model: str, inp: int, out: int, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
        **extra,
    }


def fill(db: str) -> None:
    """Known usage on two days, with a 20% markup. Costs from public list prices:
    gpt-4o-mini $0.15/$0.60, claude-haiku-4-5 $1/$5 (cache read $0.10), o3 $2/$8 per Mtok."""
    cfg = Config.model_validate({"db": db, "pricing": {"markup": [{"id": "m20", "percent": "20"}]}})
    ledger = open_ledger(db)
    try:
        spans = [
            # acme, day 1: cost 0.00027 and 0.00195 (1000 uncached + 2000 cache read, 150 out)
            _span(1, 1, DAY1, {**_chat("openai", "gpt-4o-mini", 1000, 200), "customer.id": "acme"}),
            _span(
                1,
                2,
                DAY1,
                {
                    **_chat("anthropic", "claude-haiku-4-5", 3000, 150),
                    "gen_ai.usage.cache_read.input_tokens": 2000,
                    "customer.id": "acme",
                },
            ),
            _span(1, 3, DAY1, {**_chat("openai", "gpt-4o-mini", 1000, 200), "customer.id": "acme"}),
            # a model without a price: stored with its tokens, never a silent $0
            _span(1, 4, DAY1, {**_chat("openai", "acme-finetune-7", 10, 5), "customer.id": "acme"}),
            # globex, day 2: one token costs 0.00000015, far below 10^-6 (exponent territory)
            _span(2, 5, DAY2, {**_chat("openai", "gpt-4o-mini", 1, 0), "tenant.id": "globex"}),
            _span(
                2,
                6,
                DAY2,
                {
                    **_chat("openai", "o3", 500, 900),
                    "gen_ai.usage.reasoning.output_tokens": 700,
                    "tenant.id": "globex",
                },
            ),
            # usage whose trace never names a customer: kept, shown as pending
            _span(3, 7, DAY2, _chat("openai", "gpt-4o-mini", 2000, 0)),
        ]
        result = Pipeline(ledger, cfg).ingest(spans)
        assert result.billed == 7 and result.unpriced == 1 and result.pending == 1
    finally:
        ledger.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OTEL_AIBILL_DB", "OTEL_AIBILL_CONFIG", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: no truncated columns
    yield


@pytest.fixture
def db(ledger_url: str, env: None) -> str:
    """A filled ledger on each backend: the usage tests run on SQLite and on PostgreSQL."""
    fill(ledger_url)
    return ledger_url


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def usage_json(db: str, *args: str) -> dict[tuple[str, ...], dict[str, Any]]:
    res = run("--db", db, "usage", "--format", "json", *args)
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)
    assert isinstance(items, list)
    by = next((args[i + 1] for i, a in enumerate(args) if a == "--by"), "customer,provider,model")
    keyed = {tuple(str(item[k]) for k in by.split(",")): item for item in items}
    assert len(keyed) == len(items)
    return keyed


def test_usage_json_shape_and_exact_amounts(db: str) -> None:
    rows = usage_json(db)
    assert set(rows) == {
        ("acme", "openai", "gpt-4o-mini"),
        ("acme", "anthropic", "claude-haiku-4-5"),
        ("acme", "openai", "acme-finetune-7"),
        ("globex", "openai", "gpt-4o-mini"),
        ("globex", "openai", "o3"),
        ("(pending)", "openai", "gpt-4o-mini"),
    }
    for item in rows.values():
        for key in MONEY_KEYS:
            assert isinstance(item[key], str) and PLAIN_DECIMAL.match(item[key]), (key, item[key])
        for key in COUNT_KEYS:
            assert isinstance(item[key], int)
        assert item["currency"] == "USD"

    mini = rows[("acme", "openai", "gpt-4o-mini")]
    assert (mini["spans"], mini["input_tokens"], mini["output_tokens"]) == (2, 2000, 400)
    assert Decimal(mini["cost"]) == Decimal("0.00054")
    assert Decimal(mini["billed"]) == Decimal("0.000648")
    haiku = rows[("acme", "anthropic", "claude-haiku-4-5")]
    assert (haiku["input_tokens"], haiku["cache_read_tokens"], haiku["output_tokens"]) == (3000, 2000, 150)
    assert Decimal(haiku["cost"]) == Decimal("0.00195") and Decimal(haiku["billed"]) == Decimal("0.00234")
    o3 = rows[("globex", "openai", "o3")]
    assert (o3["output_tokens"], o3["reasoning_tokens"]) == (900, 700)
    assert Decimal(o3["cost"]) == Decimal("0.0082") and Decimal(o3["billed"]) == Decimal("0.00984")
    tiny = rows[("globex", "openai", "gpt-4o-mini")]
    assert Decimal(tiny["cost"]) == Decimal("0.00000015")
    assert Decimal(tiny["billed"]) == Decimal("0.00000018")
    unpriced = rows[("acme", "openai", "acme-finetune-7")]
    assert unpriced["unpriced_spans"] == 1 and unpriced["input_tokens"] == 10
    assert Decimal(unpriced["cost"]) == 0
    pending = rows[("(pending)", "openai", "gpt-4o-mini")]
    assert pending["pending_spans"] == 1 and pending["input_tokens"] == 2000


def test_usage_csv_matches_json(db: str) -> None:
    as_json = usage_json(db)
    res = run("--db", db, "usage", "--format", "csv")
    assert res.exit_code == 0, res.output
    parsed = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(parsed) == len(as_json)
    for row in parsed:
        item = as_json[(row["customer"], row["provider"], row["model"])]
        assert {k: str(v) for k, v in item.items()} == row


def test_usage_table(db: str) -> None:
    res = run("--db", db, "usage")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for text in (
        "acme",
        "globex",
        "claude-haiku-4-5",
        "o3",
        "0.000648",
        "0.009840",
        "1 unpriced",
        "1 pending",
    ):
        assert text in out, text
    assert "margin" in out and "0.000108" in out  # 0.000648 - 0.00054


def test_usage_filters(db: str) -> None:
    acme = usage_json(db, "--customer", "acme")
    assert {k[0] for k in acme} == {"acme"} and len(acme) == 3
    day2 = usage_json(db, "--since", "2026-01-06")
    assert {k[0] for k in day2} == {"globex", "(pending)"}
    day1 = usage_json(db, "--until", "2026-01-06T00:00:00+00:00")
    assert {k[0] for k in day1} == {"acme"}
    # --since is inclusive and --until exclusive, on span start time
    exact = usage_json(db, "--since", DAY1.isoformat(), "--until", "2026-01-05T10:00:01Z")
    assert sum(i["spans"] for i in exact.values()) == 4
    assert usage_json(db, "--since", "2026-01-05T10:00:01+00:00", "--until", "2026-01-06T09:00:00") == {}
    # a timezone offset is honoured: 11:00+01:00 is 10:00 UTC
    assert sum(i["spans"] for i in usage_json(db, "--since", "2026-01-06T11:00:00+01:00").values()) == 3


def test_usage_by_day_and_by_customer(db: str) -> None:
    days = usage_json(db, "--by", "day")
    assert set(days) == {("2026-01-05",), ("2026-01-06",)}
    d1 = days[("2026-01-05",)]
    assert d1["spans"] == 4 and d1["customer"] == "*" and d1["model"] == "*"
    assert Decimal(d1["cost"]) == Decimal("0.00249")
    assert Decimal(days[("2026-01-06",)]["billed"]) == Decimal("0.00984018")
    per = usage_json(db, "--by", "customer,day", "--customer", "globex")
    assert set(per) == {("globex", "2026-01-06")}
    assert Decimal(per[("globex", "2026-01-06")]["billed"]) == Decimal("0.00984018")
    customers = usage_json(db, "--by", "customer")
    assert Decimal(customers[("acme",)]["billed"]) == Decimal("0.002988")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "colour"], "--by"),
        (["--by", "customer,colour"], "colour"),
        (["--by", ","], "--by"),
        (["--by", "day,day"], "--by"),
        (["--format", "xml"], "--format"),
        (["--since", "yesterday"], "--since"),
        (["--until", "2026-13-01"], "--until"),
    ],
)
def test_usage_invalid_options_exit_2(db: str, args: list[str], message: str) -> None:
    res = run("--db", db, "usage", *args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "error" in res.stderr
    assert "Traceback" not in res.output


def test_customers_set_and_list(tmp_path: Path, env: None) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    res = run("--db", db, "customers", "set", "acme", "cus_Acme123", "--name", "Acme Corp")
    assert res.exit_code == 0 and "acme -> cus_Acme123" in res.stdout, res.output
    assert run("--db", db, "customers", "set", "globex", "cus_G").exit_code == 0
    listed = run("--db", db, "customers", "list")
    assert listed.exit_code == 0
    assert re.search(r"acme\s.*cus_Acme123\s.*Acme Corp", listed.stdout)
    assert re.search(r"globex\s.*cus_G", listed.stdout)

    bad = run("--db", db, "customers", "set", "acme", "acct_123")
    assert bad.exit_code == 2 and "cus_" in bad.stderr
    cleared = run("--db", db, "customers", "set", "globex")
    assert cleared.exit_code == 0 and "no Stripe customer" in cleared.stdout
    ledger = open_ledger(db)
    try:
        stored = {c.customer_id: (c.stripe_customer_id, c.name) for c in ledger.customers()}
    finally:
        ledger.close()
    assert stored == {"acme": ("cus_Acme123", "Acme Corp"), "globex": (None, None)}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[pricing.markup]]\nid = "m"\npercent = 20.5\n', "write money as a string"),
        ('[[pricing.markup]]\nid = "m"\nfixed_fee = 0.01\n', "input_type=float"),  # not eaten as markup
        ('[[pricing.overrides]]\nprovider = "x"\nmodel = "y"\ninput_mtok = 0.1\n', "write money as a string"),
        ('[pricing]\ncurrency = "USD"\nunknown = 1\n', "unknown"),
        ("[pricing\n", "cannot read config"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, env: None, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'x.db'}"
    res = run("--db", db, "--config", str(path), "usage")
    assert res.exit_code == 2, res.output
    assert message in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.output
    # the same file through OTEL_AIBILL_CONFIG
    via_env = run("--db", db, "usage", env={"OTEL_AIBILL_CONFIG": str(path)})
    assert via_env.exit_code == 2 and message in via_env.stderr


def test_missing_config_file(tmp_path: Path, env: None) -> None:
    res = run("--config", str(tmp_path / "nope.toml"), "usage")
    assert res.exit_code == 2 and "cannot read config" in res.stderr


def test_bad_stripe_section_is_a_clear_error(tmp_path: Path, env: None) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[stripe]\npoll_interval = "soon"\n', encoding="utf-8")
    res = run("--db", f"sqlite:///{tmp_path / 'x.db'}", "--config", str(path), "stripe", "export", "--once")
    assert res.exit_code == 2 and "[stripe]" in res.stderr and "poll_interval" in res.stderr


def _customers_in(*args: str, env: dict[str, str] | None = None) -> set[str]:
    res = run(*args, "usage", "--format", "json", "--by", "customer", env=env)
    assert res.exit_code == 0, res.output
    return {item["customer"] for item in json.loads(res.stdout)}


def _one_customer_ledger(path: Path, customer: str) -> str:
    url = f"sqlite:///{path}"
    ledger = open_ledger(url)
    try:
        Pipeline(ledger, Config(db=url)).ingest(
            [_span(1, 1, DAY1, {**_chat("openai", "gpt-4o-mini", 10, 1), "customer.id": customer})]
        )
    finally:
        ledger.close()
    return url


def test_db_option_env_and_config_precedence(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_option = _one_customer_ledger(tmp_path / "option.db", "from-option")
    from_env = _one_customer_ledger(tmp_path / "env.db", "from-env")
    from_file = _one_customer_ledger(tmp_path / "file.db", "from-file")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'db = "{from_file}"\n', encoding="utf-8")
    e = {"OTEL_AIBILL_DB": from_env}

    assert _customers_in("--db", from_option, env=e) == {"from-option"}  # --db beats env
    assert _customers_in(env=e) == {"from-env"}
    assert _customers_in("--config", str(cfg), env=e) == {"from-env"}  # env beats the file
    assert _customers_in("--config", str(cfg)) == {"from-file"}
    assert _customers_in("--db", from_option, "--config", str(cfg)) == {"from-option"}
    # default: ./aibill.db
    monkeypatch.chdir(tmp_path)
    res = run("customers", "set", "here", "cus_here")
    assert res.exit_code == 0 and (tmp_path / "aibill.db").exists()


def test_invalid_db_url_is_a_clear_error(tmp_path: Path, env: None) -> None:
    res = run("--db", "mysql://nope", "usage")
    assert res.exit_code == 2, res.output
    assert "mysql" in res.stderr and "Traceback" not in res.output
    res = run("--db", "postgresql://127.0.0.1/test?schema=Not-Valid", "usage")
    assert res.exit_code == 2, res.output
    assert "schema must be a lowercase SQL identifier" in res.stderr


def test_an_unreachable_postgres_ledger_is_a_clear_error(env: None) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"postgresql://u:secret@127.0.0.1:{sock.getsockname()[1]}/none"
        for command in (["usage"], ["customers", "list"]):
            res = run("--db", url, *command)
            assert res.exit_code == 1, res.output
            assert "cannot connect to the PostgreSQL ledger" in res.stderr
            assert "secret" not in res.stderr and "Traceback" not in res.output


def test_the_ledger_url_from_the_environment_opens_postgres(pg_url: str, env: None) -> None:
    assert run("customers", "set", "acme", "cus_1", env={"OTEL_AIBILL_DB": pg_url}).exit_code == 0
    ledger = open_ledger(pg_url)
    try:
        assert [c.stripe_customer_id for c in ledger.customers()] == ["cus_1"]
    finally:
        ledger.close()
