"""Price feeds as they arrive: the genai-prices v2 data format, or the project's overrides format.

Parsing is strict where a price could come out wrong and forgiving where one entry is bad: a
feed that is not price data at all is refused whole (``FeedError``); a model whose prices are
negative, not numbers, or a set genai-prices itself would refuse is left out and listed with
the reason, and the rest of the feed is usable. JSON numbers are read from their decimal text,
never through binary floats.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

from genai_prices.types import (
    ClauseEquals,
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    TieredPrices,
)
from pydantic import ValidationError

from otel_aibill.config import PriceOverride
from otel_aibill.errors import BadDataError
from otel_aibill.pricing.rates import Rates
from otel_aibill.pricing.snapshot import providers_from_raw


class FeedError(BadDataError):
    """The data is not a price feed this project reads; nothing of it is used."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A feed entry left out, and why."""

    provider: str
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Feed:
    """Providers (complete, or only the ones an overrides feed touches) and the entries refused.

    ``partial``: models and providers the feed does not name are not news (always true in
    effect: a model missing from a feed is kept, feeds lag), but a partial feed also keeps the
    provider's own fields and model order.
    """

    providers: tuple[Provider, ...]
    refused: tuple[Refused, ...] = ()
    format: str = "genai-prices-v2"
    partial: bool = False
    overrides: tuple[PriceOverride, ...] = field(default=())


def parse_feed(body: bytes, current: Sequence[Provider] = ()) -> Feed:
    """A feed from its bytes: a JSON array of providers (genai-prices v2), or overrides as TOML
    (``[[pricing.overrides]]`` or ``[[overrides]]``) or JSON (``{"overrides": [...]}``).

    ``current`` is the catalog an overrides feed changes (its models keep their other periods).
    """
    text = _text(body)
    stripped = text.lstrip()
    if stripped.startswith("[["):  # TOML's array of tables, or JSON nested arrays (never a feed)
        try:
            return _toml_feed(text, current)
        except FeedError:
            pass
    if stripped.startswith("["):
        raw = _json(text)
        if isinstance(raw, list) and all(isinstance(p, dict) and "models" in p for p in raw):
            return parse_v2(raw)
        if isinstance(raw, list):
            return overrides_feed(_overrides(raw), current)
        raise FeedError("a price feed array must hold providers (genai-prices v2) or overrides")
    if stripped.startswith("{"):
        raw = _json(text)
        if isinstance(raw, dict):
            section = raw.get("pricing", raw)
            if isinstance(section, dict) and "overrides" in section:
                return overrides_feed(_overrides(section["overrides"]), current)
        raise FeedError(
            "a JSON price feed is an array of providers (genai-prices v2) or {\"overrides\": [...]}"
        )
    return _toml_feed(text, current)


def _toml_feed(text: str, current: Sequence[Provider]) -> Feed:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FeedError(f"not JSON price data nor TOML overrides: {exc}") from exc
    section = data.get("pricing", data)
    if not isinstance(section, dict) or "overrides" not in section:
        raise FeedError("TOML price data must have [[pricing.overrides]] (or [[overrides]]) entries")
    return overrides_feed(_overrides(section["overrides"]), current)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedError(f"price data is not UTF-8 text: {exc}") from exc


def _json(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FeedError(f"malformed JSON price data: {exc}") from exc


# -- genai-prices v2 -----------------------------------------------------------------------------


def parse_v2(raw: list[Any]) -> Feed:
    """Providers of a v2 array; a model that does not parse or check is refused, not fatal."""
    if not raw:
        raise FeedError("the price feed has no providers")
    try:
        parsed = providers_from_raw(_decimal_text(raw))
    except ValidationError:
        parsed = None
    refused: list[Refused] = []
    providers: list[Provider] = []
    for i, raw_provider in enumerate(raw):
        provider = parsed[i] if parsed is not None else _parse_provider(raw_provider, refused)
        models = []
        for model in provider.models:
            reason = model_problem(model)
            if reason is None:
                models.append(model)
            else:
                refused.append(Refused(provider.id, model.id, reason))
        providers.append(replace(provider, models=models, extractors=None))
    ids = [p.id for p in providers]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise FeedError(f"the price feed names a provider twice: {twice}")
    return Feed(tuple(providers), tuple(refused))


def _decimal_text(raw: Any) -> Any:
    """Decimals read from JSON numbers, as the text genai-prices' validators expect."""
    if isinstance(raw, Decimal):
        return format(raw, "f")
    if isinstance(raw, list):
        return [_decimal_text(v) for v in raw]
    if isinstance(raw, dict):
        return {k: _decimal_text(v) for k, v in raw.items()}
    return raw


def _parse_provider(raw_provider: Any, refused: list[Refused]) -> Provider:
    """One provider, model by model, when the whole feed did not parse."""
    if not isinstance(raw_provider, dict) or not isinstance(raw_provider.get("models"), list):
        raise FeedError(f"a provider entry is not an object with models: {str(raw_provider)[:80]!r}")
    pid = str(raw_provider.get("id", "?"))
    shell = {k: v for k, v in raw_provider.items() if k not in ("models", "extractors")}
    try:
        (provider,) = providers_from_raw(_decimal_text([{**shell, "models": []}]))
    except ValidationError as exc:
        raise FeedError(f"provider {pid!r} is malformed: {_first_error(exc)}") from exc
    models: list[ModelInfo] = []
    for raw_model in raw_provider["models"]:
        mid = str(raw_model.get("id", "?")) if isinstance(raw_model, dict) else "?"
        try:
            (one,) = providers_from_raw(_decimal_text([{**shell, "models": [raw_model]}]))
        except ValidationError as exc:
            refused.append(Refused(pid, mid, f"malformed: {_first_error(exc)}"))
            continue
        models.extend(one.models)
    return replace(provider, models=models)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int))
    return f"{where}: {err.get('msg', 'invalid')}"[:200]


