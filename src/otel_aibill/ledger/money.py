"""Exact Decimal sums that SQLite can do with integers.

Amounts are stored as TEXT (``str(Decimal)``: full precision, the source of truth). Next to each,
an amount with at most ``SCALE`` decimals and a magnitude below ``UNITS_LIMIT`` 10^-15 units
(about 9,000 currency units: any single LLM call) is also stored as one integer, its count of
10^-15 units. Sums split that into ``hi`` = whole micro-units (``units / 10^9``) and ``lo`` = the
rest (``units % 10^9``) with SQL's integer arithmetic, so integer ``sum()`` over them is exact and
cannot overflow for any realistic group (sum(lo) needs 9e9 rows). Amounts without units are
summed from their text in Python. All arithmetic here runs in an unbounded context, so no sum is
ever rounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation

SCALE = 15
UNITS_LIMIT = 9 * 10**18  # |units| below this fits SQLite's int64
_LO_UNITS = 10**9  # 10^-15 units per micro-unit
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact])
_ZERO = Decimal(0)
_PAD = tuple("0" * (SCALE - n) for n in range(SCALE + 1))


def units(text: str) -> int | None:
    """10^-15 units of the amount whose storage text (``str(Decimal)``) is ``text``, or None.

    The append path runs this for two amounts a row, so plain ``[-]whole.fraction`` texts are
    handled by string work alone (about a third of the cost of Decimal arithmetic); exponent
    notation (``str`` uses it below 1e-6) takes the Decimal way.
    """
    if "E" in text:
        return _units_of(Decimal(text))
    whole, _, fraction = text.partition(".")
    if len(fraction) > SCALE:
        return None
    n = int(whole + fraction + _PAD[len(fraction)])
    return n if -UNITS_LIMIT < n < UNITS_LIMIT else None


def _units_of(amount: Decimal) -> int | None:
    if not amount.is_finite():
        return None
    scaled = EXACT.scaleb(amount, SCALE)
    n = int(scaled)
    return n if n == scaled and -UNITS_LIMIT < n < UNITS_LIMIT else None


def sum_hi(col: str, where: str = "") -> str:
    """SQL: the summed whole micro-units of ``{col}_units`` (of the rows matching ``where``)."""
    value = f"{col}_units / {_LO_UNITS}"
    return f"sum(CASE WHEN {where} THEN {value} END)" if where else f"sum({value})"


def sum_lo(col: str, where: str = "") -> str:
    """SQL: the summed rest (10^-15 units below a micro-unit) of ``{col}_units``."""
    value = f"{col}_units % {_LO_UNITS}"
    return f"sum(CASE WHEN {where} THEN {value} END)" if where else f"sum({value})"


def unfit(col: str) -> str:
    """SQL: the amount text where it has no units (for ``group_concat``), else NULL."""
    return f"CASE WHEN {col}_units IS NULL THEN {col} END"


def join(hi_sum: int, lo_sum: int) -> Decimal:
    """The exact amount that the summed parts represent."""
    return EXACT.add(EXACT.scaleb(Decimal(hi_sum), -6), EXACT.scaleb(Decimal(lo_sum), -SCALE))


def add(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.add(a, b)


def exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for amount in amounts:
        total = EXACT.add(total, amount)
    return total


def to_text(amount: Decimal | None, what: str) -> str | None:
    """Decimal to its storage text; refuses floats, NaN and infinities instead of storing junk."""
    if amount is None:
        return None
    if not isinstance(amount, Decimal):
        raise TypeError(f"{what} must be a decimal.Decimal, got {type(amount).__name__} {amount!r}")
    if not amount.is_finite():
        raise ValueError(f"{what} must be a finite Decimal, got {amount}")
    return str(amount)
