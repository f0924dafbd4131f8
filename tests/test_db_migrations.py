"""The one migration mechanism (``otel_aibill.db``) on both backends: fresh databases, upgrades
with data, refusal of newer databases, rollback of a failing step, concurrent openers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from otel_aibill.db import Component, Migration, SchemaTooNewError, pending
from otel_aibill.db import postgres as db_postgres
from otel_aibill.db import sqlite as db_sqlite
from otel_aibill.ledger.url import is_postgres_url, parse_postgres_url


def _double(conn: Any) -> None:
    """A data step: the same code on both backends, through ``execute``."""
    conn.execute("UPDATE item SET twice = 2 * n")


WIDGETS = Component(
    "widget",
    "widget_version",
    (
        Migration(
            1,
            "items",
            ("CREATE TABLE item (n INTEGER PRIMARY KEY)",),
            ("CREATE TABLE item (n integer PRIMARY KEY)",),
        ),
        Migration(
            2,
            "items twice",
            ("ALTER TABLE item ADD COLUMN twice INTEGER", _double),
            ("ALTER TABLE item ADD COLUMN twice integer", _double),
        ),
    ),
)


class Db:
    """A raw connection to a test database, the way each backend's runner takes it."""

    def __init__(self, url: str) -> None:
        self.url = url
        if is_postgres_url(url):
            opts = parse_postgres_url(url)
            self.schema: str | None = opts.schema
            self.pg: psycopg.Connection[Any] | None = psycopg.connect(opts.conninfo, autocommit=True)
            self.lite: sqlite3.Connection | None = None
        else:
            self.schema, self.pg = None, None
            self.lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)

    def migrate(self, component: Component, target: int | None = None) -> int:
        if self.pg is not None:
            assert self.schema is not None
            return db_postgres.migrate(self.pg, component, self.schema, target=target)
        assert self.lite is not None
        return db_sqlite.migrate(self.lite, component, target=target)

    def version(self, component: Component) -> int:
        if self.pg is not None:
            assert self.schema is not None
            with self.pg.cursor() as cur:
                return db_postgres.version_of(cur, self.schema, component)
        assert self.lite is not None
        return db_sqlite.version_of(self.lite, component)

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.pg is not None:
            with self.pg.cursor() as cur:
                cur.execute(f'SET search_path TO "{self.schema}"')
                return cur.execute(query.encode()).fetchall()
        assert self.lite is not None
        return self.lite.execute(query).fetchall()

    def run(self, statement: str) -> None:
        self.rows(statement) if self.pg is None else self._pg_run(statement)

    def _pg_run(self, statement: str) -> None:
        assert self.pg is not None
        with self.pg.cursor() as cur:
            cur.execute(f'SET search_path TO "{self.schema}"')
            cur.execute(statement.encode())

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
        if self.lite is not None:
            self.lite.close()


@contextmanager
def database(url: str) -> Iterator[Db]:
    db = Db(url)
    try:
        yield db
    finally:
        db.close()


def test_a_fresh_database_gets_every_migration_once(ledger_url: str) -> None:
    with database(ledger_url) as db:
        assert db.version(WIDGETS) == 0
        assert db.migrate(WIDGETS) == 2
        assert db.migrate(WIDGETS) == 2  # nothing applied twice
        assert db.rows("SELECT version, name FROM widget_version ORDER BY version") == [
            (1, "items"),
            (2, "items twice"),
        ]


def test_an_older_database_is_upgraded_with_its_data(ledger_url: str) -> None:
    with database(ledger_url) as db:
        assert db.migrate(WIDGETS, target=1) == 1
        db.run("INSERT INTO item (n) VALUES (1), (5)")
        assert db.migrate(WIDGETS) == 2
        assert db.rows("SELECT n, twice FROM item ORDER BY n") == [(1, 2), (5, 10)]


