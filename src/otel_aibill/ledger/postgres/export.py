"""Export batches on PostgreSQL: a row joins one batch, whichever exporter claims it first.

One ``UPDATE ... RETURNING`` guarded by "exportable, or already in this batch": a second
exporter claiming the same rows waits for the first's row locks, then finds them taken, and
its claim fails as a whole (the transaction is rolled back).
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_aibill.ledger.checks import refused_export
from otel_aibill.ledger.postgres.database import Connection
from otel_aibill.ledger.postgres.schema import EXPORTABLE


def assign(conn: Connection, wanted: Sequence[int], batch_id: str) -> None:
    """Claim ``wanted`` (``checks.unique_seqs``) for ``batch_id``; raises ``ValueError`` if any
    row cannot be claimed (the caller's transaction then rolls back the others)."""
    if not wanted:
        return
    claimed = {
        seq
        for (seq,) in conn.execute(
            "UPDATE usage_rows SET export_batch = %s WHERE seq = ANY(%s::bigint[])"
            f" AND (export_batch = %s OR ({EXPORTABLE})) RETURNING seq",
            (batch_id, sorted(wanted), batch_id),
        )
    }
    error = refused_export(wanted, claimed, batch_id)
    if error is not None:
        raise error
