"""The price catalog: genai-prices data plus the user's overrides and custom models, versioned.

Resolution is done once per (provider, model, price context, API host) into a ``Line``, and once per
price period of that line into ``Rates``. A line knows every instant at which its price can change
(genai-prices start dates and times of day, override start dates), so finding the period of a span
is a bisect on its nanosecond timestamp, with no datetime work on the hot path.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from genai_prices.types import ModelInfo, Provider, StartDateConstraint, TimeOfDateConstraint

from otel_aibill.config import PriceOverride
from otel_aibill.pricing import snapshot
from otel_aibill.pricing.clock import DAY_US, date_start_ns, datetime_to_ns, ns_to_datetime, time_of_day_us
from otel_aibill.pricing.overrides import NEVER, Override, compile_override, override_in_force
from otel_aibill.pricing.providers import pricing_provider_id, provider_for_host
from otel_aibill.pricing.rates import Rates

PriceContext = tuple[tuple[str, str], ...]
"""A genai-prices price context as sorted items, so it can be part of a cache key."""

_MAX_LINES = 100_000


@dataclass(frozen=True, slots=True)
class Miss:
    """No price: why, so the unpriced row says it."""

    reason: str


def price_context(service_tier: str | None) -> PriceContext:
    """The genai-prices context for a served tier: batch is ``processing``, the rest ``service_tier``."""
    if not service_tier:
        return ()
    tier = service_tier.strip().lower()
    if tier == "batch":
        return (("processing", "batch"),)
    return (("service_tier", tier),)


def _tier_of(context: PriceContext) -> str | None:
    items = dict(context)
    if items.get("processing") == "batch":
        return "batch"
    return items.get("service_tier")


class Line:
    """Prices of one (provider, model, context, host) over time; ``at`` is the hot path."""

    __slots__ = ("_by_date", "_by_period", "_dates", "_resolve", "_tods", "single")

    def __init__(
        self,
        resolve: Callable[[int], Rates | Miss],
        dates: Sequence[int] = (),
        tods: Sequence[int] = (),
    ) -> None:
        self._resolve = resolve
        self._dates = tuple(sorted(set(dates)))
        self._tods = tuple(sorted(set(tods)))
        self._by_period: dict[tuple[int, int], Rates | Miss] = {}
        self._by_date: list[Rates | Miss | None] = [None] * (len(self._dates) + 1)
        self.single: Rates | Miss | None = None if self._dates or self._tods else resolve(0)

    def at(self, ns: int) -> Rates | Miss:
        """Rates in force at span time ``ns`` (UTC nanoseconds)."""
        if self.single is not None:
            return self.single
        if not self._tods:
            i = bisect_right(self._dates, ns)
            found = self._by_date[i]
            if found is None:
                found = self._by_date[i] = self._resolve(ns)
            return found
        period = (
            bisect_right(self._dates, ns),
            bisect_right(self._tods, (ns // 1000) % DAY_US) if self._tods else 0,
        )
        found = self._by_period.get(period)
        if found is None:
            found = self._by_period[period] = self._resolve(ns)
        return found


class Catalog:
    """Prices by provider and model, with a version id that changes exactly when the data does."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        overrides: Sequence[PriceOverride] = (),
        currency: str = "USD",
        source: str = "genai-prices",
        source_hash: str | None = None,
    ) -> None:
        """``providers`` in genai-prices' model (its bundled data or a fetched snapshot).

        ``source_hash`` may be given when the caller already hashed ``providers``.
        """
        self.providers = list(providers)
        self.overrides = tuple(overrides)
        self.currency = currency
        self.source = source
        self._by_id = {p.id: p for p in self.providers}
        self.data_hash = source_hash or _hash_providers(self.providers)
        """SHA-256 of the providers' canonical text (``snapshot.py``): which stored data this is."""
        digest = hashlib.sha256()
        digest.update(self.data_hash.encode())
        digest.update(currency.encode())
        digest.update(
            json.dumps([o.model_dump(mode="json") for o in self.overrides], sort_keys=True).encode()
        )
        self.content_hash = digest.hexdigest()
        self._overrides: dict[tuple[str, str], list[Override]] = {}
        for i, o in enumerate(self.overrides):
            for key in self._override_keys(o):
                self._overrides.setdefault(key, []).append(compile_override(i, o))
        self._lines: dict[tuple[str, str, PriceContext, str | None], Line] = {}

    @classmethod
    def bundled(cls, overrides: Sequence[PriceOverride] = (), currency: str = "USD") -> Catalog:
        """The data shipped in the installed genai-prices package."""
        data = snapshot.bundled()
        return cls(
            data.providers,
            overrides=overrides,
            currency=currency,
            source=snapshot.bundled_source(),
            source_hash=data.hash,
        )

    @property
    def version(self) -> str:
        """Short id of this catalog's content, the same in every process for the same data."""
        return self.content_hash[:16]

    def resolve(
        self,
        provider: str,
        model: str,
        at: datetime,
        price_context: Mapping[str, str] | None = None,
        server_address: str | None = None,
    ) -> Rates | None:
        """Rates for a call to ``model`` at ``provider`` made at ``at``, or None when unpriced."""
        found = self.line(provider, model, tuple(sorted((price_context or {}).items())), server_address)
        rates = found.at(datetime_to_ns(at))
        return rates if isinstance(rates, Rates) else None

    def line(
        self, provider: str, model: str, context: PriceContext = (), server_address: str | None = None
    ) -> Line:
        """The (cached) prices over time of one provider/model/context/host."""
        key = (provider, model, context, server_address)
        found = self._lines.get(key)
        if found is None:
            if len(self._lines) >= _MAX_LINES:
                self._lines.clear()  # unbounded model names must not grow memory without bound
            found = self._lines[key] = self._build_line(provider, model, context, server_address)
        return found

    def _provider_id(self, provider: str, server_address: str | None) -> str | None:
        by_host = provider_for_host(server_address, self.providers) if server_address else None
        return by_host or pricing_provider_id(provider, tuple(self._by_id))

    def _override_keys(self, o: PriceOverride) -> list[tuple[str, str]]:
        """An override matches its model name literally, and every name of the catalog model it names."""
        pid = pricing_provider_id(o.provider, tuple(self._by_id)) or o.provider.strip().lower()
        keys = [(pid, o.model.strip().lower())]
        if (p := self._by_id.get(pid)) and (m := p.find_model(o.model, all_providers=self.providers)):
            keys.append((pid, "=" + m.id))
        return keys

    def _build_line(
        self, provider: str, model: str, context: PriceContext, server_address: str | None
    ) -> Line:
        pid = self._provider_id(provider, server_address)
        key_provider = pid or provider.strip().lower()
        gp_provider = self._by_id.get(pid) if pid else None
        info = gp_provider.find_model(model, all_providers=self.providers) if gp_provider else None
        matching = list(self._overrides.get((key_provider, model.strip().lower()), ()))
        if info is not None:
            matching += self._overrides.get((key_provider, "=" + info.id), ())
        history = list({o.index: o for o in matching}.values())
        tier = _tier_of(context)
        usd_catalog = self.currency.upper() == "USD"
        if not history and (info is None or not usd_catalog):
            if pid is None:
                return Line(lambda _ns: Miss(f"unknown provider {provider!r}"))
            if info is None:
                return Line(lambda _ns: Miss(f"no price for model {model!r} at provider {pid!r}"))
            return Line(lambda _ns: Miss(f"catalog prices are USD, prices are kept in {self.currency}"))
        price_key = f"{key_provider}/{info.id if info is not None else model.strip().lower()}"
        catalog_model = info if usd_catalog else None
        # genai-prices applies variants only to a provider's own models, not to fallback ones.
        variants = bool(context) and gp_provider is not None and any(info is m for m in gp_provider.models)

        def resolve(ns: int) -> Rates | Miss:
            chosen = override_in_force(history, tier, ns)
            if chosen is not None:
                return _compile(chosen.prices, price_key, chosen.label)
            if catalog_model is None:
                starts = min(o.from_ns for o in history)
                return Miss(f"no price for {price_key} before {ns_to_datetime(starts).isoformat()}")
            prices = catalog_model.get_prices(ns_to_datetime(ns), dict(context) if variants else None)
            return _compile(prices.__dict__, price_key, "genai-prices")

        dates = [o.from_ns for o in history if o.from_ns != NEVER]
        tods: list[int] = []
        if catalog_model is not None:
            _collect_boundaries(catalog_model, dates, tods)
        return Line(resolve, dates, tods)


def _compile(prices: Mapping[str, object], price_key: str, label: str) -> Rates | Miss:
    try:
        rates = Rates(prices, key=price_key, label=label)  # type: ignore[arg-type]
    except ValueError as exc:
        return Miss(f"invalid price data for {price_key}: {exc}")
    if not rates.measurable:
        units = ", ".join(sorted(rates.prices)) or "nothing"
        return Miss(f"{price_key} is priced per {units}, which spans do not report")
    return rates


def _collect_boundaries(model: ModelInfo, dates: list[int], tods: list[int]) -> None:
    constraints = [] if not isinstance(model.prices, list) else [c.constraint for c in model.prices]
    constraints += [v.constraint for v in model.price_variants or ()]
    for c in constraints:
        if isinstance(c, StartDateConstraint):
            dates.append(date_start_ns(c.start_date))
        elif isinstance(c, TimeOfDateConstraint):
            tods.extend((time_of_day_us(c.start_time), time_of_day_us(c.end_time)))


def _hash_providers(providers: Sequence[Provider]) -> str:
    return snapshot.Snapshot.of(providers).hash