def test_a_newer_database_is_refused_untouched(ledger_url: str) -> None:
    with database(ledger_url) as db:
        db.migrate(WIDGETS)
        db.run("INSERT INTO widget_version VALUES (3, 'from the future', 0)")
        older = Component("widget", "widget_version", WIDGETS.migrations)
        with pytest.raises(SchemaTooNewError, match=r"widget schema version 3.*only knows up to version 2"):
            db.migrate(older)
        assert db.version(WIDGETS) == 3


def test_a_failing_step_leaves_the_database_as_it_was(ledger_url: str) -> None:
    broken = Component(
        "widget",
        "widget_version",
        (
            *WIDGETS.migrations[:1],
            Migration(
                2,
                "broken",
                ("CREATE TABLE ok_so_far (x INTEGER)", "THIS IS NOT SQL"),
                ("CREATE TABLE ok_so_far (x integer)", "THIS IS NOT SQL"),
            ),
        ),
    )
    with database(ledger_url) as db:
        db.migrate(WIDGETS, target=1)
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.SyntaxError)):
            db.migrate(broken)
        assert db.version(WIDGETS) == 1
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
            db.rows("SELECT * FROM ok_so_far")


def test_components_are_versioned_apart(ledger_url: str) -> None:
    gadgets = Component(
        "gadget",
        "gadget_version",
        (
            Migration(
                1, "gadgets", ("CREATE TABLE gadget (g INTEGER)",), ("CREATE TABLE gadget (g integer)",)
            ),
        ),
    )
    with database(ledger_url) as db:
        assert db.migrate(WIDGETS, target=1) == 1
        assert db.migrate(gadgets) == 1
        assert (db.version(WIDGETS), db.version(gadgets)) == (1, 1)
        assert db.migrate(WIDGETS) == 2


def test_a_version_table_of_only_versions_is_widened(tmp_path: Any) -> None:
    """The export store's version table held only ``version`` before this runner."""
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("CREATE TABLE widget_version (version INTEGER NOT NULL)")
    conn.execute("CREATE TABLE item (n INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO widget_version (version) VALUES (1)")
    conn.execute("INSERT INTO item (n) VALUES (3)")
    assert db_sqlite.migrate(conn, WIDGETS) == 2
    assert conn.execute("SELECT version, name FROM widget_version ORDER BY version").fetchall() == [
        (1, ""),
        (2, "items twice"),
    ]
    assert conn.execute("SELECT twice FROM item").fetchall() == [(6,)]


_RACER = """
import sys, psycopg
from otel_aibill.db import Component, Migration
from otel_aibill.db import postgres
slow = Component("widget", "widget_version", (
    Migration(1, "items", (), ("CREATE TABLE item (n integer PRIMARY KEY)", "SELECT pg_sleep(0.3)")),
    Migration(2, "one item", (), ("INSERT INTO item (n) VALUES (1)",)),
))
with psycopg.connect(sys.argv[1]) as conn:
    print(postgres.migrate(conn, slow, sys.argv[2]))
"""


def test_two_processes_migrating_one_postgres_schema_at_once(pg_url: str) -> None:
    """Both start before either finished: one migrates, the other waits and finds it done.

    Without the lock both would create the schema and the table (one fails), and both would
    insert the item (a duplicate key).
    """
    opts = parse_postgres_url(pg_url)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, opts.conninfo, opts.schema], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in racers]
    assert [p.returncode for p in racers] == [0, 0, 0]
    assert outputs == ["2", "2", "2"]
    with database(pg_url) as db:
        assert db.rows("SELECT n FROM item") == [(1,)]
        assert db.rows("SELECT version FROM widget_version ORDER BY version") == [(1,), (2,)]


def test_pending_is_ordered_and_checked() -> None:
    steps = Component("c", "c_version", (Migration(1, "a", ()), Migration(2, "b", ()), Migration(3, "c", ())))
    assert [m.name for m in pending(1, steps)] == ["b", "c"]
    assert [m.name for m in pending(0, steps, target=2)] == ["a", "b"]
    assert pending(3, steps) == []
    with pytest.raises(AssertionError, match="expected 2"):
        Component("c", "c_version", (Migration(1, "a", ()), Migration(3, "c", ())))
    with pytest.raises(SchemaTooNewError):
        pending(4, steps)
