"""Which rows of a batch are siblings of an already billed call (pure).

Two spans describe the same call when they share trace, provider and ``response_id`` (e.g. the
SDK's own span and an instrumentor's span). The first one stored is billed; later ones are
duplicates. "First" is deterministic: the earliest stored row, then batch order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

ResponseKey = tuple[str, str, str]  # provider, response_id, trace_id


class Candidate(NamedTuple):
    """A row of the batch that carries a response id. (Named tuples: a batch makes hundreds of
    these, and a frozen dataclass costs about three times as much to make.)"""

    position: int  # in the batch
    key: ResponseKey
    bucket: int
    span_id: str


class Original(NamedTuple):
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
        this = Original(order=(1, cand.position), bucket=cand.bucket, span_id=cand.span_id)
        known = originals.get(cand.key)
        if known is None:  # the common case: the first row seen with its key
            originals[cand.key] = [this]
            continue
        first: Original | None = None
        for o in known:
            if -1 <= o.bucket - cand.bucket <= 1 and (first is None or o.order < first.order):
                first = o
        if first is None:
            known.append(this)
        elif first.span_id != cand.span_id:
            duplicates[cand.position] = first.span_id
    return duplicates
