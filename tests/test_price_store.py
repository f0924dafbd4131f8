"""Stored catalog versions on both backends: the bundled data is the first snapshot, every
version a usage row carries resolves to the exact catalog, snapshots are found by any name."""

from __future__ import annotations

import dataclasses
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices.data import providers as bundled_providers
from opentelemetry.sdk.trace import TracerProvider

from otel_aibill import BillingSpanProcessor
from otel_aibill.config import Config, PriceOverride, PricingConfig
from otel_aibill.errors import BadDataError
from otel_aibill.ledger import open_ledger
from otel_aibill.pricing import Catalog, Pricer
from otel_aibill.pricing import snapshot as snapshots
from otel_aibill.pricing.snapshot import Snapshot
from otel_aibill.usage import UsageRecord
from otel_aibill.watch.catalog_store import CatalogStore, UnknownVersionError, current_catalog

T0 = 1_790_000_000_000_000_000
OVERRIDE = PriceOverride(provider="openai", model="gpt-4o", input_mtok=Decimal("1"), output_mtok=Decimal("2"))


def usage(model: str = "gpt-4o", provider: str = "openai") -> UsageRecord:
    return UsageRecord(
        trace_id="1" * 32, span_id="2" * 16, start_time_ns=T0, end_time_ns=T0 + 1, provider=provider,
        model=model, operation="chat", input_tokens=1200, output_tokens=300, cache_read_tokens=200,
    )  # fmt: skip


def changed(data: Snapshot, factor: int = 2) -> Snapshot:
    """The same data with gpt-4o's latest price period multiplied (a different snapshot)."""
    raw = snapshots.to_raw(list(data.providers))
    openai = next(p for p in raw if p["id"] == "openai")
    model = next(m for m in openai["models"] if m["id"] == "gpt-4o")
    prices = model["prices"] if isinstance(model["prices"], dict) else model["prices"][-1]["prices"]
    prices["input_mtok"] = str(Decimal(prices["input_mtok"]) * factor)
    return Snapshot.from_body(snapshots.canonical(raw))


def test_the_canonical_text_keeps_every_price_and_match_rule() -> None:
    data = snapshots.bundled()
    again = Snapshot.from_body(data.body)
    assert again.hash == data.hash
    assert list(again.providers) == [dataclasses.replace(p, extractors=None) for p in bundled_providers]


def test_the_bundled_data_is_the_first_snapshot_and_its_version_resolves(ledger_url: str) -> None:
    catalog = current_catalog(ledger_url, PricingConfig())
    assert catalog.version == Catalog.bundled().version
    with CatalogStore(ledger_url) as store:
        (first,) = store.snapshots()
        assert (first.seq, first.status, first.data_hash) == (1, "approved", snapshots.bundled().hash)
        assert first.source.startswith("genai-prices ")
        again = store.resolve(catalog.version)
        assert again.version == catalog.version
        assert Pricer(catalog=again).price(usage()).cost == Pricer().price(usage()).cost


def test_config_overrides_make_a_new_version_of_the_same_snapshot(ledger_url: str) -> None:
    plain = current_catalog(ledger_url, PricingConfig())
    custom = current_catalog(ledger_url, PricingConfig(overrides=(OVERRIDE,)))
    assert plain.version != custom.version
    with CatalogStore(ledger_url) as store:
        assert len(store.snapshots()) == 1
        assert {v[0]: v[1] for v in store.versions()} == {plain.version: 1, custom.version: 1}
        resolved = store.resolve(custom.version)
        assert resolved.overrides == (OVERRIDE,)
        assert Pricer(catalog=resolved).price(usage()).cost == Decimal("0.0018")  # 1200 x 1 + 300 x 2 per M


def test_a_later_snapshot_is_current_once_approved_and_found_by_any_name(ledger_url: str) -> None:
    with CatalogStore(ledger_url) as store:
        store.ensure_bundled()
        data = changed(snapshots.bundled())
        pending = store.add(data, "http://feed.test/data.json", status="pending", base_seq=1)
        assert pending.seq == 2 and store.current().seq == 1
        assert store.add(data, "elsewhere", status="pending").seq == 2  # same data, same snapshot
        store.decide(2, "approved")
        assert store.current().seq == 2
        catalog = store.catalog(store.current(), PricingConfig())
        for ref in ("2", "v2", data.hash[:10], catalog.version):
            assert store.snapshot(ref).seq == 2
        for bad in ("v9", "zz-top", "0000000000"):
            with pytest.raises(UnknownVersionError):
                store.snapshot(bad)
        with pytest.raises(UnknownVersionError, match="not stored"):
            store.resolve("feedfacefeedface")
    assert current_catalog(ledger_url, PricingConfig()).version == catalog.version
    assert Pricer(catalog=catalog).price(usage()).cost != Pricer().price(usage()).cost


def test_stored_data_that_does_not_match_its_hash_is_refused(ledger_url: str) -> None:
    with CatalogStore(ledger_url) as store:
        store.ensure_bundled()
        stored = store.add(changed(snapshots.bundled(), 3), "feed", status="approved")
        other = zlib.compress(changed(snapshots.bundled(), 5).body)
        store.db.execute("UPDATE price_snapshots SET body = ? WHERE seq = ?", (other, stored.seq))
        with pytest.raises(BadDataError, match="does not match its hash"):
            store.data(stored)


def test_rows_written_in_process_carry_a_stored_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    config = Config(db=url, pricing=PricingConfig(overrides=(OVERRIDE,)))
    processor = BillingSpanProcessor(config=config)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("chat gpt-4o") as s:
        s.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 10,
                "customer.id": "acme",
            }
        )
    provider.shutdown()
    ledger = open_ledger(url)
    try:
        (row,) = ledger.rows()
    finally:
        ledger.close()
    with CatalogStore(url) as store:
        catalog = store.resolve(row.priced.price_version)
    assert catalog.overrides == (OVERRIDE,)
    assert row.priced.cost == Decimal("0.00102")
