"""A real PostgreSQL for the tests: a fresh schema per test, dropped afterwards.

The server is ``OTEL_AIBILL_TEST_POSTGRES`` (default: the local one, database ``test``); CI
makes sure it runs. A test that needs it fails, never skips, when it cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

BASE_URL = os.environ.get("OTEL_AIBILL_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


def with_schema(schema: str, base: str = BASE_URL) -> str:
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


@contextmanager
def fresh_schema(tag: str = "t") -> Iterator[str]:
    """A ledger URL whose schema does not exist yet (the ledger creates it); dropped on exit."""
    schema = f"{tag}_{uuid.uuid4().hex[:12]}"
    try:
        yield with_schema(schema)
    finally:
        drop_schema(schema)


def drop_schema(schema: str, base: str = BASE_URL) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
