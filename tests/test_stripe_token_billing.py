"""Tokens mode as Stripe's LLM token billing prices it: model names exactly as Stripe's own meter
writes them, the four token types, the meter's dimension keys, and ledgers exported before."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe
from typer.testing import CliRunner

from fakestripe import FakeStripe
from fakestripe.state import TOKEN_BILLING_MODELS, TOKEN_TYPES
from fakestripe.support import client_for, open_test_ledger, priced
from otel_aibill.config import Config
from otel_aibill.ledger.base import AppendBatch
from otel_aibill.stripe import ExportStore, StripeConfig, StripeExporter
from otel_aibill.stripe import plan as plan_module
from otel_aibill.stripe.models import normalize_model_name, token_billing_model
from otel_aibill.stripe.plan import ExportRow, restrict_tokens, token_types
from otel_aibill.stripe.setup import SetupError, ensure_meters

# The examples of stripe/agent-toolkit's own tests of normalizeModelName: (provider, model, sent).
STRIPE_METER_NAMES = [
    ("google", "gemini-2.5-pro", "google/gemini-2.5-pro"),
    ("google", "gemini-2.0-flash-lite", "google/gemini-2.0-flash-lite"),
    ("openai", "gpt-5", "openai/gpt-5"),
    ("openai", "gpt-5-chat-latest", "openai/gpt-5-chat-latest"),
    ("openai", "gpt-4.1-mini", "openai/gpt-4.1-mini"),
    ("openai", "o3-pro", "openai/o3-pro"),
    ("openai", "gpt-4o-2024-11-20", "openai/gpt-4o"),
    ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
    ("openai", "o1-2024-12-17", "openai/o1"),
    ("openai", "o1-mini-2024-09-12", "openai/o1-mini"),
    ("openai", "gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13"),
    ("anthropic", "claude-opus-4-1", "anthropic/claude-opus-4.1"),
    ("anthropic", "claude-opus-4", "anthropic/claude-opus-4"),
    ("anthropic", "claude-3-7-sonnet-latest", "anthropic/claude-3.7-sonnet"),
    ("anthropic", "claude-3-5-haiku", "anthropic/claude-3.5-haiku"),
    ("anthropic", "claude-3-haiku", "anthropic/claude-3-haiku"),
    ("anthropic", "claude-opus-4-1-20241231", "anthropic/claude-opus-4.1"),
    ("anthropic", "claude-3-5-sonnet-20241022", "anthropic/claude-3.5-sonnet"),
    ("anthropic", "claude-3-haiku-20240307", "anthropic/claude-3-haiku"),
    ("anthropic", "claude-sonnet-4-latest", "anthropic/claude-sonnet-4"),
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4.5"),
    ("anthropic", "claude-sonnet-4-20250514", "anthropic/claude-sonnet-4"),
]

# Dated ids as providers report them in spans; what Stripe's meter sends for each.
DATED = [
    ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
    ("openai", "gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13"),
    ("anthropic", "claude-3-5-sonnet-20241022", "anthropic/claude-3.5-sonnet"),
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4.5"),
]


@pytest.mark.parametrize(("provider", "model", "sent"), STRIPE_METER_NAMES)
def test_model_names_are_normalised_as_stripes_meter_does(provider: str, model: str, sent: str) -> None:
    assert f"{provider}/{normalize_model_name(provider, model)}" == sent
    assert sent in TOKEN_BILLING_MODELS


def test_ledger_providers_map_to_token_billing_providers_and_the_config_map_wins() -> None:
    assert token_billing_model("gcp.gemini", "gemini-2.5-flash", {}).stripe == "google/gemini-2.5-flash"
    assert token_billing_model("gcp.vertex_ai", "gemini-2.0-flash", {}).stripe == "google/gemini-2.0-flash"
    vertex_claude = token_billing_model("gcp.vertex_ai", "claude-3-5-sonnet-v2@20241022", {})
    assert (vertex_claude.stripe, vertex_claude.source) == (
        "gcp.vertex_ai/claude-3-5-sonnet-v2@20241022",
        "as is",
    )
    overrides = {"openai/ft:gpt-4o-mini:acme": "openai/gpt-4o-mini"}
    mapped = token_billing_model("openai", "ft:gpt-4o-mini:acme", overrides)
    assert (mapped.stripe, mapped.source) == ("openai/gpt-4o-mini", "map")
    assert token_billing_model("anthropic", "claude-3-5-haiku-20241022", overrides).source == "rule"


def test_token_types_are_the_four_stripe_prices() -> None:
    row = ExportRow(1, "a", "cus_a", 0, "anthropic", "claude", "USD", Decimal(0), 1000, 300, 600, 250)
    assert token_types(row, ("anthropic",)) == [
        ("input", 150),
        ("cached_input", 600),
        ("cached_write", 250),
        ("output", 300),
    ]
    openai = ExportRow(1, "a", "cus_a", 0, "openai", "o3", "USD", Decimal(0), 1000, 300, 600, 0)
    assert token_types(openai, ("anthropic",)) == [("input", 400), ("cached_input", 600), ("output", 300)]
    assert {k for k, _ in token_types(row, ("anthropic",))} <= TOKEN_TYPES


def test_parts_sent_under_earlier_token_type_names_are_read_as_the_current_types() -> None:
    """A row exported with ``cache_read``/``cache_write`` (earlier versions) and then taken back in
    part is held as exactly that part, which is then sent under the current names."""
    row = ExportRow(1, "a", "cus_a", 0, "anthropic", "claude", "USD", Decimal(0), 1000, 300, 600, 250)
    old_kinds = {"input", "cache_read", "cache_write", "output"}
    part = restrict_tokens(row, {"cache_write"}, old_kinds)
    assert token_types(part, ("anthropic",)) == [("cached_write", 250)]
    part = restrict_tokens(row, {"cache_read", "output"}, old_kinds)
    assert token_types(part, ("anthropic",)) == [("cached_input", 600), ("output", 300)]


def _exporter(tmp_path: Path, fake: FakeStripe, sc: StripeConfig, customers: dict[str, str]) -> Any:
    url = f"sqlite:///{tmp_path / 'aibill.db'}"
    ledger = open_test_ledger(url)
    store = ExportStore(url)
    fake.add_customer(*customers.values())
    exporter = StripeExporter(
        ledger, store, Config(db=url, customers=customers), client_for(fake, sc), stripe_settings=sc
    )
    return ledger, store, exporter


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_dated_model_ids_are_sent_as_stripes_meter_sends_them(tmp_path: Path, api: str) -> None:
    """Payloads equal what Stripe's meter sends (same keys, model names), and per model and token
    type the values add up to the spans' tokens."""
    sc = StripeConfig(mode="tokens", api=api, concurrency=1)
    with FakeStripe() as fake:
        ledger, store, exporter = _exporter(tmp_path, fake, sc, {"acme": "cus_acme"})
        ensure_meters(client_for(fake, sc), sc)
        now = int(fake.clock())
        rows = []
        for i, (provider, model, _) in enumerate(DATED * 3):
            cache_write = 40 + i if provider == "anthropic" else 0
            rows.append(
                priced(
                    i + 1,
                    "acme",
                    now - 60 - i,
                    "0.01",
                    provider=provider,
                    model=model,
                    input_tokens=1000 + i,
                    output_tokens=200 + i,
                    cache_read=300 + i,
                    cache_write=cache_write,
                )
            )
        ledger.append(AppendBatch(rows=rows))
        report = exporter.run_once()
        assert report.errors == [] and report.rejected == 0 and report.settled

        sent_as = {model: sent for _, model, sent in DATED}
        want: dict[tuple[str, str], int] = defaultdict(int)
        for p in rows:
            u = p.usage
            name = sent_as[u.model]
            if u.provider == "anthropic":
                want[name, "input"] += u.input_tokens - u.cache_read_tokens - u.cache_write_tokens
                want[name, "cached_write"] += u.cache_write_tokens
            else:
                want[name, "input"] += u.input_tokens - u.cache_read_tokens
            want[name, "cached_input"] += u.cache_read_tokens
            want[name, "output"] += u.output_tokens
        got: dict[tuple[str, str], int] = defaultdict(int)
        for ev in fake.state.log:
            assert ev.error is None
            assert set(ev.payload) == {"stripe_customer_id", "value", "model", "token_type"}
            assert ev.event_name == "token-billing-tokens"
            got[ev.payload["model"], ev.payload["token_type"]] += int(ev.payload["value"])
        assert got == want
        assert sum(got.values()) == sum(p.usage.input_tokens + p.usage.output_tokens for p in rows)
        ledger.close()
        store.close()


