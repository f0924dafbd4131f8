"""One price update: fetch a source, fold it into the current catalog, store what it gives.

Changes for providers whose policy is ``apply`` make a new approved snapshot; the rest of the
changes (policy ``hold``) make a pending snapshot on top of it, which waits for ``prices
approve``. A source that cannot be read or parsed raises and leaves the store untouched; an
unchanged source stores nothing. The report names every change, refusal and kept model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from otel_aibill.config import PricesConfig
from otel_aibill.pricing.diff import DiffRow, diff
from otel_aibill.pricing.feed import Feed, Refused, parse_feed
from otel_aibill.pricing.merge import Change, Merged, merge
from otel_aibill.pricing.snapshot import Snapshot
from otel_aibill.watch.catalog_store import CatalogStore, StoredSnapshot
from otel_aibill.watch.fetch import Fetched, fetch

Fetcher = Callable[..., Fetched]


@dataclass(frozen=True, slots=True)
class UpdateReport:
    source: str
    base: StoredSnapshot
    applied: StoredSnapshot | None = None  # new approved snapshot
    pending: StoredSnapshot | None = None  # new snapshot held for approval
    changes: tuple[Change, ...] = ()
    held: tuple[Change, ...] = ()
    diff: tuple[DiffRow, ...] = ()
    refused: tuple[Refused, ...] = ()
    kept: int = 0
    not_modified: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.applied is not None or self.pending is not None


def _only(feed: Feed, keep: Callable[[str], bool]) -> Feed:
    return replace(feed, providers=tuple(p for p in feed.providers if keep(p.id)), refused=())


def _summary(merged: Merged, changes: tuple[Change, ...]) -> dict[str, Any]:
    return {
        "changes": [[c.provider, c.model, c.kind] for c in changes],
        "refused": [[r.provider, r.model, r.reason] for r in merged.refused],
    }


def update_prices(
    store: CatalogStore,
    prices: PricesConfig,
    source: str | None = None,
    *,
    fetcher: Fetcher = fetch,
) -> UpdateReport:
    """Fetch ``source`` (default ``prices.source``) and store what changes; see the module doc."""
    source = source or prices.source
    base = store.current()
    etag, modified = store.validators(source)
    got = fetcher(
        source, etag=etag, last_modified=modified, timeout=prices.timeout_seconds, max_bytes=prices.max_bytes
    )
    if got.body is None:
        return UpdateReport(source, base, not_modified=True)
    current = store.data(base)
    feed = parse_feed(got.body, current.providers)
    hold = {p.id for p in feed.providers if prices.policy_for(p.id) == "hold"}
    now = merge(current.providers, _only(feed, lambda pid: pid not in hold))
    later = merge(now.providers, _only(feed, lambda pid: pid in hold))
    everything = merge(current.providers, feed)  # for the refusals and kept models, as a whole
    applied = pending = None
    if now.changed:
        data = Snapshot.of(now.providers)
        summary = _summary(now, now.changes)
        applied = store.add(data, source, status="approved", base_seq=base.seq, report=summary)
    if later.changed:
        data = Snapshot.of(later.providers)
        # the same data already pending, or rejected before, is not news
        if store.find(data.hash) is None:
            summary = _summary(later, later.changes)
            on = applied or base
            pending = store.add(data, source, status="pending", base_seq=on.seq, report=summary)
    store.set_validators(source, got.etag, got.last_modified)
    return UpdateReport(
        source,
        base,
        applied=applied,
        pending=pending,
        changes=now.changes,
        held=later.changes if pending is not None else (),
        diff=tuple(diff(current.providers, later.providers)) if applied or pending else (),
        refused=everything.refused,
        kept=len(everything.kept),
    )