def periods(model: ModelInfo, *, variants: bool = False) -> Iterator[tuple[Any, ModelPrice]]:
    """(constraint, prices) of each price period of a model (None for the first), and with
    ``variants`` those of its request variants too."""
    if isinstance(model.prices, ModelPrice):
        yield None, model.prices
    else:
        for cp in model.prices:
            yield cp.constraint, cp.prices
    for variant in model.price_variants or () if variants else ():
        yield variant.constraint, variant.prices


def price_values(prices: ModelPrice) -> Iterator[tuple[str, Any]]:
    for key, value in prices.__dict__.items():
        if value is not None and not key.startswith("_"):
            yield key, value


def model_problem(model: ModelInfo) -> str | None:
    """Why a model's prices cannot be used (None when they can)."""
    if isinstance(model.prices, list) and not model.prices:
        return "has no prices"
    for constraint, prices in periods(model, variants=True):
        for key, value in price_values(prices):
            tiered = isinstance(value, TieredPrices)
            amounts = [value.base, *(t.price for t in value.tiers)] if tiered else [value]
            for amount in amounts:
                if not isinstance(amount, Decimal) or not amount.is_finite():
                    return f"{key} is not a number: {amount!r}"
                if amount < 0:
                    return f"{key} is negative: {amount}"
        try:
            Rates(prices.__dict__, key=model.id)
        except ValueError as exc:
            when = f" (period {constraint})" if constraint is not None else ""
            return f"prices genai-prices would refuse{when}: {exc}"
    return None


# -- the overrides format ------------------------------------------------------------------------


def _overrides(raw: Any) -> list[PriceOverride]:
    if not isinstance(raw, list):
        raise FeedError("overrides must be a list of entries")
    out = []
    for i, entry in enumerate(raw):
        try:
            out.append(PriceOverride.model_validate(_decimal_text(entry)))
        except ValidationError as exc:
            raise FeedError(f"override #{i + 1} is invalid: {_first_error(exc)}") from exc
    return out


_NEVER_MATCHES = r"(?!)"


def overrides_feed(entries: Sequence[PriceOverride], current: Sequence[Provider]) -> Feed:
    """Overrides as a partial v2 feed over ``current``: a dated entry adds a price period from that
    UTC day to the model, an undated one replaces its latest period; new models match exactly."""
    by_id = {p.id: copy.deepcopy(p) for p in current}
    touched: dict[str, Provider] = {}
    refused: list[Refused] = []
    for o in entries:
        pid, mid = o.provider.strip().lower(), o.model.strip()
        if o.service_tier is not None:
            refused.append(Refused(pid, mid, "a tier-specific price belongs in the config, not a feed"))
            continue
        start = None
        if o.effective_from is not None:
            at = o.effective_from if o.effective_from.tzinfo else o.effective_from.replace(tzinfo=UTC)
            at = at.astimezone(UTC)
            if at.time() != time(0):
                refused.append(Refused(pid, mid, "feed prices start at a UTC day (effective_from at 00:00Z)"))
                continue
            start = at.date()
        prices = ModelPrice(**_override_prices(o))
        provider = touched.get(pid) or by_id.get(pid)
        if provider is None:
            provider = Provider(id=pid, name=pid, api_pattern=_NEVER_MATCHES)
        touched[pid] = provider
        model = provider.find_model(mid)
        if model is None or model not in provider.models:
            model = ModelInfo(id=mid.lower(), match=ClauseEquals(equals=mid.lower()), prices=[])
            provider.models.insert(0, model)
        model.prices = _with_period(model, start, prices)
        reason = model_problem(model)
        if reason is not None:
            refused.append(Refused(pid, mid, reason))
            provider.models.remove(model)
    return Feed(
        tuple(touched.values()), tuple(refused), format="overrides", partial=True, overrides=tuple(entries)
    )


def _override_prices(o: PriceOverride) -> dict[str, Decimal]:
    prices = {"input_mtok": o.input_mtok, "output_mtok": o.output_mtok}
    if o.cache_read_mtok is not None:
        prices["cache_read_mtok"] = o.cache_read_mtok
    if o.cache_write_mtok is not None:
        prices["cache_write_mtok"] = o.cache_write_mtok
    if o.request is not None:
        prices["requests_kcount"] = o.request.scaleb(3)
    return prices


def _with_period(model: ModelInfo, start: Any, prices: ModelPrice) -> list[ConditionalPrice] | ModelPrice:
    existing = [ConditionalPrice(constraint=c, prices=p) for c, p in _own_periods(model)]
    if start is None:
        if not existing:
            return prices
        existing[-1] = ConditionalPrice(constraint=existing[-1].constraint, prices=prices)
        return existing
    existing = [cp for cp in existing if _start_of(cp.constraint) != start]
    existing.append(ConditionalPrice(constraint=StartDateConstraint(start_date=start), prices=prices))
    existing.sort(key=lambda cp: _start_of(cp.constraint) or datetime.min.date())
    return existing


def _own_periods(model: ModelInfo) -> list[tuple[Any, ModelPrice]]:
    if isinstance(model.prices, ModelPrice):
        return [(None, model.prices)]
    return [(cp.constraint, cp.prices) for cp in model.prices]


def _start_of(constraint: Any) -> Any:
    return constraint.start_date if isinstance(constraint, StartDateConstraint) else None


def as_mapping(model: ModelInfo) -> Mapping[str, Any]:
    """A model's prices as plain values (for messages and tests)."""
    from otel_aibill.pricing.snapshot import to_raw

    out: Mapping[str, Any] = to_raw(model)
    return out
