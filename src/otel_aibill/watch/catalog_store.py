"""Every price catalog the ledger has priced with, stored beside it (SQLite file or PG schema).

Two tables, because a catalog is price *data* plus the user's config:

- ``price_snapshots``: one row per distinct price data (``seq`` 1 is the bundled genai-prices
  data), its canonical v2 text compressed, where it came from, when, and its status:
  ``approved`` (usable), ``pending`` (held for approval), ``rejected`` or ``superseded``. The
  current data is the approved snapshot with the highest ``seq``.
- ``price_versions``: one row per catalog id a usage row carries in ``price_version`` (the
  content hash of data + config overrides + currency), naming its snapshot and the overrides and
  currency it was built with, so any row's price can be rebuilt exactly.

``price_sources`` keeps each source's HTTP validators (ETag, Last-Modified) for the next fetch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from otel_aibill.config import Config, PriceOverride, PricingConfig
from otel_aibill.db import Component, Migration
from otel_aibill.errors import BadDataError
from otel_aibill.pricing import snapshot as snapshots
from otel_aibill.pricing.catalog import Catalog
from otel_aibill.pricing.pricer import Pricer
from otel_aibill.pricing.snapshot import Snapshot
from otel_aibill.watch.sql import Database, is_storable

_log = logging.getLogger(__name__)

Status = Literal["approved", "pending", "rejected", "superseded"]

PRICES = Component(
    "prices",
    "prices_version",
    (
        Migration(
            1,
            "price snapshots, catalog versions, source validators",
            (
                "CREATE TABLE price_snapshots (seq INTEGER PRIMARY KEY, data_hash TEXT NOT NULL UNIQUE,"
                " source TEXT NOT NULL, fetched_at_ns INTEGER NOT NULL, body BLOB NOT NULL,"
                " status TEXT NOT NULL, decided_at_ns INTEGER, base_seq INTEGER,"
                " report TEXT NOT NULL DEFAULT '{}')",
                "CREATE TABLE price_versions (version TEXT PRIMARY KEY, snapshot_seq INTEGER NOT NULL"
                " REFERENCES price_snapshots (seq), currency TEXT NOT NULL, overrides TEXT NOT NULL,"
                " first_seen_ns INTEGER NOT NULL)",
                "CREATE TABLE price_sources (source TEXT PRIMARY KEY, etag TEXT, last_modified TEXT,"
                " checked_at_ns INTEGER NOT NULL)",
            ),
            (
                "CREATE TABLE price_snapshots (seq bigint PRIMARY KEY, data_hash text NOT NULL UNIQUE,"
                " source text NOT NULL, fetched_at_ns bigint NOT NULL, body bytea NOT NULL,"
                " status text NOT NULL, decided_at_ns bigint, base_seq bigint,"
                " report text NOT NULL DEFAULT '{}')",
                "CREATE TABLE price_versions (version text PRIMARY KEY, snapshot_seq bigint NOT NULL"
                " REFERENCES price_snapshots (seq), currency text NOT NULL, overrides text NOT NULL,"
                " first_seen_ns bigint NOT NULL)",
                "CREATE TABLE price_sources (source text PRIMARY KEY, etag text, last_modified text,"
                " checked_at_ns bigint NOT NULL)",
            ),
        ),
    ),
)

_COLUMNS = "seq, data_hash, source, fetched_at_ns, status, decided_at_ns, base_seq, report"


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """A stored price data set, without its (large) body."""

    seq: int
    data_hash: str
    source: str
    fetched_at_ns: int
    status: Status
    decided_at_ns: int | None
    base_seq: int | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"v{self.seq}"


def _stored(row: Sequence[Any]) -> StoredSnapshot:
    seq, data_hash, source, fetched, status, decided, base, report = row
    return StoredSnapshot(
        int(seq), data_hash, source, int(fetched), status,
        None if decided is None else int(decided), None if base is None else int(base),
        json.loads(report or "{}"),
    )  # fmt: skip


class UnknownVersionError(BadDataError, LookupError):
    """No stored catalog version or snapshot has that name."""


_parsed: OrderedDict[str, Snapshot] = OrderedDict()
_parsed_lock = threading.Lock()
_PARSED_MAX = 4


def _parse_body(data_hash: str, compressed: bytes) -> Snapshot:
    """The snapshot of a stored body, parsed once per process for the few recently used ones."""
    if data_hash == snapshots.bundled().hash:
        return snapshots.bundled()
    with _parsed_lock:
        found = _parsed.get(data_hash)
        if found is not None:
            _parsed.move_to_end(data_hash)
            return found
    data = Snapshot.from_body(zlib.decompress(compressed))
    if data.hash != data_hash:
        raise BadDataError(f"stored price data {data_hash[:12]} does not match its hash")
    with _parsed_lock:
        _parsed[data_hash] = data
        while len(_parsed) > _PARSED_MAX:
            _parsed.popitem(last=False)
    return data


class CatalogStore:
    """The stored snapshots and versions at ``url``; created and migrated on first use."""

    def __init__(self, url: str) -> None:
        self.db = Database(url, PRICES)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- snapshots -----------------------------------------------------------------------------

    def ensure_bundled(self) -> StoredSnapshot:
        """Store the installed genai-prices data as the first snapshot if nothing is stored yet."""
        found = self.db.execute("SELECT 1 FROM price_snapshots LIMIT 1")
        if not found:
            data = snapshots.bundled()
            self.add(data, snapshots.bundled_source(), status="approved")
        return self.current()

    def add(
        self,
        data: Snapshot,
        source: str,
        *,
        status: Status,
        fetched_at_ns: int | None = None,
        base_seq: int | None = None,
        report: dict[str, Any] | None = None,
    ) -> StoredSnapshot:
        """Store ``data`` as the next snapshot (or return the one already holding the same data)."""
        now = time.time_ns()
        with self.db.transaction() as tx:
            tx.lock("price_snapshots")
            existing = tx.execute(f"SELECT {_COLUMNS} FROM price_snapshots WHERE data_hash = ?", (data.hash,))
            if existing:
                return _stored(existing[0])
            (last,) = tx.execute("SELECT coalesce(max(seq), 0) FROM price_snapshots")[0]
            seq = int(last) + 1
            tx.execute(
                "INSERT INTO price_snapshots (seq, data_hash, source, fetched_at_ns, body, status,"
                " decided_at_ns, base_seq, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq, data.hash, source, fetched_at_ns or now, zlib.compress(data.body, 6), status,
                    now if status == "approved" else None, base_seq, json.dumps(report or {}),
                ),
            )  # fmt: skip
        return self.snapshot(seq)

    def find(self, data_hash: str) -> StoredSnapshot | None:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM price_snapshots WHERE data_hash = ?", (data_hash,))
        return _stored(rows[0]) if rows else None

    def snapshots(self) -> list[StoredSnapshot]:
        return [_stored(r) for r in self.db.execute(f"SELECT {_COLUMNS} FROM price_snapshots ORDER BY seq")]

    def current(self) -> StoredSnapshot:
        """The approved snapshot with the highest ``seq`` (the bundled data is stored when empty)."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM price_snapshots WHERE status = 'approved' ORDER BY seq DESC LIMIT 1"
        )
        return _stored(rows[0]) if rows else self.ensure_bundled()

    def pending(self) -> list[StoredSnapshot]:
        return [s for s in self.snapshots() if s.status == "pending"]

    def snapshot(self, ref: int | str) -> StoredSnapshot:
        """A snapshot by ``seq`` (``3`` or ``v3``), data hash prefix, or catalog version id."""
        text = str(ref).strip().lower()
        if text.removeprefix("v").isdigit():
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM price_snapshots WHERE seq = ?", (int(text.removeprefix("v")),)
            )
        elif len(text) >= 6 and all(c in "0123456789abcdef" for c in text):
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM price_snapshots WHERE seq IN (SELECT snapshot_seq FROM"
                " price_versions WHERE version = ?)",
                (text,),
            ) or [
                r
                for r in self.db.execute(f"SELECT {_COLUMNS} FROM price_snapshots")
                if str(r[1]).startswith(text)
            ]
        else:
            rows = []
        if len(rows) != 1:
            what = "matches several snapshots" if rows else "is not a stored price version"
            raise UnknownVersionError(f"{ref!r} {what} (see 'otel-aibill prices history')")
        return _stored(rows[0])

    def data(self, stored: StoredSnapshot) -> Snapshot:
        """The price data of a stored snapshot."""
        if stored.data_hash == snapshots.bundled().hash:
            return snapshots.bundled()
        (row,) = self.db.execute("SELECT body FROM price_snapshots WHERE seq = ?", (stored.seq,))
        return _parse_body(stored.data_hash, bytes(row[0]))

    def decide(self, seq: int, status: Status) -> None:
        self.db.execute(
            "UPDATE price_snapshots SET status = ?, decided_at_ns = ? WHERE seq = ?",
            (status, time.time_ns(), seq),
        )

    # -- catalog versions ------------------------------------------------------------------------

    def catalog(self, stored: StoredSnapshot, pricing: PricingConfig) -> Catalog:
        """The catalog of ``stored`` data with the config's overrides and currency, registered so
        that the version it stamps on usage rows resolves here."""
        data = self.data(stored)
        catalog = Catalog(
            data.providers,
            overrides=pricing.overrides,
            currency=pricing.currency,
            source=stored.source,
            source_hash=data.hash,
        )
        self.register(catalog, stored.seq)
        return catalog

    def register(self, catalog: Catalog, seq: int) -> None:
        overrides = json.dumps([o.model_dump(mode="json") for o in catalog.overrides], sort_keys=True)
        self.db.execute(
            "INSERT INTO price_versions (version, snapshot_seq, currency, overrides, first_seen_ns)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (version) DO NOTHING",
            (catalog.version, seq, catalog.currency, overrides, time.time_ns()),
        )

    def resolve(self, version: str) -> Catalog:
        """The exact catalog a usage row's ``price_version`` names."""
        rows = self.db.execute(
            "SELECT snapshot_seq, currency, overrides FROM price_versions WHERE version = ?", (version,)
        )
        if not rows:
            raise UnknownVersionError(f"price version {version!r} is not stored in this ledger")
        seq, currency, overrides = rows[0]
        stored = self.snapshot(int(seq))
        data = self.data(stored)
        return Catalog(
            data.providers,
            overrides=[PriceOverride.model_validate(o) for o in json.loads(overrides)],
            currency=currency,
            source=stored.source,
            source_hash=data.hash,
        )

    def versions(self) -> list[tuple[str, int, str, int]]:
        """(version, snapshot seq, currency, first seen ns) of every registered catalog."""
        rows = self.db.execute(
            "SELECT version, snapshot_seq, currency, first_seen_ns FROM price_versions ORDER BY first_seen_ns"
        )
        return [(str(v), int(s), str(c), int(t)) for v, s, c, t in rows]

    # -- HTTP validators -------------------------------------------------------------------------

    def validators(self, source: str) -> tuple[str | None, str | None]:
        rows = self.db.execute("SELECT etag, last_modified FROM price_sources WHERE source = ?", (source,))
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def set_validators(self, source: str, etag: str | None, last_modified: str | None) -> None:
        self.db.execute(
            "INSERT INTO price_sources (source, etag, last_modified, checked_at_ns) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (source) DO UPDATE SET etag = excluded.etag,"
            " last_modified = excluded.last_modified, checked_at_ns = excluded.checked_at_ns",
            (source, etag, last_modified, time.time_ns()),
        )


def current_catalog(url: str, pricing: PricingConfig) -> Catalog:
    """The catalog usage is priced with: the current approved data at ``url`` with the config's
    overrides, registered there; the bundled data where the ledger keeps nothing (``:memory:``)."""
    if not is_storable(url):
        return Catalog.bundled(overrides=pricing.overrides, currency=pricing.currency)
    with CatalogStore(url) as store:
        return store.catalog(store.current(), pricing)


def stored_pricer(url: str, config: Config, *, fall_back: bool = False) -> Pricer:
    """A pricer on the current stored catalog of the ledger at ``url``.

    ``fall_back`` (the in-process processor, which must not fail its host) prices with the
    bundled data when the store cannot be read, and says so in the log.
    """
    try:
        catalog = current_catalog(url, config.pricing)
    except Exception as exc:
        if not fall_back:
            raise
        _log.warning("otel-aibill: cannot read the stored price catalog (%s); using the bundled data", exc)
        catalog = Catalog.bundled(overrides=config.pricing.overrides, currency=config.pricing.currency)
    return Pricer(config.pricing, catalog=catalog)
