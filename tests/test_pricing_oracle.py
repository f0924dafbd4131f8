"""Pricer costs against genai-prices' own ``calc_price`` as the oracle: exact Decimal equality.

Covers every bundled provider/model, at every instant its price can change (dated prices, times of
day, dated variants), in every price context its variants use, with usage on both sides of every
tier threshold, with cache, audio and reasoning tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data import providers
from genai_prices.types import ModelInfo, StartDateConstraint, TieredPrices, TimeOfDateConstraint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_aibill.config import PricingConfig
from otel_aibill.pricing import Pricer, Rates
from otel_aibill.pricing.clock import DAY_US, date_start_ns, datetime_to_ns, ns_to_datetime, time_of_day_us
from otel_aibill.pricing.rates import USAGE_KEYS, usage_values
from otel_aibill.usage import PricedUsage, PriceStatus, UsageRecord

PRICER = Pricer(PricingConfig())
PAIRS = [(p.id, m) for p in providers for m in p.models]
NOV_2026 = datetime_to_ns(datetime(2026, 11, 1, 12))


def _model_prices(m: ModelInfo) -> list[object]:
    sets = [m.prices] if not isinstance(m.prices, list) else [c.prices for c in m.prices]
    sets += [v.prices for v in m.price_variants or ()]
    return [v for s in sets for v in s.__dict__.values()]


def _is_tiered(m: ModelInfo) -> bool:
    return any(isinstance(v, TieredPrices) for v in _model_prices(m))


def _is_dated(m: ModelInfo) -> bool:
    return isinstance(m.prices, list) and any(isinstance(c.constraint, StartDateConstraint) for c in m.prices)


def _is_time_of_day(m: ModelInfo) -> bool:
    return isinstance(m.prices, list) and any(
        isinstance(c.constraint, TimeOfDateConstraint) for c in m.prices
    )


def _contexts(m: ModelInfo) -> list[str | None]:
    """Service tiers whose price context selects one of the model's variants, plus the standard one."""
    tiers: list[str | None] = [None]
    for v in m.price_variants or ():
        if v.when == {"processing": "batch"}:
            tiers.append("batch")
        elif list(v.when) == ["service_tier"]:
            tiers.append(v.when["service_tier"])
    return list(dict.fromkeys(tiers))


