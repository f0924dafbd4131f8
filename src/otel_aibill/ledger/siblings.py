"""Which rows of a batch a backend stores as billed, as duplicates, or not at all (pure; no SQL).

Two spans describe the same call when they share trace, provider and ``response_id`` (e.g. the
SDK's own span and an instrumentor's span). The first one stored is billed; later ones are
stored as its duplicates. "First" is deterministic: the earliest stored row, then batch order.
Siblings match when their response buckets (``RESPONSE_BUCKET_NS`` of start time) are at most one
apart, so siblings starting less than an hour apart always do.

A span sent twice (same start, trace and span id) is a redelivery, not a sibling: the backend's
unique key drops the second copy. Within one batch, copies that carry a response id are dropped
here first (``unique_spans``), or the second copy would look like a sibling of the first.

Backends only supply the stored rows that share a response id with the batch
(``ResponseLookup``); everything else is decided here, the same for every backend.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, compress, repeat
from operator import attrgetter, floordiv, is_not, itemgetter
from typing import Any, NamedTuple

from otel_aibill.ledger.rows import RESPONSE_BUCKET_NS, InvalidRowError, extend_params, to_params
from otel_aibill.records import attribute_reader
from otel_aibill.usage import PricedUsage

ResponseKey = tuple[str, str, str]  # provider, response_id, trace_id
SpanKey = tuple[int, str, str]  # start_time_ns, trace_id, span_id: a span's unique key

StoredResponse = tuple[int, int, str, str, str, str, int, str | None]
"""A stored row sharing a response id with the batch: seq, response bucket, provider,
response id, trace id, span id, start time, duplicate_of."""

ResponseLookup = Callable[[list[int], list[str]], Iterable[StoredResponse]]
"""The backend's lookup: every stored row whose response bucket is one of the (sorted) buckets
and whose response id is one of the (sorted) response ids, in any order."""


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


_USAGE = attrgetter("usage")
_RESPONSE_ID_OF = attrgetter("response_id")
_SPAN_OF = attrgetter("start_time_ns", "trace_id", "span_id")
_RESPONSE_FIELDS = attribute_reader("provider", "response_id", "trace_id", "span_id", "start_time_ns")
_FIELD_SPAN = itemgetter(4, 2, 3)  # of a _RESPONSE_FIELDS tuple: start, trace id, span id
_FIELD_SPAN_ID = itemgetter(3)
_FIELD_KEY = itemgetter(0, 1, 2)  # provider, response id, trace id (a ResponseKey)
_FIELD_START = itemgetter(4)
_FIELD_TEXTS = itemgetter(0, 1, 2, 3)
_ID_OF_KEY = itemgetter(1)
_UINT64 = struct.Struct("Q").pack
_JOIN = "".join  # TypeError unless every item is a str


class Responses(NamedTuple):
    """The rows of a batch that carry a response id, as parallel lists (no tuple a row beyond
    its fields): what sibling detection needs, before the rows' parameters are built."""

    indexes: Sequence[int]
    """Each one's position in the batch."""
    fields: list[tuple[Any, ...]]
    """Each one's provider, response id, trace id, span id and start (``_RESPONSE_FIELDS``)."""
    buckets: list[int]


def response_keys(rows: list[PricedUsage], now: int) -> Responses | None:
    """The ``Responses`` of ``rows``; None if no row has a response id. (In OTLP batches every
    row has one, so this is C-level calls over the whole batch.)"""
    usages = list(map(_USAGE, rows))
    response_ids = list(map(_RESPONSE_ID_OF, usages))
    missing = response_ids.count(None)
    if missing == len(response_ids):
        return None
    indexes: Sequence[int] = range(len(rows))
    if missing:
        mask = list(map(is_not, response_ids, repeat(None)))
        indexes, usages = list(compress(indexes, mask)), list(compress(usages, mask))
    fields = _RESPONSE_FIELDS(usages)
    try:
        all(map(_UINT64, map(_FIELD_START, fields)))
        buckets = list(map(floordiv, map(_FIELD_START, fields), repeat(RESPONSE_BUCKET_NS)))
        _JOIN(chain.from_iterable(map(_FIELD_TEXTS, fields)))
    except (TypeError, struct.error):  # a bad field: let the row's own checks name it
        for index, f in zip(indexes, fields, strict=True):
            to_params(rows[index], now)
            if type(f[1]) is not str:
                u = rows[index].usage
                raise InvalidRowError(
                    f"cannot store usage of span {u.trace_id}/{u.span_id}: response_id must be None or"
                    f" a string, got {f[1]!r}"
                ) from None
        raise
    return Responses(indexes, fields, buckets)


