"""Exact Decimal sums that SQLite can do with integers.

Amounts are stored as TEXT (full precision, the source of truth). Next to each, an amount with at
most ``SCALE`` decimals and magnitude below 10^9 is also stored as two integers:
``hi`` = whole micro-units (floor) and ``lo`` = the remaining 10^-15 units (0 <= lo < 10^9).
Integer ``sum()`` over those is exact and cannot overflow for any realistic group
(sum(lo) needs 9e9 rows); amounts that don't fit get NULL parts and are summed from their text in
Python. All arithmetic here runs in an unbounded context, so no sum is ever rounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation

SCALE = 15
_LO_UNITS = 10**9  # 10^-15 units per micro-unit
_LIMIT_DIGITS = 9  # amounts below 10^9 in magnitude
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact])
_ZERO = Decimal(0)


def split(amount: Decimal) -> tuple[int, int] | tuple[None, None]:
    """``(hi, lo)`` integer parts of ``amount``, or ``(None, None)`` when it doesn't fit exactly."""
    if not amount.is_finite() or amount.adjusted() >= _LIMIT_DIGITS:
        return None, None
    scaled = EXACT.scaleb(amount, SCALE)
    units = int(scaled)
    if units != scaled:
        return None, None
    hi, lo = divmod(units, _LO_UNITS)
    return hi, lo


def split_text(text: str) -> tuple[int, int] | tuple[None, None]:
    """``split`` of the amount whose storage text (``str(Decimal)``) is ``text``, by string work.

    The append path runs this for two amounts a row, so it avoids Decimal arithmetic: plain
    ``[-]whole.fraction`` texts are cut and joined; exponent notation takes the Decimal way.
    """
    whole, _, fraction = text.partition(".")
    digits = len(whole) - (whole[0] == "-")
    if len(fraction) > SCALE or digits > _LIMIT_DIGITS or "E" in text:
        return split(Decimal(text))
    hi, lo = divmod(int(whole + fraction.ljust(SCALE, "0")), _LO_UNITS)
    return hi, lo


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
