"""Which rows of a batch are siblings of an already billed call (pure).

Two spans describe the same call when they share trace, provider and ``response_id`` (e.g. the
SDK's own span and an instrumentor's span). The first one stored is billed; later ones are
duplicates. "First" is deterministic: the earliest stored row, then batch order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ResponseKey = tuple[str, str, str]  # provider, response_id, trace_id


@dataclass(slots=True, frozen=True)
class Candidate:
    """A row of the batch that carries a response id."""

    index: int  # position in the batch
    key: ResponseKey
    bucket: int
    span_id: str


@dataclass(slots=True, frozen=True)
class Original:
    """A stored (or earlier-in-batch) row that is billed for its response id."""

    order: tuple[int, int]  # (0, seq) for stored rows, (1, batch index) for rows of this batch
    bucket: int
    span_id: str


def find_duplicates(
    candidates: Iterable[Candidate], stored: Iterable[tuple[ResponseKey, Original]]
) -> dict[int, str]:
    """Map batch index -> span id of the original it duplicates.

    Originals match when their buckets are at most one apart. A candidate whose own span is the
    original (a redelivery) is not a sibling duplicate; redelivery is detected by the span key.
    """
    originals: dict[ResponseKey, list[Original]] = {}
    for key, original in stored:
        originals.setdefault(key, []).append(original)
    duplicates: dict[int, str] = {}
    for cand in candidates:
        known = originals.setdefault(cand.key, [])
        matches = [o for o in known if abs(o.bucket - cand.bucket) <= 1]
        if not matches:
            known.append(Original(order=(1, cand.index), bucket=cand.bucket, span_id=cand.span_id))
            continue
        first = min(matches, key=lambda o: o.order)
        if first.span_id != cand.span_id:
            duplicates[cand.index] = first.span_id
    return duplicates
