"""The PostgreSQL ledger backend (needs the ``postgres`` extra: psycopg 3 and its pool).

``PostgresLedger`` is imported on first use, so the schema module (plain SQL text, read by
``ledger/schema.py``) loads without psycopg.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PostgresLedger"]


def __getattr__(name: str) -> Any:
    if name == "PostgresLedger":
        from otel_aibill.ledger.postgres.ledger import PostgresLedger

        return PostgresLedger
    raise AttributeError(name)