def test_setup_in_tokens_mode_creates_the_meter_with_model_and_token_type_dimensions() -> None:
    sc = StripeConfig(mode="tokens")
    with FakeStripe() as fake:
        client = client_for(fake, sc)
        [action] = ensure_meters(client, sc)
        assert action.action == "created"
        meter = fake.state.meters[action.id]
        assert meter.dimension_keys == ("model", "token_type")
        assert [a.action for a in ensure_meters(client, sc)] == ["exists"]


def test_setup_refuses_a_tokens_meter_without_the_dimensions() -> None:
    sc = StripeConfig(mode="tokens")
    with FakeStripe() as fake:
        client = client_for(fake, sc)
        client.v1.billing.meters.create(
            {
                "display_name": "tokens",
                "event_name": sc.tokens_event_name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": {"event_payload_key": "value"},
            }
        )
        with pytest.raises(SetupError, match="dimension_payload_keys"):
            ensure_meters(client, sc)


def test_the_fake_refuses_unknown_model_names_and_checks_dimensions() -> None:
    sc = StripeConfig(mode="tokens")
    with FakeStripe() as fake:
        client = client_for(fake, sc)
        fake.add_customer("cus_a")
        ensure_meters(client, sc)
        base = {"stripe_customer_id": "cus_a", "value": "10", "token_type": "input"}
        with pytest.raises(stripe.InvalidRequestError, match="openai/gpt-4o-mini-2024-07-18"):
            client.v1.billing.meter_events.create(
                {
                    "event_name": sc.tokens_event_name,
                    "payload": {**base, "model": "openai/gpt-4o-mini-2024-07-18"},
                }
            )
        with pytest.raises(stripe.InvalidRequestError, match="cache_read"):
            client.v1.billing.meter_events.create(
                {
                    "event_name": sc.tokens_event_name,
                    "payload": {**base, "model": "openai/gpt-4o-mini", "token_type": "cache_read"},
                }
            )
        with pytest.raises(stripe.StripeError, match="not on the list"):
            client.v2.billing.meter_events.create(
                {"event_name": sc.tokens_event_name, "payload": {**base, "model": "openai/nope"}}
            )
        client.v1.billing.meter_events.create(
            {"event_name": sc.tokens_event_name, "payload": {**base, "model": "openai/gpt-4o-mini"}}
        )
        client.v1.billing.meter_events.create(
            {"event_name": sc.tokens_event_name, "payload": {"stripe_customer_id": "cus_a", "value": "7"}}
        )
        assert fake.totals(sc.tokens_event_name) == {"cus_a": 10}
        assert [r.code for r in fake.state.error_reports] == ["missing_dimension_payload_keys"]


