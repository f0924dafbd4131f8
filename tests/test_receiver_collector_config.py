"""The shipped collector configurations parse and wire only components they define."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "collector-config"


@pytest.mark.parametrize("name", ["gateway.yaml", "load-balancing.yaml"])
def test_collector_config_is_consistent(name: str) -> None:
    doc = yaml.safe_load((CONFIG_DIR / name).read_text())
    service = doc["service"]
    assert set(service["extensions"]) <= set(doc["extensions"])
    for pipeline in service["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(doc["receivers"])
        assert set(pipeline["processors"]) <= set(doc["processors"])
        assert set(pipeline["exporters"]) <= set(doc["exporters"])
    for exporter in doc["exporters"].values():
        otlp = exporter.get("protocol", {}).get("otlp", exporter)
        assert otlp["compression"] == "gzip"
        assert otlp["retry_on_failure"]["enabled"] is True
        queue = otlp["sending_queue"]
        assert queue["enabled"] is True and queue["storage"] in doc["extensions"]
    condition = doc["processors"]["filter/billable"]["traces"]["span"][0]
    # usage spans AND customer-only spans survive the filter
    for key in ("gen_ai.usage.input_tokens", "llm.token_count.prompt", "customer.id", "stripe.customer.id"):
        assert f'attributes["{key}"] == nil' in condition
    assert " or " not in condition
