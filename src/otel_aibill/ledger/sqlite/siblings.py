"""SQLite's lookup of stored rows for sibling detection (the decision is ``ledger/siblings.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from otel_aibill.ledger.siblings import StoredResponse
from otel_aibill.ledger.sqlite.sql import DIMS, chunks, marks


def stored_responses(
    conn: sqlite3.Connection, buckets: list[int], response_ids: list[str]
) -> Iterator[StoredResponse]:
    """The ``ResponseLookup`` of SQLite (``siblings.sibling_duplicates``).

    Equality probes on ``usage_response``: the WHERE names both index columns with ``=``/``IN``
    and nothing else about them, or the planner turns the lookup into a scan of whole buckets.
    """
    for chunk in chunks(response_ids):
        yield from conn.execute(
            "SELECT seq, resp_bucket, provider, response_id, trace_id, span_id, start_time_ns,"
            f" duplicate_of FROM usage_rows INDEXED BY usage_response {DIMS}"
            f" WHERE resp_bucket IN ({marks(len(buckets))}) AND response_id IN ({marks(len(chunk))})",
            [*buckets, *chunk],
        )