def _instants(m: ModelInfo) -> list[int]:
    """Span times just before and at every price change of the model, and a recent default."""
    constraints = [c.constraint for c in m.prices] if isinstance(m.prices, list) else []
    constraints += [v.constraint for v in m.price_variants or ()]
    out = [NOV_2026]
    for c in constraints:
        if isinstance(c, StartDateConstraint):
            start = date_start_ns(c.start_date)
            out += [start - 1, start, start + 3_600_000_000_000 * 13]
        elif isinstance(c, TimeOfDateConstraint):
            for t in (c.start_time, c.end_time):
                at = NOV_2026 - (NOV_2026 // 1000 % DAY_US) * 1000 + time_of_day_us(t) * 1000
                out += [at - 1000, at]
    return sorted(set(out))


TIER_STARTS = sorted(
    {t.start for _, m in PAIRS for v in _model_prices(m) if isinstance(v, TieredPrices) for t in v.tiers}
)


def _record(provider: str, model: str, ns: int, tier: str | None, values: tuple[int, ...]) -> UsageRecord:
    kw = dict(zip(USAGE_KEYS, values, strict=True))
    kw["reasoning_tokens"] = kw.pop("output_reasoning_tokens")
    return UsageRecord(
        trace_id="0" * 32,
        span_id="0" * 16,
        start_time_ns=ns,
        end_time_ns=ns + 1,
        provider=provider,
        model=model,
        operation="chat",
        service_tier=tier,
        **kw,
    )


def _oracle(u: UsageRecord) -> Decimal | Exception:
    ctx = None
    if u.service_tier == "batch":
        ctx = {"processing": "batch"}
    elif u.service_tier:
        ctx = {"service_tier": u.service_tier}
    usage = Usage(**dict(zip(USAGE_KEYS, usage_values(u), strict=True)))
    try:
        return calc_price(
            usage,
            u.model,
            provider_id=u.provider,
            genai_request_timestamp=ns_to_datetime(u.start_time_ns),
            price_context=ctx,
        ).total_price
    except (ValueError, LookupError) as exc:
        return exc


STATS: Counter[str] = Counter()


def check(u: UsageRecord) -> PricedUsage:
    """Pricer and oracle agree: same cost, or the oracle refuses / has nothing spans can drive."""
    got = PRICER.price(u)
    want = _oracle(u)
    if got.status is PriceStatus.PRICED:
        assert isinstance(want, Decimal), (u, want)
        assert got.cost == want, (u, got.cost, want)
        assert got.price_version == PRICER.version
        rates = _rates(u)  # the loop-based reference path agrees with the generated code
        assert rates is not None and rates.cost_of(usage_values(u)) == got.cost
        STATS["priced"] += 1
    else:
        assert got.cost is None and got.billed is None and got.unpriced_reason
        if isinstance(want, Decimal):  # only a price with no token/request unit may be refused
            assert "which spans do not report" in got.unpriced_reason, got.unpriced_reason
            assert want == 0
        STATS["unpriced"] += 1
    return got


def _rates(u: UsageRecord) -> Rates | None:
    r = PRICER.catalog.line(u.provider, u.model, _ctx(u.service_tier)).at(u.start_time_ns)
    return r if isinstance(r, Rates) else None


def _ctx(tier: str | None) -> tuple[tuple[str, str], ...]:
    from otel_aibill.pricing import price_context

    return price_context(tier)


USAGES = [
    (1_000, 0, 0, 0, 0, 0, 200, 0, 0),
    # below every tier, with cache reads/writes (5m and 1h), audio and reasoning
    (90_000, 30_000, 12_000, 4_000, 5_000, 1_500, 8_000, 700, 3_000),
    # above every tier: all tokens of each kind re-priced
    (1_500_000, 400_000, 100_000, 20_000, 30_000, 0, 60_000, 0, 40_000),
]


def test_every_bundled_model_matches_calc_price_at_every_price_change_and_context() -> None:
    hit: Counter[str] = Counter()
    for pid, m in PAIRS:
        for ns in _instants(m):
            for tier in _contexts(m):
                for values in USAGES:
                    u = _record(pid, m.id, ns, tier, values)
                    got = check(u)
                    if got.status is PriceStatus.PRICED:
                        hit["models"] += values is USAGES[0]
                        hit["tiered_crossed"] += _is_tiered(m) and values is USAGES[2]
                        hit["dated"] += _is_dated(m)
                        hit["time_of_day"] += _is_time_of_day(m)
                        hit["variant"] += tier is not None
    n_tiered = sum(_is_tiered(m) for _, m in PAIRS)
    n_dated = sum(_is_dated(m) for _, m in PAIRS)
    n_variant = sum(bool(m.price_variants) for _, m in PAIRS)
    assert n_tiered > 100 and n_dated > 100 and n_variant > 100  # the data really has them
    assert hit["models"] > 2000
    assert hit["tiered_crossed"] >= n_tiered
    assert hit["dated"] >= 2 * n_dated
    assert hit["time_of_day"] >= 5
    assert hit["variant"] > n_variant


@st.composite
def usages(draw: st.DrawFn) -> UsageRecord:
    pid, m = draw(st.sampled_from(PAIRS))
    ns = draw(st.sampled_from(_instants(m))) + draw(
        st.sampled_from([0, 0, -1, 1]) | st.integers(-(10**17), 10**17)
    )
    tier = draw(st.sampled_from([*_contexts(m), "priority", "flex", "scale"]))
    near = draw(st.sampled_from(TIER_STARTS))
    inp = draw(st.integers(0, 3_000_000) | st.integers(near - 2, near + 2).filter(lambda x: x >= 0))
    cr = draw(st.integers(0, inp))
    cw = draw(st.integers(0, inp - cr))
    c5 = draw(st.integers(0, cw))
    c1 = draw(st.integers(0, cw - c5))
    audio = draw(st.just(0) | st.integers(0, inp - cr - cw))
    out = draw(st.integers(0, 200_000))
    out_audio = draw(st.just(0) | st.integers(0, out))
    reasoning = draw(st.just(0) | st.integers(0, out - out_audio))
    values = (inp, cr, cw, c5, c1, audio, out, out_audio, reasoning)
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:  # sometimes inconsistent parts
        values = (inp, cr + inp + 1, *values[2:])
    return _record(pid, m.id, ns, tier, values)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usages())
def test_random_usage_times_and_tiers_match_calc_price(u: UsageRecord) -> None:
    check(u)


@pytest.mark.parametrize(
    ("provider", "model", "values", "want"),
    [
        # claude-sonnet-4-5 tiers at 200k input: 200k is base, 200,001 re-prices all input and output
        ("anthropic", "claude-sonnet-4-5", (200_000, 0, 0, 0, 0, 0, 1_000, 0, 0), "0.615"),
        ("anthropic", "claude-sonnet-4-5", (200_001, 0, 0, 0, 0, 0, 1_000, 0, 0), "1.2225060"),
        # cache parts of input: 100k total = 60k read (0.3) + 10k write 5m (3.75) + 30k plain (3)
        ("anthropic", "claude-sonnet-4-5", (100_000, 60_000, 10_000, 0, 0, 0, 0, 0, 0), "0.1455"),
        # 1h writes at 6/MTok, the rest of the writes at the 5m price
        ("anthropic", "claude-sonnet-4-5", (100_000, 0, 10_000, 0, 4_000, 0, 0, 0, 0), "0.3165"),
        # reasoning is part of output: not charged twice
        ("openai", "gpt-4o", (1_000, 0, 0, 0, 0, 0, 1_000, 0, 900), "0.0125"),
    ],
)
def test_known_prices(provider: str, model: str, values: tuple[int, ...], want: str) -> None:
    got = check(_record(provider, model, NOV_2026, None, values))
    assert got.cost == Decimal(want)


