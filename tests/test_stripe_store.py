"""The export store's own storage on both backends: its schema versions, upgrades of stores
older releases left (with their data), refusal of newer ones, one exporter per database."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakestripe import FakeStripe
from otel_aibill.db import SchemaTooNewError
from otel_aibill.stripe import ExportStore
from otel_aibill.stripe.store.schema import STORE
from test_stripe_export import Harness, make_rows, settings, store_execute


def test_a_fresh_store_is_at_the_latest_version(store_url: str) -> None:
    store = ExportStore(store_url)
    assert store.schema_version == STORE.latest == 4
    store.close()
    again = ExportStore(store_url)  # reopening applies nothing twice
    assert again.schema_version == STORE.latest
    assert again.held() == [] and again.events() == []
    again.close()


def test_a_newer_store_is_refused_untouched(store_url: str) -> None:
    store = ExportStore(store_url)
    store_execute(
        store, "INSERT INTO stripe_schema_version (version, name, applied_at_ns) VALUES (9, 'x', 0)"
    )
    store.close()
    with pytest.raises(SchemaTooNewError, match=r"Stripe export store schema version 9.*up to version 4"):
        ExportStore(store_url)
    with pytest.raises(SchemaTooNewError):  # still 9: nothing was changed
        ExportStore(store_url)


def test_a_version_2_store_is_upgraded_with_its_events_and_held_rows(tmp_path: Path) -> None:
    """As the release before event membership left it: no ``stripe_event_row``, held rows in
    ``stripe_dead_letter``, a version table of versions only."""
    with FakeStripe() as fake:
        h = Harness(tmp_path, fake, settings())
        h.add(make_rows(int(fake.clock()), n=40))
        h.settle()
        members = {e.identifier: h.store.event_members(e.identifier) for e in h.store.events()}
        held, carry = h.store.held(), h.store.carry()
        assert members and all(members.values()) and held
        for statement in (
            "DROP TABLE stripe_event_row",
            "ALTER TABLE stripe_held RENAME TO stripe_dead_letter",
            "DROP INDEX stripe_held_state",
            "CREATE INDEX stripe_dead_letter_state ON stripe_dead_letter (state)",
            "DROP TABLE stripe_schema_version",
            "CREATE TABLE stripe_schema_version (version INTEGER NOT NULL)",
            "INSERT INTO stripe_schema_version (version) VALUES (1), (2)",
        ):
            store_execute(h.store, statement)
        h.store.close()

        again = ExportStore(h.url)
        assert again.schema_version == 4
        assert {i: again.event_members(i) for i in members} == members  # derived from batch rows
        assert again.held() == held
        assert again.carry() == carry
        h.store = again
        h.settle()  # and the export goes on from there
        h.check()


def test_one_exporter_per_database(store_url: str) -> None:
    first, second = ExportStore(store_url), ExportStore(store_url)
    try:
        assert first.acquire_lease("a", 1000, 60) == 1060
        assert second.acquire_lease("b", 1001, 60) is None
        assert first.acquire_lease("a", 1030, 60) == 1090  # renewed
        first.release_lease("a")
        assert second.acquire_lease("b", 1031, 60) == 1091
        assert first.acquire_lease("a", 1032, 60) is None
        second.release_lease("b")
    finally:
        first.close()
        second.close()


_HOLDER = """
import sys, time
from otel_aibill.stripe import ExportStore
store = ExportStore(sys.argv[1])
assert store.acquire_lease("holder", 0, 10**9) is not None
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_exporter_does_not_keep_the_postgres_lease(pg_url: str) -> None:
    """The lease is the holder's session: it ends when the process does, however it died, with
    no expiry to wait for."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
    store = ExportStore(pg_url)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert store.acquire_lease("me", 0, 60) is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        for _ in range(200):  # the server notices the closed connection at once, or nearly
            if store.acquire_lease("me", 0, 60) is not None:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the lease of a killed exporter was never released")
    finally:
        holder.kill()
        store.close()


_OPENER = """
import sys
from otel_aibill.stripe import ExportStore
print(ExportStore(sys.argv[1]).schema_version)
"""


def test_processes_opening_one_new_postgres_store_at_once(pg_url: str) -> None:
    openers = [
        subprocess.Popen([sys.executable, "-c", _OPENER, pg_url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in openers]
    assert [p.returncode for p in openers] == [0] * 4
    assert outputs == ["4"] * 4
