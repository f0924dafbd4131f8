"""Price data as stored and fetched: genai-prices providers <-> the genai-prices v2 JSON (pure).

A catalog version must resolve to the exact data it priced with, in any process, years later,
so the data is kept in one canonical text: the v2 feed format (the one genai-prices' own updater
downloads) with sorted keys, no whitespace, prices as their decimal text, and without the usage
extractors (they read provider responses, which spans never are). The SHA-256 of that text is
the data's identity: the same prices give the same hash whichever way they arrived.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import date, time
from decimal import Decimal
from functools import cache
from typing import Any

from genai_prices.types import ModelPrice, Provider

_ALIASES = {"or_": "or", "and_": "and"}


def to_raw(value: Any) -> Any:
    """genai-prices data (providers, models, prices...) as plain JSON values, in the v2 shape."""
    if isinstance(value, ModelPrice):
        return {k: to_raw(v) for k, v in value.__dict__.items() if v is not None and not k.startswith("_")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if item is None or field.name.startswith("_") or field.name == "extractors":
                continue
            out[_ALIASES.get(field.name, field.name)] = to_raw(item)
        return out
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_raw(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_raw(v) for k, v in value.items()}
    return value


def canonical(raw: Any) -> bytes:
    """The canonical text of raw (JSON-shaped) data."""
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def data_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def providers_from_raw(raw: Any) -> list[Provider]:
    """Providers from v2 JSON values (already checked by ``feed.parse`` when they came from outside)."""
    from genai_prices.types import _providers_from_raw

    providers: list[Provider] = _providers_from_raw(raw)
    return providers


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One set of price data: the providers, their canonical text and its hash."""

    providers: Sequence[Provider]
    body: bytes
    hash: str

    @classmethod
    def of(cls, providers: Sequence[Provider]) -> Snapshot:
        body = canonical(to_raw(list(providers)))
        return cls(tuple(providers), body, data_hash(body))

    @classmethod
    def from_body(cls, body: bytes) -> Snapshot:
        return cls(tuple(providers_from_raw(json.loads(body))), body, data_hash(body))


@cache
def bundled() -> Snapshot:
    """The data shipped in the installed genai-prices package (computed once per process)."""
    from genai_prices.data import providers

    return Snapshot.of(providers)


def bundled_source() -> str:
    from genai_prices import __version__

    return f"genai-prices {__version__}"
