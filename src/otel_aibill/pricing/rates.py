"""Rates: one resolved price, compiled once into integer arithmetic and applied to many usage records.

genai-prices prices a call by splitting the usage into "leaf" counts over its unit registry (a part
such as ``cache_read_tokens`` is subtracted from its parent ``input_tokens`` only when the part has a
price of its own) and multiplying each leaf by its price, with tiers chosen by the total input tokens
(crossing a tier re-prices every token of that kind). ``Rates`` does the same split once per price,
as integer coefficients, and keeps each price as an integer mantissa on a common decimal exponent, so
``cost`` is exact integer arithmetic with a single ``Decimal`` at the end: no decimal context, no
rounding, whatever the magnitude.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from itertools import combinations
from typing import TYPE_CHECKING, cast

from genai_prices.data_units import unit_data
from genai_prices.types import TieredPrices
from genai_prices.units import UnitDef, UnitRegistry
from genai_prices.validation import validate_priced_units

if TYPE_CHECKING:
    from otel_aibill.usage import UsageRecord

PriceValue = Decimal | TieredPrices

REGISTRY = UnitRegistry(unit_data)

USAGE_KEYS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "output_tokens",
    "output_audio_tokens",
    "output_reasoning_tokens",
)
"""genai-prices usage keys a ``UsageRecord`` reports, in the order of ``usage_values``.

Reasoning is a part of output (as in the OTel convention), so it costs extra only where a model
prices ``output_reasoning_mtok``; otherwise it is simply output.
"""

MEASURED_PRICE_KEYS = frozenset(REGISTRY.units[key].price_key for key in (*USAGE_KEYS, "requests"))
"""Price keys a span can drive. A price with none of them cannot be applied to span usage."""


def usage_values(u: UsageRecord) -> tuple[int, ...]:
    """The record's counts under ``USAGE_KEYS`` (same order)."""
    return (
        u.input_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.cache_write_5m_tokens,
        u.cache_write_1h_tokens,
        u.input_audio_tokens,
        u.output_tokens,
        u.output_audio_tokens,
        u.reasoning_tokens,
    )


class UsageError(ValueError):
    """The usage cannot be priced with these rates (inconsistent parts, or a needed split is unknown)."""


@dataclass(frozen=True, slots=True)
class _Leaf:
    """One priced unit: its leaf count is sum(values[i] for i in plus) - sum(values[i] for i in minus)."""

    usage_key: str
    plus: tuple[int, ...]
    minus: tuple[int, ...]


