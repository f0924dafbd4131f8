"""Reading token counts from attribute values, strictly.

A token count that cannot be read exactly must not be billed as a guess, so every
value that is present but unusable raises :class:`InvalidUsage` naming its attribute.

Accepted: ``int`` (not ``bool``), integral finite ``float`` (``12.0``: some SDKs and JSON
decoders hand out doubles) and ASCII digit strings (``"12"``: OTLP/JSON encodes int64 as
strings and a receiver may pass them through). Rejected: negatives, fractions, NaN/inf,
``bool``, sequences, other strings, and anything above :data:`MAX_TOKENS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..usage import MAX_TEXT_CHARS, is_unicode

MAX_TOKENS = 10**12
"""More tokens than any single call can plausibly use: larger values are corrupt data."""


class InvalidUsage(ValueError):
    """A token attribute is present but not a usable count."""


def token_value(key: str, value: object) -> int:
    """The exact non-negative token count in ``value``, or raise naming ``key``."""
    if type(value) is int:
        count = value
    elif isinstance(value, bool):
        raise InvalidUsage(f"{key}: boolean is not a token count")
    elif isinstance(value, int):  # int subclasses other than bool (e.g. IntEnum)
        count = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidUsage(f"{key}: {value!r} is not a whole number")
        count = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 13:
            raise InvalidUsage(f"{key}: {value[:40]!r} is not a token count")
        count = int(text)
    else:
        raise InvalidUsage(f"{key}: {type(value).__name__} is not a token count")
    if count < 0:
        raise InvalidUsage(f"{key}: negative token count {count}")
    if count > MAX_TOKENS:
        raise InvalidUsage(f"{key}: {count} exceeds {MAX_TOKENS}")
    return count


def first_count(attrs: Mapping[str, object], keys: tuple[str, ...]) -> int | None:
    """The count under the first of ``keys`` present in ``attrs``; None when none is."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return token_value(key, value)
    return None


def first_str(attrs: Mapping[str, object], keys: tuple[str, ...]) -> str | None:
    """The first non-empty, valid-Unicode string value of at most ``MAX_TEXT_CHARS`` among
    ``keys``; other values are ignored, so a model name that is not text makes the usage
    unpriced (visible), not unstorable, and a huge one cannot fill caches and ledger columns."""
    for key in keys:
        value = attrs.get(key)
        # isascii() first: is_unicode's own fast path, without a call for the common case
        if (
            isinstance(value, str)
            and (value := value.strip())
            and len(value) <= MAX_TEXT_CHARS
            and (value.isascii() or is_unicode(value))
        ):
            return value
    return None
