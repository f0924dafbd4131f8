"""The SQLite ledger backend: embedded, WAL, one writer connection, a read connection per thread.

``ledger.py`` is the ``Ledger`` facade; each other module is one concern's SQL (see its
docstring). What every backend decides the same way lives outside, in ``ledger/siblings.py``,
``ledger/checks.py`` and ``ledger/rows.py``.
"""

from __future__ import annotations

from otel_aibill.ledger.sqlite.ledger import SqliteLedger
from otel_aibill.ledger.sqlite.migrate import migrate, schema_version

__all__ = ["SqliteLedger", "migrate", "schema_version"]