class Rates:
    """The compiled arithmetic of one model price (one period, one price context)."""

    __slots__ = (
        "_checks",
        "_exp",
        "_leaves",
        "_segments",
        "_thresholds",
        "cost_fn",
        "key",
        "label",
        "prices",
    )

    def __init__(self, prices: Mapping[str, PriceValue], *, key: str, label: str = "catalog") -> None:
        """Compile ``prices`` (genai-prices price keys, e.g. ``input_mtok``) for ``key`` ("provider/model").

        Price keys outside the unit registry are ignored, as genai-prices does. Raises ``ValueError``
        when the price set is one genai-prices would refuse (missing ancestor or join prices).
        """
        known = {k: v for k, v in prices.items() if v is not None and k in REGISTRY._all_price_keys}
        units = [REGISTRY.unit_for_price_key(k) for k in known]
        validate_priced_units(tuple(units), REGISTRY)
        self.key = key
        self.label = label
        self.prices: Mapping[str, PriceValue] = known
        token_units = [u for u in units if u.usage_key != "requests"]
        self._checks = _ambiguity_checks(token_units)
        # Units a span can drive; every other priced unit counts 0 (or is refused by ``_checks``).
        live = [u for u in units if u.usage_key in USAGE_KEYS or u.usage_key == "requests"]
        all_leaves = _leaves(token_units)
        self._leaves = tuple(all_leaves[u.usage_key] for u in live if u.usage_key != "requests")
        tiered = [p for u in live if isinstance(p := known[u.price_key], TieredPrices)]
        self._thresholds = tuple(sorted({t.start for p in tiered for t in p.tiers}))
        per_token = [
            {u.usage_key: _per_one(_at_segment(known[u.price_key], self._thresholds, i), u.per) for u in live}
            for i in range(len(self._thresholds) + 1)
        ]
        self._exp = min((_exponent(v) for seg in per_token for v in seg.values()), default=0)
        self._segments = tuple(
            _Segment(
                leaf_mantissas=tuple(_mantissa(seg[leaf.usage_key], self._exp) for leaf in self._leaves),
                requests=_mantissa(seg["requests"], self._exp) if "requests" in seg else 0,
            )
            for seg in per_token
        )
        self.cost_fn: Callable[[UsageRecord], Decimal] = _generate(self)
        """``cost`` as straight-line code generated from the same data; the hot path calls this."""

    @property
    def measurable(self) -> bool:
        """Whether any price applies to what spans report (tokens or requests)."""
        return bool(MEASURED_PRICE_KEYS & self.prices.keys())

    def cost(self, usage: UsageRecord) -> Decimal:
        """Provider cost of ``usage``; equals ``genai_prices.calc_price(...).total_price`` exactly.

        Raises ``UsageError`` where genai-prices would refuse the usage.
        """
        return self.cost_fn(usage)

    def cost_of(self, values: tuple[int, ...]) -> Decimal:
        """``cost`` for counts already laid out as ``USAGE_KEYS`` (the reference, loop-based path)."""
        if min(values) < 0:
            raise UsageError("token counts must be non-negative")
        for usage_key, groups in self._checks:
            for group in groups:
                if all(values[i] > 0 for i in group):
                    names = ", ".join(USAGE_KEYS[i] for i in group)
                    raise UsageError(f"{usage_key} is priced separately but unknown (reported {names})")
        thresholds = self._thresholds
        seg = self._segments[bisect_left(thresholds, values[0])] if thresholds else self._segments[0]
        total = seg.requests
        for leaf, mantissa in zip(self._leaves, seg.leaf_mantissas, strict=True):
            count = 0
            for i in leaf.plus:
                count += values[i]
            for i in leaf.minus:
                count -= values[i]
            if count < 0:
                raise UsageError(f"parts of {leaf.usage_key} exceed it")
            total += mantissa * count
        return Decimal(total).scaleb(self._exp, _EXACT)

    def __repr__(self) -> str:
        return f"Rates({self.key!r}, {self.label!r}, {dict(self.prices)!r})"


@dataclass(frozen=True, slots=True)
class _Segment:
    leaf_mantissas: tuple[int, ...]
    requests: int


_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
"""Used only to shift an exact integer's exponent, which never rounds."""


def _per_one(price: Decimal, per: int) -> Decimal:
    """``price / per`` exactly; live units are priced per a power of ten (tokens per 1M, requests per 1K)."""
    shift = len(str(per)) - 1
    if 10**shift != per:
        raise ValueError(f"unit priced per {per}, not a power of ten")
    return price.scaleb(-shift, _EXACT)


def _at_segment(price: PriceValue, thresholds: tuple[int, ...], segment: int) -> Decimal:
    """The price in force when input tokens exceed ``thresholds[segment-1]`` but not the next."""
    if not isinstance(price, TieredPrices):
        return price
    applicable = price.base
    total_above = thresholds[segment - 1] if segment else None
    for tier in price.tiers:
        if total_above is not None and tier.start <= total_above:
            applicable = tier.price
    return applicable


def _exponent(value: Decimal) -> int:
    return int(value.as_tuple().exponent)


def _mantissa(value: Decimal, exp: int) -> int:
    sign, digits, e = value.as_tuple()
    assert isinstance(e, int)
    m: int = int("".join(map(str, digits)) or "0") * 10 ** (e - exp)
    return -m if sign else m


def _descends(ancestor: UnitDef, unit: UnitDef) -> bool:
    return ancestor is not unit and ancestor.dimensions.items() <= unit.dimensions.items()


def _leaves(priced: list[UnitDef]) -> dict[str, _Leaf]:
    """Each priced unit's leaf as +/- reported counts (inclusion-exclusion over priced descendants).

    leaf(u) = value(u) - sum(leaf(d) for priced strict descendants d), solved most specific first,
    in the order genai-prices uses.
    """
    order = sorted(priced, key=lambda x: (-len(x.dimensions), x.usage_key))
    coefs: dict[str, dict[str, int]] = {}
    for u in order:
        c = {u.usage_key: 1}
        for d in order:
            if _descends(u, d):
                for k, n in coefs[d.usage_key].items():
                    c[k] = c.get(k, 0) - n
        coefs[u.usage_key] = c
    out: dict[str, _Leaf] = {}
    for key, coef in coefs.items():
        plus: list[int] = []
        minus: list[int] = []
        for k, n in coef.items():
            if k in USAGE_KEYS:  # an unreported key counts 0 (``_ambiguity_checks`` covers when it may not)
                (plus if n > 0 else minus).extend([USAGE_KEYS.index(k)] * abs(n))
        out[key] = _Leaf(key, tuple(plus), tuple(minus))
    return out


