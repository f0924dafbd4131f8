"""The one OTel provider name → genai-prices id table, checked against the bundled price data."""

from __future__ import annotations

import pytest
from genai_prices.data_snapshot import get_snapshot

from otel_aibill.pricing.providers import GENAI_PRICES_IDS, pricing_provider_id
from otel_aibill.semconv.providers import KNOWN_PROVIDERS, provider_alias

SNAPSHOT_IDS = frozenset(p.id for p in get_snapshot().providers)


def test_every_id_in_the_table_exists_in_the_genai_prices_snapshot() -> None:
    missing = {
        name: pid for name, pid in GENAI_PRICES_IDS.items() if pid is not None and pid not in SNAPSHOT_IDS
    }
    assert not missing


def test_the_table_is_keyed_by_the_names_the_conventions_yield() -> None:
    assert {name for name in GENAI_PRICES_IDS if provider_alias(name) != name} == set()
    assert set(GENAI_PRICES_IDS) == KNOWN_PROVIDERS - {"unknown"}


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("aws.bedrock", "aws"),
        ("bedrock", "aws"),
        ("azure.ai.openai", "azure"),
        ("az.ai.inference", "azure"),
        ("gcp.gemini", "google"),
        ("Vertex_AI", "google"),
        ("x_ai", "x-ai"),
        ("xai", "x-ai"),
        ("mistralai", "mistral"),
        ("together-ai", "together"),
        ("moonshot", "moonshotai"),
        ("openai.chat", "openai"),
        ("watsonx", None),
        ("unknown", None),
        ("huggingface_groq", None),
    ],
)
def test_spellings_map_through_the_aliases(spelling: str, expected: str | None) -> None:
    assert pricing_provider_id(spelling) == expected


def test_a_genai_prices_id_is_its_own_id_when_the_catalog_knows_it() -> None:
    assert pricing_provider_id("huggingface_groq", tuple(SNAPSHOT_IDS)) == "huggingface_groq"
    assert pricing_provider_id("x-ai", tuple(SNAPSHOT_IDS)) == "x-ai"
    assert pricing_provider_id("no-such-provider", tuple(SNAPSHOT_IDS)) is None
