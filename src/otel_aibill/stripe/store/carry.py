"""The remainder carry: per (customer, meter, dimensions), the fraction of a unit not sent yet.

Written with the events that leave it (``batches.finalize``) and when a rejected customer's
events are taken back (``held.reject_customer``), always in the same transaction as those.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from otel_aibill.stripe.plan import CarryKey
from otel_aibill.stripe.store.engine import Cursor
from otel_aibill.stripe.store.records import dims_of, dims_text

_SELECT = "SELECT stripe_customer, event_name, dims, remainder FROM stripe_carry"


def read_carry(rows: list[tuple[str, str, str, str]]) -> dict[CarryKey, Decimal]:
    return {(c, e, dims_of(d)): Decimal(r) for c, e, d, r in rows}


def carry_of(cur: Cursor, stripe_customer: str) -> dict[CarryKey, Decimal]:
    return read_carry(cur.execute(f"{_SELECT} WHERE stripe_customer = ?", (stripe_customer,)).fetchall())


def put_carry(cur: Cursor, carry: Mapping[CarryKey, Decimal]) -> None:
    cur.executemany(
        "INSERT INTO stripe_carry (stripe_customer, event_name, dims, remainder) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (stripe_customer, event_name, dims) DO UPDATE SET remainder = excluded.remainder",
        [(c, e, dims_text(d), str(r)) for (c, e, d), r in carry.items()],
    )


ALL_CARRY = _SELECT
