"""Schema migrations for every table the project owns, on SQLite and PostgreSQL.

A ``Component`` (the ledger, the Stripe export store, ...) is a version table and an ordered
list of ``Migration`` s, each with the steps of both backends; ``sqlite.migrate`` and
``postgres.migrate`` apply the pending ones in one transaction and refuse a newer database.
"""

from __future__ import annotations

from otel_aibill.db.migration import Component, Migration, SchemaTooNewError, Step, pending

__all__ = ["Component", "Migration", "SchemaTooNewError", "Step", "pending"]
