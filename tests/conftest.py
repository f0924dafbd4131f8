"""Fixtures shared by the suite: ledger and export store URLs for every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_support import fresh_schema

BACKENDS = ("sqlite", "postgres")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL ledger URL with a schema of its own."""
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger URL on each backend (tests using it run once per backend)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    else:
        with fresh_schema() as url:
            yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL for the Stripe export store, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/aibill.db"
    else:
        with fresh_schema("s") as url:
            yield url
