"""Model names as Stripe's LLM token billing knows them (tokens mode's ``model`` dimension).

Stripe prices ``token-billing-tokens`` events by a ``provider/model`` name from its approved list,
in the form its own meter (stripe/agent-toolkit, ``normalizeModelName``) sends: dated snapshots
fold into their model, and Anthropic version numbers are written with dots. The ledger keeps the
served model as the provider reported it, so the conversion happens here, at export, and only
there. Names Stripe lists differently are mapped by ``[stripe.models]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

_ANTHROPIC_DATE = re.compile(r"-\d{8}$")
_ANTHROPIC_LATEST = re.compile(r"-latest$")
_ANTHROPIC_VERSION = re.compile(r"(-[a-z]+)?-(\d+)-(\d+)")
_OPENAI_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_OPENAI_KEPT = frozenset({"gpt-4o-2024-05-13"})
"""A dated OpenAI snapshot Stripe lists on its own (it has its own price)."""

_GOOGLE = frozenset({"gcp.gemini", "gcp.gen_ai"})
"""OTel provider names under which every model is a Google model."""

Source = Literal["map", "rule", "as is"]
_REMEMBERED = 4096


def normalize_model_name(provider: str, model: str) -> str:
    """Stripe's own normalisation of a model name for ``provider`` (``openai``, ``anthropic``,
    ``google``); a port of agent-toolkit's ``normalizeModelName``, rule for rule."""
    if provider == "anthropic":
        model = _ANTHROPIC_DATE.sub("", model)
        model = _ANTHROPIC_LATEST.sub("", model)
        return _ANTHROPIC_VERSION.sub(lambda m: f"{m.group(1) or ''}-{m.group(2)}.{m.group(3)}", model)
    if provider == "openai":
        return model if model in _OPENAI_KEPT else _OPENAI_DATE.sub("", model)
    return model


def stripe_provider(provider: str, model: str) -> str | None:
    """The token billing provider of a ledger (OTel) provider name, or None when Stripe's token
    billing does not price that provider's models. Vertex AI also serves other vendors' models,
    so only its Gemini models count as Google's."""
    if provider in ("openai", "anthropic"):
        return provider
    if provider in _GOOGLE or (provider == "gcp.vertex_ai" and model.startswith("gemini")):
        return "google"
    return None


@dataclass(frozen=True, slots=True)
class ModelName:
    ledger: str  # provider/model as the ledger has it
    stripe: str  # what the model dimension says
    source: Source  # map: [stripe.models]; rule: Stripe's normalisation; as is: neither applies


def token_billing_model(provider: str, model: str, overrides: Mapping[str, str]) -> ModelName:
    """The ``model`` dimension for a ledger row: ``[stripe.models]`` first, keyed by the ledger's
    ``provider/model``; then Stripe's normalisation; otherwise ``provider/model`` unchanged."""
    ledger = f"{provider}/{model}"
    mapped = overrides.get(ledger)
    if mapped is not None:
        return ModelName(ledger, mapped, "map")
    sp = stripe_provider(provider, model)
    if sp is None:
        return ModelName(ledger, ledger, "as is")
    return ModelName(ledger, f"{sp}/{normalize_model_name(sp, model)}", "rule")


class ModelNames:
    """``token_billing_model`` remembered per (provider, model): the export asks for every row.
    Bounded, since model names come from spans."""

    __slots__ = ("_overrides", "_seen")

    def __init__(self, overrides: Mapping[str, str]) -> None:
        self._overrides = dict(overrides)
        self._seen: dict[tuple[str, str], str] = {}

    def __call__(self, provider: str, model: str) -> str:
        key = (provider, model)
        name = self._seen.get(key)
        if name is None:
            if len(self._seen) >= _REMEMBERED:
                self._seen.clear()
            name = self._seen[key] = token_billing_model(provider, model, self._overrides).stripe
        return name
