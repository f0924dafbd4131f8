"""The export store's own storage on both backends: its schema versions, upgrades of stores
older releases left (with their data), refusal of newer ones, one exporter per database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from fakestripe import FakeStripe
from otel_aibill.db import SchemaTooNewError
from otel_aibill.errors import LedgerUnavailableError
from otel_aibill.stripe import ExportStore
from otel_aibill.stripe.store.schema import STORE
from pg_support import BASE_URL
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


def test_an_unreachable_postgres_store_is_a_retry_later_error() -> None:
    with pytest.raises(LedgerUnavailableError, match="export store's database"):
        ExportStore("postgresql://127.0.0.1:1/none?connect_timeout=2")


def test_a_postgres_store_recovers_when_its_connections_are_cut(pg_url: str) -> None:
    """Connections killed by the server (a restart, a failover): the next call fails as "retry
    later" or works, and the store goes on without being reopened; nothing written is lost."""
    name = f"store_cut_{os.getpid()}"
    store = ExportStore(f"{pg_url}&application_name={name}")
    try:
        store.create_batch("b1", 1, "v1", "cost")
        with psycopg.connect(BASE_URL, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                (name,),
            ).fetchone()
        assert cut is not None and cut[0] >= 1
        outcomes = []
        for _ in range(5):
            try:
                outcomes.append(store.staging_batches())
            except LedgerUnavailableError:
                outcomes.append(None)
        assert outcomes[-1] == ["b1"]
        store.create_batch("b2", 2, "v1", "cost")
        assert sorted(store.staging_batches()) == ["b1", "b2"]
    finally:
        store.close()
