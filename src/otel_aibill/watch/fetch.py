"""Reading a price source: a file, or HTTP(S) with timeouts, a size limit and cache validators.

A source that is unreachable, slow, too large or answers with an error raises ``FetchError``
(retry later) and nothing is changed. ``If-None-Match`` / ``If-Modified-Since`` from the last
successful fetch make an unchanged feed a cheap 304.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from otel_aibill.errors import RetryLaterError

_CHUNK = 64 * 1024


class FetchError(RetryLaterError):
    """The source could not be read now; the catalog is untouched."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes | None  # None: not modified since the validators given
    etag: str | None = None
    last_modified: str | None = None


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def fetch(
    source: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout: float = 10.0,
    max_bytes: int = 32 * 1024 * 1024,
) -> Fetched:
    """The source's bytes (or "not modified"), within ``timeout`` seconds overall."""
    if not is_url(source):
        path = Path(source.removeprefix("file://"))
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise FetchError(f"{source} is {size:,} bytes, over the limit of {max_bytes:,}")
            return Fetched(path.read_bytes())
        except OSError as exc:
            raise FetchError(f"cannot read {source}: {exc}") from exc
    headers = {"Accept": "application/json, application/toml, */*"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + timeout
    limits = httpx.Timeout(timeout, connect=min(timeout, 5.0))
    try:
        with (
            httpx.Client(timeout=limits, follow_redirects=True) as client,
            client.stream("GET", source, headers=headers) as response,
        ):
            if response.status_code == 304:
                return Fetched(None, etag, last_modified)
            if response.status_code != 200:
                raise FetchError(f"{source} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{source} is {int(declared):,} bytes, over the limit of {max_bytes:,}")
            body = bytearray()
            for chunk in response.iter_bytes(_CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"{source} sent more than the limit of {max_bytes:,} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"{source} took longer than {timeout:g} s")
            return Fetched(bytes(body), response.headers.get("etag"), response.headers.get("last-modified"))
    except httpx.TimeoutException as exc:
        raise FetchError(f"{source} did not answer within {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot fetch {source}: {exc}") from exc
