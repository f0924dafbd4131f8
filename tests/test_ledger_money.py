"""Exact amounts in SQL: the integer units stored beside each amount text, and the sums."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_aibill.ledger import money

amounts = st.builds(
    lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
    st.integers(0, 1),
    st.lists(st.integers(0, 9), min_size=1, max_size=24),
    st.integers(-30, 6),
)


@settings(max_examples=500, deadline=None)
@given(amount=amounts)
def test_units_are_exact_and_present_where_the_amount_fits(amount: Decimal) -> None:
    text = money.to_text(amount, "cost")
    assert text is not None
    units = money.units(text)
    scaled = money.EXACT.scaleb(amount, money.SCALE)
    representable = scaled == scaled.to_integral_value() and abs(scaled) < money.UNITS_LIMIT
    if units is not None:
        assert money.EXACT.scaleb(Decimal(units), -money.SCALE) == amount
        assert abs(units) < money.UNITS_LIMIT
    else:  # summed from its text instead: it does not fit, or its text has too many decimals
        digits_written = len(text.partition(".")[2]) if "E" not in text else 0
        assert not representable or digits_written > money.SCALE


def test_edges() -> None:
    assert money.units("-0.000000000000001") == -1
    assert money.units("1E-15") == 1
    assert money.units("7.5E-8") == 75_000_000
    assert money.units("1E-16") is None
    assert money.units("0.1234567890123456") is None  # 16 decimals
    assert money.units("0.1234567890123450") is None  # the text's own 16 decimals, though exact
    assert money.units("8999.999999999999999") == 8_999_999_999_999_999_999
    assert money.units("9000") is None  # would pass int64 in sums of one row's parts
    assert money.units("1E+3") == 10**18
    assert money.units("12") == 12 * 10**15


@pytest.fixture(scope="module")
def conn() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE t (amount TEXT, amount_units INTEGER)")
    yield c
    c.close()


@settings(max_examples=100, deadline=None)
@given(values=st.lists(amounts, min_size=1, max_size=40))
def test_sql_sums_plus_text_sums_are_exact(conn: sqlite3.Connection, values: list[Decimal]) -> None:
    conn.execute("DELETE FROM t")
    texts = [money.to_text(v, "cost") or "" for v in values]
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(t, money.units(t)) for t in texts])
    hi, lo, unfit = conn.execute(
        f"SELECT {money.sum_hi('amount')}, {money.sum_lo('amount')},"
        f" group_concat({money.unfit('amount')}, ' ') FROM t"
    ).fetchone()
    total = money.join(hi or 0, lo or 0)
    total = money.add(total, money.exact_sum(Decimal(x) for x in (unfit or "").split()))
    assert total == money.exact_sum(values)
