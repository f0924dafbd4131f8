"""The ledger: durable, idempotent store of priced usage (see ``base.Ledger``).

``open_ledger(url)`` picks the backend from the URL scheme.
"""

from __future__ import annotations

from otel_aibill.db import SchemaTooNewError
from otel_aibill.ledger.base import (
    GROUP_FIELDS,
    AppendBatch,
    AppendResult,
    Attribution,
    Customer,
    Ledger,
    LedgerRow,
    UsageQuery,
    UsageSummary,
)
from otel_aibill.ledger.rows import InvalidRowError
from otel_aibill.ledger.sqlite import SqliteLedger
from otel_aibill.ledger.summary import PENDING_CUSTOMER
from otel_aibill.ledger.url import is_postgres_url, redact

__all__ = [
    "GROUP_FIELDS",
    "PENDING_CUSTOMER",
    "AppendBatch",
    "AppendResult",
    "Attribution",
    "Customer",
    "InvalidRowError",
    "Ledger",
    "LedgerRow",
    "SchemaTooNewError",
    "SqliteLedger",
    "UsageQuery",
    "UsageSummary",
    "open_ledger",
]


def open_ledger(url: str) -> Ledger:
    """Open (creating and migrating as needed) the ledger at ``url``.

    ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``, with optional
    ``?synchronous=normal`` (default ``full``: durable when ``append`` returns), ``busy_timeout_ms``,
    ``cache_size_kib`` and ``rollup_fold=inline`` (default ``background``: the summary rollup is
    folded on a worker thread, see ``folding.py``).

    ``postgresql://user[:password]@host[:port]/database`` (or ``postgres://``), with optional
    ``schema=NAME`` (default ``aibill``), ``pool_min``/``pool_max`` and any libpq option
    (``sslmode``, ``connect_timeout``...). A database that cannot be reached raises
    ``LedgerUnavailableError``; a URL that cannot be used raises ``ValueError``.
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        return SqliteLedger(url)
    if is_postgres_url(url):
        try:
            from otel_aibill.ledger.postgres.ledger import PostgresLedger
        except ImportError as exc:
            raise ValueError(
                f"a PostgreSQL ledger needs the postgres extra (pip install 'otel-aibill[postgres]'): {exc}"
            ) from exc
        return PostgresLedger(url)
    raise ValueError(
        f"unsupported ledger URL {redact(url)!r}: expected sqlite:///path.db or postgresql://host/database"
    )
