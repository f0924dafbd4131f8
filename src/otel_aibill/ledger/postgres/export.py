"""Export batches on PostgreSQL: a row joins one batch, whichever exporter claims it first.

One ``UPDATE ... RETURNING`` guarded by "exportable, or already in this batch": a second
exporter claiming the same rows waits for the first's row locks, then finds them taken, and
its claim fails as a whole (the transaction is rolled back).
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_aibill.ledger.postgres.database import Connection
from otel_aibill.ledger.postgres.schema import EXPORTABLE


def assign(conn: Connection, seqs: Sequence[int], batch_id: str) -> None:
    if not batch_id:
        raise ValueError("batch_id must not be empty")
    wanted = sorted(set(seqs))
    if not wanted:
        return
    claimed = {
        seq
        for (seq,) in conn.execute(
            "UPDATE usage_rows SET export_batch = %s WHERE seq = ANY(%s::bigint[])"
            f" AND (export_batch = %s OR ({EXPORTABLE})) RETURNING seq",
            (batch_id, wanted, batch_id),
        )
    }
    refused = [s for s in dict.fromkeys(seqs) if s not in claimed]
    if refused:
        raise ValueError(
            f"cannot assign rows {refused[:10]}{'...' if len(refused) > 10 else ''} to export batch"
            f" {batch_id!r}: missing, not exportable, or in another batch"
        )
