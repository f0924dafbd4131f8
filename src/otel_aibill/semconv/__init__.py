"""Extraction: span attributes → one canonical usage record, whatever convention wrote them.

One adapter module per convention family (``genai``, ``traceloop``, ``openinference``,
``pydantic_ai``, ``anthropic_sdk``, ``openlit``), one accounting out (see
:class:`otel_aibill.usage.UsageRecord`), and the double-count rules that can be decided
from a single span. Pure functions only: no I/O, no clock.
"""

from .extract import extract
from .models import normalize_model
from .providers import normalize_provider

__all__ = ["extract", "normalize_model", "normalize_provider"]
