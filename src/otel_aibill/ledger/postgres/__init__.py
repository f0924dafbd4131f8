"""The PostgreSQL ledger backend (needs the ``postgres`` extra: psycopg 3 and its pool)."""

from otel_aibill.ledger.postgres.ledger import PostgresLedger

__all__ = ["PostgresLedger"]
