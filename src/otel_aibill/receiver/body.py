"""Request bodies: incremental decompression with a size limit on the *decompressed* bytes.

A 64 KiB gzip bomb must not become gigabytes in memory, so output is produced chunk by chunk with
``max_length`` and the request is refused as soon as the limit is crossed.
"""

from __future__ import annotations

import zlib


class BodyTooLarge(Exception):
    pass


class BadEncoding(ValueError):
    pass


class BodyReader:
    """Feed raw chunks, get the decompressed body; ``encoding`` is a Content-Encoding value."""

    def __init__(self, encoding: str, limit: int) -> None:
        encoding = encoding.strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise BadEncoding(f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)")
        self._encoding = encoding
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []
        self._raw = 0
        self._decomp: zlib._Decompress | None = None
        if encoding in ("gzip", "x-gzip"):
            self._decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._deflate_pending = encoding == "deflate"

    @property
    def size(self) -> int:
        """Decompressed bytes so far."""
        return self._size

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._raw += len(chunk)
        if self._raw > self._limit:  # even the compressed body is over the limit
            raise BodyTooLarge
        if self._deflate_pending:
            # "deflate" means zlib-wrapped (RFC 9110), but some clients send raw deflate.
            zlib_header = len(chunk) >= 2 and chunk[0] & 0x0F == 8 and (chunk[0] << 8 | chunk[1]) % 31 == 0
            self._decomp = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
            self._deflate_pending = False
        if self._decomp is None:
            self._add(chunk)
            return
        data = chunk
        try:
            while data:
                out = self._decomp.decompress(data, self._limit - self._size + 1)
                self._add(out)
                data = self._decomp.unconsumed_tail
                if self._decomp.eof:
                    if self._decomp.unused_data or data:
                        raise BadEncoding("trailing data after the compressed body")
                    break
        except zlib.error as exc:
            raise BadEncoding(f"cannot decompress {self._encoding} body: {exc}") from exc

    def _add(self, out: bytes) -> None:
        self._size += len(out)
        if self._size > self._limit:
            raise BodyTooLarge
        self._parts.append(out)

    def finish(self) -> bytes:
        if self._decomp is not None and not self._decomp.eof:
            raise BadEncoding(f"truncated {self._encoding} body")
        if self._deflate_pending:  # empty deflate body
            raise BadEncoding("empty deflate body")
        return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)


def read_all(data: bytes, encoding: str, limit: int) -> bytes:
    reader = BodyReader(encoding, limit)
    reader.feed(data)
    return reader.finish()
