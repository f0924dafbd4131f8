"""Parse ledger URLs (``sqlite:///...``, ``postgresql://...``) into connection options (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode

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


@dataclass(slots=True, frozen=True)
class PostgresOptions:
    """How to open a PostgreSQL ledger.

    Every table the project owns lives in one PostgreSQL schema (``schema``, default ``aibill``),
    so a ledger can share a database with other applications and tests can use a schema each.
    ``conninfo`` is the URL without the options read here; libpq options (``sslmode``,
    ``connect_timeout``, ``application_name``...) stay in it and pass through.
    """

    conninfo: str
    schema: str = "aibill"
    pool_min: int = 1
    pool_max: int = 8

    @property
    def display(self) -> str:
        """The URL with any password replaced, for logs and messages."""
        return redact(self.conninfo)


_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_OWN_POSTGRES_OPTIONS = frozenset(("schema", "pool_min", "pool_max"))


def is_postgres_url(url: str) -> bool:
    return url.lower().startswith(_POSTGRES_SCHEMES)


def parse_postgres_url(url: str) -> PostgresOptions:
    """``postgresql://user[:password]@host[:port]/database``, plus optional ``schema=NAME``
    (a lowercase SQL identifier), ``pool_min=N`` and ``pool_max=N``; other query options are
    libpq's and are kept in ``conninfo``."""
    if not is_postgres_url(url):
        raise ValueError(f"not a PostgreSQL ledger URL (expected postgresql://...): {redact(url)!r}")
    base, _, query = url.partition("?")
    kept: list[tuple[str, str]] = []
    schema, pool_min, pool_max = "aibill", 1, 8
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key == "schema":
            schema = _identifier(value)
        elif key == "pool_min":
            pool_min = _non_negative_int(key, value)
        elif key == "pool_max":
            pool_max = _non_negative_int(key, value)
            if pool_max < 1:
                raise ValueError("pool_max must be at least 1")
        else:
            kept.append((key, value))
    if pool_min > pool_max:
        raise ValueError(f"pool_min ({pool_min}) is larger than pool_max ({pool_max})")
    conninfo = base if not kept else f"{base}?{urlencode(kept)}"
    return PostgresOptions(conninfo=conninfo, schema=schema, pool_min=pool_min, pool_max=pool_max)


def _identifier(value: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        raise ValueError(
            f"schema must be a lowercase SQL identifier (letters, digits, _; at most 63): {value!r}"
        )
    return value


def redact(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    return f"{scheme}://{user}{at}{host}{slash}{path}"
