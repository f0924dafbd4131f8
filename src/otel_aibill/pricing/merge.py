"""Fold a feed into the current catalog without ever letting older data replace newer (pure).

Compared per (provider, model, price period). A feed lags, so what it lacks is not a removal:
a model or provider missing from it is kept as it is. A feed entry whose periods would take a
price away from the current model, start a new price before the current latest period, or
change a period that a later one already superseded, is older data (or a rewrite of prices
already billed): it is refused, listed with the reason, and the current model stays. Everything
else applies: new models, new later periods, a changed latest period, changed match rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from genai_prices.types import ModelInfo, Provider, StartDateConstraint, TimeOfDateConstraint

from otel_aibill.pricing.feed import Feed, Refused, periods


@dataclass(frozen=True, slots=True)
class Change:
    """A model the merge added or changed."""

    provider: str
    model: str
    kind: str  # "added" | "changed"


@dataclass(frozen=True, slots=True)
class Merged:
    providers: tuple[Provider, ...]
    changes: tuple[Change, ...] = ()
    refused: tuple[Refused, ...] = ()
    kept: tuple[tuple[str, str], ...] = field(default=())
    """(provider, model) of current models the feed does not name (kept as they are)."""

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def period_key(constraint: Any) -> Any:
    """What identifies a price period: its start date, its daily window, or None (from the start)."""
    if constraint is None:
        return None
    if isinstance(constraint, StartDateConstraint):
        return constraint.start_date
    if isinstance(constraint, TimeOfDateConstraint):
        return ("daily", constraint.start_time.isoformat(), constraint.end_time.isoformat())
    return repr(constraint)


def describe_period(key: Any) -> str:
    if key is None:
        return "the first period"
    if isinstance(key, date):
        return f"the period from {key.isoformat()}"
    if isinstance(key, tuple):
        return f"the daily period {key[1]}-{key[2]}"
    return str(key)


def refusal(current: ModelInfo, feed: ModelInfo) -> str | None:
    """Why the feed's version of a model is older than (or rewrites) the current one."""
    mine = {period_key(c): p for c, p in periods(current)}
    theirs = {period_key(c): p for c, p in periods(feed)}
    for key in mine:
        if key not in theirs:
            return f"would remove {describe_period(key)}"
    dated = sorted(k for k in mine if isinstance(k, date))
    latest = dated[-1] if dated else None
    for key in theirs:
        if key not in mine and isinstance(key, date) and latest is not None and key < latest:
            return f"back-dates a price to {key.isoformat()}, before the current latest period from {latest}"
    for key, prices in mine.items():
        superseded = (key is None and latest is not None) or (isinstance(key, date) and key != latest)
        if superseded and theirs[key] != prices:
            return f"changes {describe_period(key)}, already superseded"
    return None


def merge(current: Sequence[Provider], feed: Feed) -> Merged:
    """The catalog after ``feed``: what it added or changed, what it refused, what it left alone."""
    by_id = {p.id: p for p in current}
    changes: list[Change] = []
    refused = list(feed.refused)
    kept: list[tuple[str, str]] = []
    out: list[Provider] = []
    seen: set[str] = set()
    for fp in feed.providers:
        seen.add(fp.id)
        cp = by_id.get(fp.id)
        if cp is None:
            out.append(fp)
            changes.extend(Change(fp.id, m.id, "added") for m in fp.models)
            continue
        mine = {m.id: m for m in cp.models}
        models: list[ModelInfo] = []
        named = set()
        for fm in fp.models:
            named.add(fm.id)
            cm = mine.get(fm.id)
            if cm is None:
                models.append(fm)
                changes.append(Change(fp.id, fm.id, "added"))
            elif cm == fm:
                models.append(cm)
            elif (why := refusal(cm, fm)) is not None:
                models.append(cm)
                refused.append(Refused(fp.id, fm.id, why))
            else:
                models.append(fm)
                changes.append(Change(fp.id, fm.id, "changed"))
        missing = [m for m in cp.models if m.id not in named]
        kept.extend((cp.id, m.id) for m in missing)
        base = cp if feed.partial else fp
        out.append(replace(base, models=models + missing, extractors=None))
    for cp in current:
        if cp.id not in seen:
            out.append(cp)
            if not feed.partial:
                kept.extend((cp.id, m.id) for m in cp.models)
    return Merged(tuple(out), tuple(changes), tuple(refused), tuple(kept))
