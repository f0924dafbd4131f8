"""Versioned schemas as data: migrations, the components that own them, and which to run (pure).

Every table the project owns belongs to one *component* (the ledger, the Stripe export store,
...), which records the migrations applied to a database in a version table of its own. A
migration carries the steps of each backend: the same version means the same logical schema on
SQLite and PostgreSQL, though the SQL differs (and a backend whose earlier step already created
the final shape has nothing to do). The runners (``sqlite.py``, ``postgres.py``) apply pending
migrations in one transaction and refuse a database newer than the code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from otel_aibill.errors import AibillError

_log = logging.getLogger("otel_aibill.db")

Step = str | Callable[[Any], object]
"""A SQL statement, or a function given the connection (SQLite) or cursor (PostgreSQL), run in
the migration's transaction, for data that SQL alone cannot derive."""


@dataclass(slots=True, frozen=True)
class Migration:
    """One schema version: its steps on SQLite and on PostgreSQL, run in order."""

    version: int
    name: str
    sqlite: tuple[Step, ...]
    postgres: tuple[Step, ...] = ()


@dataclass(slots=True, frozen=True)
class Component:
    """A set of tables versioned together, in ``version_table`` (one row per applied migration)."""

    name: str
    version_table: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        check_ordered(self.migrations)

    @property
    def latest(self) -> int:
        return len(self.migrations)


class SchemaTooNewError(AibillError, RuntimeError):
    """The database was written by a newer otel-aibill; refusing to touch it."""


def check_ordered(migrations: Sequence[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise AssertionError(
                f"migration {migration.name!r} has version {migration.version}, expected {expected}"
            )


def pending(
    current: int,
    component: Component,
    *,
    target: int | None = None,
    where: str = "the database",
) -> list[Migration]:
    """Migrations still to apply to a database at ``current`` (0 = empty), up to ``target``."""
    if current > component.latest:
        raise SchemaTooNewError(
            f"{where} has {component.name} schema version {current}, but this otel-aibill only "
            f"knows up to version {component.latest}; upgrade otel-aibill to open it"
        )
    last = component.latest if target is None else min(target, component.latest)
    return list(component.migrations[current:last])


def apply_pending(
    component: Component,
    current: int,
    steps: Callable[[Migration], tuple[Step, ...]],
    run: Callable[[Step], object],
    record: Callable[[Migration], object],
    *,
    target: int | None = None,
    where: str = "the database",
) -> int:
    """Run each pending migration's ``steps`` through ``run``, then ``record`` it; the version
    reached. The caller holds the transaction (and the lock) around all of it."""
    for migration in pending(current, component, target=target, where=where):
        if current > 0:  # some steps rewrite every row of a big database: say what is going on
            _log.info(
                "migrating %s to %s schema version %d: %s",
                where,
                component.name,
                migration.version,
                migration.name,
            )
        for step in steps(migration):
            run(step)
        record(migration)
        current = migration.version
    return current