def _ambiguity_checks(priced: list[UnitDef]) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
    """For each priced key spans don't report: the reported counts that, all non-zero, make it unknowable.

    Mirrors genai-prices, which refuses to infer such a key as 0 when a more specific reported key
    is non-zero, or when two reported keys overlap exactly on it (cache reads of audio, say).
    """
    reported = [REGISTRY.units[k] for k in USAGE_KEYS]
    checks: list[tuple[str, tuple[tuple[int, ...], ...]]] = []
    for unit in priced:
        if unit.usage_key in USAGE_KEYS:
            continue
        groups: list[tuple[int, ...]] = [(i,) for i, r in enumerate(reported) if _descends(unit, r)]
        for (i, a), (j, b) in combinations(enumerate(reported), 2):
            if not a.is_compatible_with(b) or _descends(a, b) or _descends(b, a) or a is b:
                continue
            if dict(unit.dimensions) == {**a.dimensions, **b.dimensions}:
                groups.append((i, j))
        if groups:
            checks.append((unit.usage_key, tuple(groups)))
    return tuple(checks)


_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "output_tokens",
    "output_audio_tokens",
    "reasoning_tokens",
)
"""``UsageRecord`` attributes behind ``USAGE_KEYS``, same order."""


def _generate(rates: Rates) -> Callable[[UsageRecord], Decimal]:
    """Compile ``rates.cost_of`` for one price into straight-line Python (as dataclasses does for __init__).

    The source is made only of integers, indices and registry key names; it runs the same checks
    and arithmetic as ``cost_of`` without loops, tuples or lookups, which is most of a call's time.
    """
    lines = [f"    v{i} = u.{name}" for i, name in enumerate(_FIELDS)]
    lines.append(f"    if {' or '.join(f'v{i} < 0' for i in range(len(_FIELDS)))}:")
    lines.append("        raise UsageError('token counts must be non-negative')")
    for usage_key, groups in rates._checks:
        for group in groups:
            names = ", ".join(USAGE_KEYS[i] for i in group)
            lines.append(f"    if {' and '.join(f'v{i} > 0' for i in group)}:")
            msg = f"{usage_key} is priced separately but unknown (reported {names})"
            lines.append(f"        raise UsageError({msg!r})")
    for n, leaf in enumerate(rates._leaves):
        expr = " + ".join(f"v{i}" for i in leaf.plus) or "0"
        expr += "".join(f" - v{i}" for i in leaf.minus)
        lines.append(f"    l{n} = {expr}")
        if leaf.minus:
            lines.append(f"    if l{n} < 0:")
            lines.append(f"        raise UsageError({f'parts of {leaf.usage_key} exceed it'!r})")

    def total(seg: _Segment) -> str:
        terms = [f"{m} * l{n}" for n, m in enumerate(seg.leaf_mantissas) if m]
        return " + ".join([*terms, str(seg.requests)])

    segments = rates._segments
    for k in range(len(segments) - 1, 0, -1):
        keyword = "if" if k == len(segments) - 1 else "elif"
        lines.append(f"    {keyword} v0 > {rates._thresholds[k - 1]}:")
        lines.append(f"        t = {total(segments[k])}")
    if len(segments) > 1:
        lines.append("    else:")
        lines.append(f"        t = {total(segments[0])}")
    else:
        lines.append(f"    t = {total(segments[0])}")
    lines.append(f"    return Decimal(t).scaleb({rates._exp}, _EXACT)")
    source = "def cost(u):\n" + "\n".join(lines) + "\n"
    namespace: dict[str, object] = {"Decimal": Decimal, "UsageError": UsageError, "_EXACT": _EXACT}
    exec(compile(source, f"<rates {rates.key}>", "exec"), namespace)
    fn = cast(Callable[["UsageRecord"], Decimal], namespace["cost"])
    return fn
