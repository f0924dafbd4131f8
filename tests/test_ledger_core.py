"""The backend-neutral ledger logic (``siblings.py``, ``checks.py``), with stored rows supplied
by a plain function instead of a database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from otel_aibill.ledger import Attribution, InvalidRowError
from otel_aibill.ledger.checks import (
    checked_attributions,
    checked_counts,
    checked_trace_customers,
    not_billable_totals,
    refused_export,
    utc_day,
)
from otel_aibill.ledger.rows import RESPONSE_BUCKET_NS
from otel_aibill.ledger.siblings import (
    ResponseLookup,
    StoredResponse,
    neighbour_buckets,
    response_keys,
    sibling_duplicates,
    unique_spans,
)
from test_ledger_support import T0, priced, trace_id


def _stored(*rows: StoredResponse) -> tuple[list[tuple[list[int], list[str]]], ResponseLookup]:
    asked: list[tuple[list[int], list[str]]] = []

    def lookup(buckets: list[int], response_ids: list[str]) -> list[StoredResponse]:
        asked.append((buckets, response_ids))
        return [r for r in rows if r[1] in buckets and r[3] in response_ids]

    return asked, lookup


def test_siblings_in_the_batch_and_stored_are_marked_with_the_first_ones_span() -> None:
    trace = trace_id()
    bucket = T0 // RESPONSE_BUCKET_NS
    stored = (7, bucket, "openai", "resp-old", trace, "stored-span", T0, None)
    batch = [
        priced(trace=trace, span="a", response_id="resp-new", start=T0),
        priced(trace=trace, span="b", response_id="resp-old", start=T0 + 5),
        priced(trace=trace, span="c", response_id="resp-new", start=T0 + 9),
        priced(trace=trace_id(), span="d", response_id="resp-new", start=T0),  # another trace
    ]
    asked, lookup = _stored(stored)
    duplicate_of, marked, already = sibling_duplicates(response_keys(batch, 1), len(batch), lookup)
    assert duplicate_of == [None, "stored-span", "a", None]
    assert (marked, already) == (2, 0)
    assert asked == [([bucket - 1, bucket, bucket + 1], ["resp-new", "resp-old"])]


def test_a_redelivered_duplicate_counts_as_stored_and_a_far_bucket_is_no_sibling() -> None:
    trace = trace_id()
    bucket = T0 // RESPONSE_BUCKET_NS
    original = (1, bucket, "openai", "r", trace, "first", T0, None)
    duplicate = (2, bucket, "openai", "r", trace, "second", T0 + 1, "first")
    again = priced(trace=trace, span="second", response_id="r", start=T0 + 1)
    later = priced(trace=trace, span="third", response_id="r", start=T0 + 3 * RESPONSE_BUCKET_NS)
    _, lookup = _stored(original, duplicate)
    result = sibling_duplicates(response_keys([again, later], 1), 2, lookup)
    assert result == (["first", None], 1, 1)


def test_rows_without_response_ids_never_ask_the_backend() -> None:
    asked, lookup = _stored()
    assert sibling_duplicates(response_keys([priced()], 1), 1, lookup) == ([None], 0, 0)
    assert asked == []


def test_unique_spans_drops_later_copies_of_a_span_with_a_response_id() -> None:
    row = priced(response_id="r1")
    other = priced(response_id="r2")
    rows, responses, repeated = unique_spans([row, other, row], 1)
    assert (rows, repeated) == ([row, other], 1)
    assert responses is not None and list(responses.indexes) == [0, 1]
    plain = [priced(), priced()]
    assert unique_spans(plain, 1) == (plain, None, 0)


def test_a_bad_response_id_is_named() -> None:
    bad = priced(response_id=42)
    with pytest.raises(InvalidRowError, match="response_id must be None or a string, got 42"):
        response_keys([bad], 1)


def test_neighbour_buckets() -> None:
    assert neighbour_buckets([5, 5, 9]) == [4, 5, 6, 8, 9, 10]


def test_checks_refuse_bad_input_and_keep_good() -> None:
    assert checked_trace_customers({"t": "acme"}) == {"t": "acme"}
    with pytest.raises(InvalidRowError, match="both must be non-empty strings"):
        checked_trace_customers({"t": ""})
    assert checked_counts({"no_usage": 2, "other": 0}) == {"no_usage": 2}
    with pytest.raises(InvalidRowError, match="non-negative int"):
        checked_counts({"no_usage": -1})
    assert not_billable_totals({"no_usage": 2}, 1, 0) == {"no_usage": 2, "duplicate_span": 1}
    assert utc_day(T0 + 1) == "2026-01-01"
    assert checked_attributions([Attribution("t", "s", "acme", Decimal("0.5"), "global")]) == [
        ("acme", "0.5", 500_000_000_000_000, "global", "t", "s")
    ]
    with pytest.raises(InvalidRowError, match="needs a customer"):
        checked_attributions([Attribution("t", "s", "", None, None)])
    with pytest.raises(TypeError, match=r"decimal\.Decimal"):
        checked_attributions([Attribution("t", "s", "acme", 0.5, None)])  # type: ignore[arg-type]
    assert refused_export([1, 2], {1, 2}, "b") is None
    error = refused_export([1, 2, 3], {2}, "b")
    assert error is not None and "[1, 3]" in str(error)
