"""Versioned schema: an ordered list of migrations and the pure logic that picks which to run.

Each backend keeps a ``schema_version`` table (one row per applied migration) and runs the
pending steps of its own dialect in one transaction when a ledger is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class Migration:
    """One schema step; ``backfill`` (given the connection) runs after its statements, in the
    same transaction, for data that SQL alone cannot derive."""

    version: int
    name: str
    statements: tuple[str, ...]
    backfill: Callable[[Any], object] | None = None


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer otel-aibill; refusing to touch it."""


def check_ordered(migrations: Sequence[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise AssertionError(
                f"migration {migration.name!r} has version {migration.version}, expected {expected}"
            )


def pending(current: int, migrations: Sequence[Migration], *, where: str = "the database") -> list[Migration]:
    """Migrations still to apply to a database at ``current`` (0 = empty)."""
    check_ordered(migrations)
    latest = len(migrations)
    if current > latest:
        raise SchemaTooNewError(
            f"{where} has ledger schema version {current}, but this otel-aibill only knows up to "
            f"version {latest}; upgrade otel-aibill to open it"
        )
    return list(migrations[current:])