def first_of_each_span(rows: list[PricedUsage]) -> list[PricedUsage]:
    """``rows`` without the later copies of a span (same start, trace id and span id)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row, key in zip(rows, map(_SPAN_OF, map(_USAGE, rows)), strict=True):
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def unique_spans(rows: list[PricedUsage], now: int) -> tuple[list[PricedUsage], Responses | None, int]:
    """The rows to store, their ``Responses`` and how many later copies of a span were dropped.

    Only a batch with a response id seen on two rows of one span is rebuilt: copies without a
    response id are left to the backend's unique key. (Distinct span ids, the rule, are a quarter
    of the cost to tell of distinct span keys.)
    """
    responses = response_keys(rows, now)
    if (
        responses
        and len(set(map(_FIELD_SPAN_ID, responses.fields))) < len(responses.fields)
        and len(set(map(_FIELD_SPAN, responses.fields))) < len(responses.fields)
    ):
        try:
            unique = first_of_each_span(rows)
        except TypeError:  # an unhashable id: the row's checks name it
            extend_params([], rows, now, [0] * len(rows))
            raise
        return unique, response_keys(unique, now), len(rows) - len(unique)
    return rows, responses, 0


def neighbour_buckets(buckets: Iterable[int]) -> list[int]:
    """The buckets a sibling of a row in one of ``buckets`` can be in, sorted."""
    return sorted({b + d for b in set(buckets) for d in (-1, 0, 1)})


def stored_originals(
    stored_rows: Iterable[StoredResponse], wanted: set[ResponseKey]
) -> tuple[dict[ResponseKey, list[Original]], set[SpanKey]]:
    """The billed stored rows with a key in ``wanted``, and the span keys of every stored row."""
    stored: dict[ResponseKey, list[Original]] = {}
    stored_spans: set[SpanKey] = set()
    for seq, bucket, provider, response_id, trace_id, span_id, start, duplicate_of in stored_rows:
        stored_spans.add((start, trace_id, span_id))
        key = (provider, response_id, trace_id)
        if duplicate_of is None and key in wanted:
            stored.setdefault(key, []).append(Original((0, seq), bucket, span_id))
    return stored, stored_spans


def sibling_duplicates(
    responses: Responses | None, n: int, lookup: ResponseLookup
) -> tuple[list[str | None], int, int]:
    """``duplicate_of`` for each of the ``n`` rows (the span id of the row already billed for the
    same response, else None), the number of rows marked, and how many of those are stored already
    (a stored duplicate being redelivered is a duplicate span, not a new duplicate response).

    Most rows carry a response id no other row has: only the rows whose key is seen twice (in
    the batch or stored) go through ``find_duplicates``, picked out with C-level calls.
    """
    duplicate_of: list[str | None] = [None] * n
    if responses is None:
        return duplicate_of, 0, 0
    indexes, fields, buckets = responses
    keys = list(map(_FIELD_KEY, fields))
    wanted = set(keys)
    stored, stored_spans = stored_originals(
        lookup(neighbour_buckets(buckets), sorted(set(map(_ID_OF_KEY, wanted)))), wanted
    )
    if len(wanted) == len(keys) and not stored:
        return duplicate_of, 0, 0
    seen_twice = {key for key, count in Counter(keys).items() if count > 1}.union(stored)
    involved = list(compress(range(len(keys)), map(seen_twice.__contains__, keys)))
    candidates = [Candidate(indexes[i], keys[i], buckets[i], fields[i][3]) for i in involved]
    duplicates = find_duplicates(
        candidates, ((key, original) for key, originals in stored.items() for original in originals)
    )
    span_of = {indexes[i]: _FIELD_SPAN(fields[i]) for i in involved}
    already = 0
    for index, original in duplicates.items():
        duplicate_of[index] = original
        already += span_of[index] in stored_spans
    return duplicate_of, len(duplicates), already