def test_dated_price_change_is_applied_at_its_start_date() -> None:
    # claude-opus-4-6 dropped its >200k tier on 2026-03-13.
    start = date_start_ns(date(2026, 3, 13))
    values = (300_000, 0, 0, 0, 0, 0, 0, 0, 0)
    before = check(_record("anthropic", "claude-opus-4-6", start - 1, None, values))
    after = check(_record("anthropic", "claude-opus-4-6", start, None, values))
    assert before.cost == Decimal("3.0") and after.cost == Decimal("1.5")


def test_time_of_day_price() -> None:
    # deepseek-chat: off-peak (16:30-00:30 UTC) is half price.
    day = NOV_2026 - (NOV_2026 // 1000 % DAY_US) * 1000
    values = (1_000_000, 0, 0, 0, 0, 0, 0, 0, 0)
    peak = check(_record("deepseek", "deepseek-chat", day + 12 * 3_600 * 10**9, None, values))
    off = check(_record("deepseek", "deepseek-chat", day + 20 * 3_600 * 10**9, None, values))
    assert peak.cost == Decimal("0.27") and off.cost == Decimal("0.135")


def test_variants_batch_and_flex() -> None:
    values = (1_000_000, 0, 0, 0, 0, 0, 0, 0, 0)
    std = check(_record("openai", "gpt-5", NOV_2026, None, values))
    flex = check(_record("openai", "gpt-5", NOV_2026, "flex", values))
    batch = check(_record("openai", "gpt-5", NOV_2026, "batch", values))
    prio = check(_record("openai", "gpt-5", NOV_2026, "priority", values))
    assert (std.cost, flex.cost, batch.cost, prio.cost) == tuple(
        map(Decimal, ("1.25", "0.625", "0.625", "2.5"))
    )
    # flex has no price before its variant starts (2026-10-12): standard applies, as in genai-prices
    early = check(_record("openai", "gpt-5", NOV_2026 - 60 * DAY_US * 1000, "flex", values))
    assert early.cost == Decimal("1.25")


def test_fallback_provider_prices_without_variants() -> None:
    # azure falls back to openai's models; genai-prices ignores variants for fallback models.
    u = _record("azure", "gpt-5", NOV_2026, "flex", (1_000_000, 0, 0, 0, 0, 0, 0, 0, 0))
    got = check(u)
    assert got.price_key == "azure/gpt-5" and got.cost == Decimal("1.25")


def test_unreported_split_is_unpriced_like_the_oracle() -> None:
    # Realtime models price cached audio separately; with both cache reads and audio reported the
    # cached-audio share is unknown, so the call is unpriced rather than guessed.
    pairs = [
        (p, m) for p, m in PAIRS if "cache_audio_read_mtok" in m.get_prices(ns_to_datetime(NOV_2026)).__dict__
    ]
    assert pairs
    pid, m = pairs[0]
    got = check(_record(pid, m.id, NOV_2026, None, (1_000, 100, 0, 0, 0, 200, 10, 0, 0)))
    assert got.status is PriceStatus.UNPRICED and "cache_audio_read_tokens" in got.unpriced_reason
    ok = check(_record(pid, m.id, NOV_2026, None, (1_000, 0, 0, 0, 0, 200, 10, 0, 0)))
    assert ok.status is PriceStatus.PRICED


def test_inconsistent_usage_is_unpriced() -> None:
    got = check(_record("openai", "gpt-4o", NOV_2026, None, (100, 200, 0, 0, 0, 0, 0, 0, 0)))
    assert got.status is PriceStatus.UNPRICED and "exceed" in got.unpriced_reason


def test_rates_are_cached_per_period_not_per_call() -> None:
    u = _record("anthropic", "claude-opus-4-6", NOV_2026, None, USAGES[1])
    a, b = _rates(u), _rates(replace(u, start_time_ns=NOV_2026 + 10**12))
    assert a is not None and a is b
    old = _rates(replace(u, start_time_ns=date_start_ns(date(2026, 1, 1))))
    assert old is not None and old is not a and old.prices != a.prices
