"""The default customer keys read what popular libraries record, in a documented precedence, and
a configured list replaces them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_aibill.attribution import customer_of
from otel_aibill.config import Config
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import Ledger
from otel_aibill.pipeline import Pipeline
from otel_aibill.usage import SpanView

TRACELOOP_CUSTOMER = "traceloop.association.properties.customer_id"
TRACELOOP_USER = "traceloop.association.properties.user_id"
LITELLM_PROXY_USER = "metadata.user_api_key_end_user_id"


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({TRACELOOP_CUSTOMER: "acme"}, "acme"),
        ({TRACELOOP_USER: "u-1"}, "u-1"),
        ({"llm.user": "u-2"}, "u-2"),
        ({LITELLM_PROXY_USER: "u-3"}, "u-3"),
        ({"langfuse.user.id": "u-4"}, "u-4"),
        # an explicit billing id wins over anything a library recorded
        ({"llm.user": "u", TRACELOOP_CUSTOMER: "lib", "customer.id": "acme"}, "acme"),
        ({"customer.id": "acme", "stripe.customer.id": "cus_1"}, "cus_1"),
        # a customer before a tenant, a tenant before an end user
        ({TRACELOOP_CUSTOMER: "acme", "tenant.id": "t"}, "acme"),
        ({"tenant.id": "t", "llm.user": "u", TRACELOOP_USER: "v"}, "t"),
        ({TRACELOOP_USER: "v", "langfuse.user.id": "w", "llm.user": "u", LITELLM_PROXY_USER: "p"}, "v"),
        ({"langfuse.user.id": "w", "llm.user": "u"}, "w"),
        ({"llm.user": "u", LITELLM_PROXY_USER: "p"}, "u"),
        ({"llm.user": "  ", LITELLM_PROXY_USER: "p"}, "p"),  # blank falls through
    ],
)
def test_default_keys_and_their_precedence(attrs: dict[str, Any], expected: str) -> None:
    assert customer_of(attrs, {}, Config().attribution.keys) == expected


def test_a_configured_list_replaces_the_default() -> None:
    config = Config.model_validate({"attribution": {"keys": ["org.id"]}})
    assert customer_of({"llm.user": "u", "customer.id": "acme"}, {}, config.attribution.keys) is None
    assert customer_of({"org.id": "o", "customer.id": "acme"}, {}, config.attribution.keys) == "o"
    assert "llm.user" not in config.attribution.baggage_keys  # baggage keys are a list of their own


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path / 'keys.db'}")
    yield opened
    opened.close()


def test_traceloop_workflow_customer_attributes_the_llm_span_of_its_trace(ledger: Ledger) -> None:
    """traceloop-sdk copies association properties to every span; the LLM span of the trace is
    billed to it, not left pending, with the default configuration."""
    trace = f"{7:032x}"
    llm = SpanView(
        trace,
        f"{2:016x}",
        "openai.chat",
        10,
        20,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            TRACELOOP_CUSTOMER: "acme",
        },
        scope_name="opentelemetry.instrumentation.openai.v1",
    )
    workflow = SpanView(
        trace,
        f"{1:016x}",
        "support.workflow",
        0,
        30,
        {"traceloop.span.kind": "workflow", TRACELOOP_CUSTOMER: "acme"},
    )
    result = Pipeline(ledger).ingest([llm, workflow])
    assert (result.billed, result.pending) == (1, 0)
    (row,) = ledger.rows(trace_id=trace)
    assert row.priced.usage.customer == "acme" and row.priced.billed is not None
