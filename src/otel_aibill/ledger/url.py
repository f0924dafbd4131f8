"""Parse ``sqlite:///...`` ledger URLs into connection options (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

Synchronous = Literal["off", "normal", "full", "extra"]
_SYNCHRONOUS: tuple[Synchronous, ...] = ("off", "normal", "full", "extra")
MEMORY = ":memory:"


@dataclass(slots=True, frozen=True)
class SqliteOptions:
    """How to open a SQLite ledger.

    ``synchronous`` defaults to FULL: in WAL mode NORMAL may lose the last commits on power loss,
    and the OTLP receiver acknowledges a request only after ``append`` returns, so an acknowledged
    span must already be on disk. ``?synchronous=normal`` suits the in-process processor, where a
    lost tail is no worse than the spans still queued in memory.
    """

    path: str
    synchronous: Synchronous = "full"
    busy_timeout_ms: int = 10_000
    cache_size_kib: int = 65_536
    background_fold: bool = True
    """Fold the summary rollup on a worker thread (``folding.py``) instead of inside appends."""

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY


def parse_sqlite_url(url: str) -> SqliteOptions:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``, plus
    optional ``?synchronous=full|normal|extra|off&busy_timeout_ms=N&cache_size_kib=N`` and
    ``rollup_fold=background|inline``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a SQLite ledger URL (expected sqlite:///path.db): {url!r}")
    rest, _, query = url[len(prefix) :].partition("?")
    if not rest:
        raise ValueError(f"SQLite ledger URL has no path: {url!r}")
    options = SqliteOptions(path=rest)
    synchronous = options.synchronous
    busy = options.busy_timeout_ms
    cache = options.cache_size_kib
    background = options.background_fold
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key == "synchronous":
            lowered = value.lower()
            if lowered not in _SYNCHRONOUS:
                raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}: {value!r}")
            synchronous = _SYNCHRONOUS[_SYNCHRONOUS.index(lowered)]
        elif key == "busy_timeout_ms":
            busy = _non_negative_int(key, value)
        elif key == "cache_size_kib":
            cache = _non_negative_int(key, value)
        elif key == "rollup_fold":
            if value.lower() not in ("background", "inline"):
                raise ValueError(f"rollup_fold must be background or inline: {value!r}")
            background = value.lower() == "background"
        else:
            raise ValueError(f"unknown SQLite ledger URL option {key!r} in {url!r}")
    return SqliteOptions(
        path=rest,
        synchronous=synchronous,
        busy_timeout_ms=busy,
        cache_size_kib=cache,
        background_fold=background,
    )


def _non_negative_int(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"{key} must be a non-negative integer: {value!r}")
    return number
