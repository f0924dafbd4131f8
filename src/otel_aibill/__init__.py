"""otel-aibill: bill customers for AI usage from the OpenTelemetry spans LLM calls already emit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BillingSpanExporter", "BillingSpanProcessor"]

if TYPE_CHECKING:
    from otel_aibill.processor import BillingSpanExporter, BillingSpanProcessor


def __getattr__(name: str) -> Any:
    # Imported lazily so `import otel_aibill` stays cheap for the CLI and the receiver.
    if name in __all__:
        from otel_aibill import processor

        return getattr(processor, name)
    raise AttributeError(name)