def test_an_unlisted_model_is_refused_until_it_is_mapped(tmp_path: Path) -> None:
    """A fine-tune has no name of its own in Stripe's list: its events are refused (visible as
    rejected, never silently dropped) until ``[stripe.models]`` names the model it is billed as."""
    with FakeStripe() as fake:
        sc = StripeConfig(mode="tokens", api="v2", concurrency=1)
        ledger, store, exporter = _exporter(tmp_path, fake, sc, {"acme": "cus_acme"})
        ensure_meters(client_for(fake, sc), sc)
        now = int(fake.clock())
        ledger.append(
            AppendBatch(
                rows=[
                    priced(1, "acme", now - 60, "0.1", model="gpt-4o-mini-2024-07-18"),
                    priced(2, "acme", now - 60, "0.1", model="ft:gpt-4o-mini:acme"),
                ]
            )
        )
        report = exporter.run_once()
        assert report.rejected == 2  # input and output of the fine-tune; the rest went through
        assert fake.totals(sc.tokens_event_name) == {"cus_acme": 120}

        mapped = sc.model_copy(update={"models": {"openai/ft:gpt-4o-mini:acme": "openai/gpt-4o-mini"}})
        ledger.append(AppendBatch(rows=[priced(3, "acme", now - 30, "0.1", model="ft:gpt-4o-mini:acme")]))
        again = StripeExporter(
            ledger, store, exporter.config, client_for(fake, mapped), stripe_settings=mapped
        ).run_once()
        assert again.rejected == 0 and again.events_sent == 2
        assert fake.totals(sc.tokens_event_name) == {"cus_acme": 240}
        ledger.close()
        store.close()


def _legacy_measures(row: ExportRow, sc: StripeConfig, names: Any = None) -> list[plan_module.Measure]:
    """What earlier versions planned: the ledger's ``provider/model``, and ``cache_read`` /
    ``cache_write`` for the providers with cache types of their own."""
    own_cache = row.provider in sc.cache_token_providers
    legacy = {"cached_input": "cache_read", "cached_write": "cache_write"} if own_cache else {}
    model = f"{row.provider}/{row.model}"
    return [
        plan_module.Measure(
            sc.tokens_event_name, (("model", model), ("token_type", legacy.get(k, k))), Decimal(n)
        )
        for k, n in token_types(row, sc.cache_token_providers)
    ]


