"""``prices update`` against a local feed server on both backends: exactly the changed entries
applied, older data refused with the catalog untouched, models missing from the feed kept,
validators, bad input, and pricing that follows the version that should apply (oracle:
genai-prices' own ``calc_price`` on that version's data)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from otel_aibill.cli import app
from otel_aibill.config import PricesConfig, PricingConfig
from otel_aibill.pricing import Pricer
from otel_aibill.pricing.clock import datetime_to_ns
from otel_aibill.usage import UsageRecord
from otel_aibill.watch.catalog_store import CatalogStore, current_catalog
from otel_aibill.watch.fetch import FetchError
from otel_aibill.watch.update import update_prices
from price_support import add_period, bundled_raw, feed_bytes, feed_server, model_of, oracle

BEFORE = datetime(2026, 11, 20, 12, tzinfo=UTC)
AFTER = datetime(2026, 12, 5, 12, tzinfo=UTC)


def cli(url: str, *args: str, config: Path | None = None) -> Result:
    extra = ["--config", str(config)] if config else []
    return CliRunner().invoke(app, ["--db", url, *extra, *args])


def changed_feed() -> list[dict[str, Any]]:
    """gpt-4o costs more from 2026-12-01, one model is new, and anthropic is not in the feed."""
    raw = [p for p in bundled_raw() if p["id"] != "anthropic"]
    add_period(raw, "openai", "gpt-4o", "2026-12-01", input_mtok="3.75", output_mtok="15")
    openai = next(p for p in raw if p["id"] == "openai")
    prices = {"input_mtok": "7", "output_mtok": "9"}
    new = {"id": "gpt-x-test", "match": {"equals": "gpt-x-test"}, "prices": prices}
    openai["models"].insert(0, new)
    return raw


def usage(model: str, at: datetime, provider: str = "openai") -> UsageRecord:
    ns = datetime_to_ns(at)
    return UsageRecord(
        trace_id="1" * 32, span_id="2" * 16, start_time_ns=ns, end_time_ns=ns + 1, provider=provider,
        model=model, operation="chat", input_tokens=12_000, output_tokens=3_000, cache_read_tokens=2_000,
    )  # fmt: skip


def cost(url: str, model: str, at: datetime, provider: str = "openai") -> Decimal | None:
    return Pricer(catalog=current_catalog(url, PricingConfig())).price(usage(model, at, provider)).cost


def test_a_changed_feed_applies_exactly_its_changes(ledger_url: str) -> None:
    raw = changed_feed()
    with feed_server() as server:
        server.body = feed_bytes(raw)
        result = cli(ledger_url, "prices", "update", "--source", server.url, "--format", "json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)[0]
        assert report["applied"] == 2 and report["pending"] is None
        changed = {
            (c["provider"], c["model"], c["unit"], c["effective"], c["change"]) for c in report["changes"]
        }
        assert changed == {
            ("openai", "gpt-4o", "input_mtok", "2026-12-01", "added"),
            ("openai", "gpt-4o", "output_mtok", "2026-12-01", "added"),
            ("openai", "gpt-4o", "cache_read_mtok", "2026-12-01", "added"),
            ("openai", "gpt-4o", "web_searches_kcount", "2026-12-01", "added"),
            ("openai", "gpt-4o", "storage_searches_kcount", "2026-12-01", "added"),
            ("openai", "gpt-x-test", "input_mtok", "", "added"),
            ("openai", "gpt-x-test", "output_mtok", "", "added"),
        }
        assert report["refused"] == [] and report["kept_missing_from_feed"] > 0
        # the same feed again: the server says not modified, nothing is stored
        again = cli(ledger_url, "prices", "update", "--source", server.url)
        assert again.exit_code == 0 and "not modified" in again.output
        assert server.requests[-1].get("If-None-Match")
    with CatalogStore(ledger_url) as store:
        assert [s.seq for s in store.snapshots()] == [1, 2]
        v2 = store.data(store.current()).providers
    tokens = {"input_tokens": 12_000, "output_tokens": 3_000, "cache_read_tokens": 2_000}
    for at in (BEFORE, AFTER):  # the new price from its effective date, the old one before
        assert cost(ledger_url, "gpt-4o", at) == oracle(list(v2), "openai", "gpt-4o", at, **tokens)
    assert cost(ledger_url, "gpt-4o", AFTER) != cost(ledger_url, "gpt-4o", BEFORE)
    assert cost(ledger_url, "gpt-x-test", AFTER) == Decimal("0.111")  # 12k x 7 + 3k x 9 per M
    assert cost(ledger_url, "claude-sonnet-4-5", AFTER, "anthropic") is not None  # kept


def test_older_data_is_refused_and_the_catalog_untouched(ledger_url: str) -> None:
    with feed_server() as server:
        server.body = feed_bytes(changed_feed())
        assert cli(ledger_url, "prices", "update", "--source", server.url).exit_code == 0
        stale = bundled_raw()  # the data before the change: gpt-4o without its December price
        server.body = feed_bytes(stale)
        result = cli(ledger_url, "prices", "update", "--source", server.url)
    assert result.exit_code == 0, result.output
    assert "refused: openai/gpt-4o: would remove the period from 2026-12-01" in result.output
    assert "no price changes; catalog stays v2" in result.output
    with CatalogStore(ledger_url) as store:
        assert [s.seq for s in store.snapshots()] == [1, 2]
    assert cost(ledger_url, "gpt-4o", AFTER) == Decimal("0.085")  # 10k x 3.75 + 2k x 1.25 + 3k x 15


def test_back_dating_and_rewriting_history_are_refused(ledger_url: str) -> None:
    raw = changed_feed()
    with feed_server() as server:
        server.body = feed_bytes(raw)
        cli(ledger_url, "prices", "update", "--source", server.url)
        add_period(raw, "openai", "gpt-4o", "2026-06-01", input_mtok="1")
        m = model_of(raw, "openai", "gpt-4o")
        m["prices"].sort(key=lambda p: p.get("constraint", {}).get("start_date", ""))
        server.body = feed_bytes(raw)
        back = cli(ledger_url, "prices", "update", "--source", server.url)
        raw = changed_feed()
        model_of(raw, "openai", "gpt-4o")["prices"][0]["prices"]["input_mtok"] = "2"
        server.body = feed_bytes(raw)
        rewrite = cli(ledger_url, "prices", "update", "--source", server.url)
    assert "back-dates a price to 2026-06-01" in back.output
    assert "changes the first period, already superseded" in rewrite.output
    with CatalogStore(ledger_url) as store:
        assert len(store.snapshots()) == 2


def test_bad_entries_are_refused_and_the_rest_applies(ledger_url: str) -> None:
    raw = changed_feed()
    openai = next(p for p in raw if p["id"] == "openai")
    openai["models"].insert(
        0, {"id": "neg", "match": {"equals": "neg"}, "prices": {"input_mtok": "-1", "output_mtok": "1"}}
    )
    openai["models"].insert(
        0, {"id": "nan", "match": {"equals": "nan"}, "prices": {"input_mtok": "abc", "output_mtok": "1"}}
    )
    with feed_server() as server:
        server.body = feed_bytes(raw)
        result = cli(ledger_url, "prices", "update", "--source", server.url)
    assert result.exit_code == 0, result.output
    assert "refused: openai/neg: input_mtok is negative: -1" in result.output
    assert "refused: openai/nan: malformed: " in result.output
    assert cost(ledger_url, "gpt-x-test", AFTER) == Decimal("0.111")
    assert cost(ledger_url, "neg", AFTER) is None


@pytest.mark.parametrize(
    ("body", "status", "delay", "message"),
    [
        (b"[{not json", 200, 0.0, "malformed JSON price data"),
        (b'{"hello": 1}', 200, 0.0, "array of providers"),
        (b"[]", 200, 0.0, "has no providers"),
        (b"x" * 5000, 200, 0.0, "over the limit of 4,096"),
        (b"[]", 503, 0.0, "answered HTTP 503"),
        (b"[]", 200, 2.0, "did not answer within 0.5 s"),
    ],
)
def test_a_bad_source_is_an_error_and_changes_nothing(
    ledger_url: str, tmp_path: Path, body: bytes, status: int, delay: float, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[prices]\ntimeout_seconds = 0.5\nmax_bytes = 4096\n")
    with feed_server() as server:
        server.body, server.status, server.delay = body, status, delay
        result = cli(ledger_url, "prices", "update", "--source", server.url, config=config)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    with CatalogStore(ledger_url) as store:
        assert [s.seq for s in store.snapshots()] == [1]
        assert store.validators(server.url) == (None, None)


def test_an_unreachable_source_raises_retry_later(ledger_url: str) -> None:
    with CatalogStore(ledger_url) as store, pytest.raises(FetchError, match="cannot fetch"):
        update_prices(store, PricesConfig(timeout_seconds=2), "http://127.0.0.1:9/data.json")


def test_an_overrides_file_is_a_feed_too(ledger_url: str, tmp_path: Path) -> None:
    feed = tmp_path / "prices.toml"
    feed.write_text(
        "[[pricing.overrides]]\nprovider = 'openai'\nmodel = 'gpt-4o'\n"
        "effective_from = 2026-12-01T00:00:00Z\ninput_mtok = '5'\noutput_mtok = '20'\n"
        "[[pricing.overrides]]\nprovider = 'openai'\nmodel = 'my-tune'\ninput_mtok = '1'\noutput_mtok = '2'\n"
    )
    result = cli(ledger_url, "prices", "update", "--source", str(feed))
    assert result.exit_code == 0, result.output
    assert cost(ledger_url, "my-tune", AFTER) == Decimal("0.018")
    assert cost(ledger_url, "gpt-4o", AFTER) == Decimal("0.12")  # 12k x 5 + 3k x 20 (no cache price)
    assert cost(ledger_url, "gpt-4o", BEFORE) == Decimal("0.0575")  # 10k x 2.5 + 2k x 1.25 + 3k x 10


def test_list_show_history_and_diff(ledger_url: str) -> None:
    with feed_server() as server:
        server.body = feed_bytes(changed_feed())
        cli(ledger_url, "prices", "update", "--source", server.url)
    shown = json.loads(cli(ledger_url, "prices", "show", "gpt-4o", "--format", "json").output)
    assert {(r["unit"], r["effective"], r["price"]) for r in shown} >= {
        ("input_mtok", "", "2.5"),
        ("input_mtok", "2026-12-01", "3.75"),
    }
    listed = cli(ledger_url, "prices", "list", "--provider", "openai", "--format", "csv").output
    assert listed.splitlines()[0] == "provider,model,unit,tier,variant,effective,price,source,pending"
    assert "openai,gpt-x-test,input_mtok,,,,7,v2," in listed
    history = json.loads(cli(ledger_url, "prices", "history", "gpt-4o", "--format", "json").output)
    assert {(h["version"], h["unit"], h["new"]) for h in history} >= {("v2", "input_mtok", "3.75")}
    diffed = json.loads(cli(ledger_url, "prices", "diff", "1", "2", "--format", "json").output)
    assert {d["model"] for d in diffed} == {"gpt-4o", "gpt-x-test"}
    table = cli(ledger_url, "prices", "diff", "v1", "v2").output
    assert "gpt-x-test" in table


def test_hold_keeps_the_approved_prices_until_approval(ledger_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[prices]\npolicy = "hold"\n')
    with feed_server() as server:
        server.body = feed_bytes(changed_feed())
        result = cli(ledger_url, "prices", "update", "--source", server.url, config=config)
    assert result.exit_code == 0 and "held for approval: v2" in result.output
    with CatalogStore(ledger_url) as store:
        v1 = store.data(store.current()).providers
        assert store.current().seq == 1
    tokens = {"input_tokens": 12_000, "output_tokens": 3_000, "cache_read_tokens": 2_000}
    assert cost(ledger_url, "gpt-4o", AFTER) == oracle(list(v1), "openai", "gpt-4o", AFTER, **tokens)
    shown = json.loads(cli(ledger_url, "prices", "show", "gpt-4o", "--format", "json").output)
    assert any(r["pending"] for r in shown) is False  # a new period, not a changed price
    listed = json.loads(cli(ledger_url, "prices", "diff", "--format", "json").output)
    assert {d["model"] for d in listed} == {"gpt-4o", "gpt-x-test"}
    assert cli(ledger_url, "prices", "approve", "v2").exit_code == 0
    with CatalogStore(ledger_url) as store:
        v2 = store.data(store.current()).providers
    assert cost(ledger_url, "gpt-4o", AFTER) == oracle(list(v2), "openai", "gpt-4o", AFTER, **tokens)
    assert cli(ledger_url, "prices", "approve", "v2").exit_code == 1  # not pending any more


def test_a_rejected_version_is_not_proposed_again(ledger_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[prices]\npolicy = "apply"\npolicies = {openai = "hold"}\n')
    with feed_server() as server:
        server.body = feed_bytes(changed_feed())
        cli(ledger_url, "prices", "update", "--source", server.url, config=config)
        assert cli(ledger_url, "prices", "reject", "2").exit_code == 0
        server.body = feed_bytes(changed_feed()) + b" "  # a new ETag, the same data
        again = cli(ledger_url, "prices", "update", "--source", server.url, config=config)
    assert "no price changes" in again.output
    with CatalogStore(ledger_url) as store:
        assert [(s.seq, s.status) for s in store.snapshots()] == [(1, "approved"), (2, "rejected")]