def test_events_exported_under_earlier_names_are_not_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tokens-mode ledger exported by an earlier version, to a meter of its own (no dimension
    keys): after the upgrade nothing already exported is planned or sent again, and new usage
    goes out under the new names."""
    sc = StripeConfig(mode="tokens", tokens_event_name="llm_tokens", concurrency=1)
    with FakeStripe() as fake:
        ledger, store, exporter = _exporter(tmp_path, fake, sc, {"acme": "cus_acme"})
        client_for(fake, sc).v1.billing.meters.create(
            {
                "display_name": "tokens",
                "event_name": "llm_tokens",
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": {"event_payload_key": "value"},
            }
        )
        now = int(fake.clock())
        claude = dict(provider="anthropic", model="claude-sonnet-4-6", cache_read=300, cache_write=100)
        old = [
            priced(1, "acme", now - 600, "1", input_tokens=900, output_tokens=90, **claude),  # type: ignore[arg-type]
            priced(
                2,
                "acme",
                now - 600,
                "1",
                model="gpt-4o-mini-2024-07-18",
                input_tokens=500,
                output_tokens=50,
                cache_read=200,
            ),
        ]
        ledger.append(AppendBatch(rows=old))
        with monkeypatch.context() as m:
            m.setattr(plan_module, "measures", _legacy_measures)
            assert exporter.run_once().settled
        sent_before = {e.identifier for e in store.events(states=["sent"])}
        old_kinds = {dict(e.dims)["token_type"] for e in store.events(states=["sent"])}
        assert {"cache_read", "cache_write"} <= old_kinds
        requests_before = len([r for r in fake.requests if r[0] == "post"])

        report = exporter.run_once()  # upgraded, nothing new
        assert report.events_planned == 0 and report.requests == 0
        assert len([r for r in fake.requests if r[0] == "post"]) == requests_before

        ledger.append(AppendBatch(rows=[priced(3, "acme", now - 60, "1", model="gpt-4o-mini-2024-07-18")]))
        report = exporter.run_once()
        assert report.events_planned == 2 and report.events_sent == 2
        new = [e for e in store.events(states=["sent"]) if e.identifier not in sent_before]
        assert {dict(e.dims)["model"] for e in new} == {"openai/gpt-4o-mini"}
        assert fake.totals("llm_tokens") == {"cus_acme": 990 + 550 + 120}
        ledger.close()
        store.close()


def _app() -> Any:
    from otel_aibill.cli import app

    return app


def test_stripe_models_shows_what_each_ledger_model_is_sent_as(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[stripe]\nmode = "tokens"\n[stripe.models]\n"openai/ft:gpt-4o-mini:acme" = "openai/gpt-4o-mini"\n',
        encoding="utf-8",
    )
    ledger = open_test_ledger(db)
    ledger.append(
        AppendBatch(
            rows=[
                priced(1, "a", 1_700_000_000, "1", model="gpt-4o-mini-2024-07-18"),
                priced(2, "a", 1_700_000_000, "1", model="gpt-4o-mini-2024-07-18"),
                priced(3, "a", 1_700_000_000, "1", provider="anthropic", model="claude-3-5-sonnet-20241022"),
                priced(4, "a", 1_700_000_000, "1", model="ft:gpt-4o-mini:acme"),
                priced(5, "a", 1_700_000_000, "1", provider="aws.bedrock", model="amazon.nova-pro-v1:0"),
            ]
        )
    )
    ledger.close()
    runner = CliRunner()
    out = runner.invoke(_app(), ["--db", db, "--config", str(cfg), "stripe", "models", "--json"])
    assert out.exit_code == 0, out.output
    listed = {x["ledger"]: (x["stripe"], x["source"], x["spans"]) for x in json.loads(out.output)}
    assert listed == {
        "openai/gpt-4o-mini-2024-07-18": ("openai/gpt-4o-mini", "rule", 2),
        "anthropic/claude-3-5-sonnet-20241022": ("anthropic/claude-3.5-sonnet", "rule", 1),
        "openai/ft:gpt-4o-mini:acme": ("openai/gpt-4o-mini", "map", 1),
        "aws.bedrock/amazon.nova-pro-v1:0": ("aws.bedrock/amazon.nova-pro-v1:0", "as is", 1),
    }
    table = runner.invoke(_app(), ["--db", db, "--config", str(cfg), "stripe", "models"])
    assert table.exit_code == 0, table.output
    assert "Stripe's naming" in table.output and "[stripe.models]" in table.output
    assert "a listed model under" in table.output
