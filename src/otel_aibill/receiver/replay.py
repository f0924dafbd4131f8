"""Read OTLP trace files written by the Collector's ``file`` exporter (or by hand) into spans.

Formats: OTLP/JSON lines (the exporter's default: one ExportTraceServiceRequest per line) and
protobuf (``format: proto``: each message preceded by its length as a 4-byte big-endian unsigned
integer), either of them gzip-compressed as a whole file. Files are streamed message by message,
so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import gzip
import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from otel_aibill.receiver.otlp_common import Decoded, DecodeError
from otel_aibill.receiver.otlp_json import decode_json
from otel_aibill.receiver.otlp_protobuf import decode_protobuf

FileFormat = Literal["auto", "json", "proto"]
_LENGTH = struct.Struct(">I")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ReplayError(ValueError):
    pass


@dataclass(slots=True)
class FileStats:
    messages: int = 0
    spans: int = 0
    rejected: int = 0
    bad_messages: int = 0
    errors: list[str] = field(default_factory=list)


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """Return (reader, raw file); progress is measured on the raw file's position."""
    raw = path.open("rb")
    head = raw.peek(4)[:4] if isinstance(raw, io.BufferedReader) else b""
    if head.startswith(_ZSTD_MAGIC):
        raw.close()
        raise ReplayError(f"{path}: zstd-compressed files are not supported; decompress them first (zstd -d)")
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


def _detect(reader: BinaryIO) -> Literal["json", "proto"]:
    head = reader.peek(64) if isinstance(reader, io.BufferedReader | gzip.GzipFile) else b""
    return "json" if head.lstrip()[:1] == b"{" else "proto"


def messages(reader: BinaryIO, fmt: Literal["json", "proto"]) -> Iterator[bytes]:
    """Yield raw request messages: JSON lines, or length-prefixed protobuf messages."""
    if fmt == "json":
        for line in reader:
            if line.strip():
                yield line
        return
    while True:
        prefix = reader.read(4)
        if not prefix:
            return
        if len(prefix) < 4:
            raise ReplayError("truncated length prefix at the end of the file")
        (size,) = _LENGTH.unpack(prefix)
        body = reader.read(size)
        if len(body) < size:
            raise ReplayError("truncated message at the end of the file")
        yield body


def read_file(
    path: Path,
    fmt: FileFormat,
    on_decoded: Callable[[Decoded], None],
    on_progress: Callable[[int], None] = lambda _: None,
) -> FileStats:
    """Decode every message of ``path``, handing each to ``on_decoded``; bad messages are counted."""
    stats = FileStats()
    reader, raw = _open(path)
    with reader, raw:
        kind = _detect(reader) if fmt == "auto" else fmt
        decode = decode_json if kind == "json" else decode_protobuf
        for message in messages(reader, kind):
            stats.messages += 1
            try:
                decoded = decode(message)
            except DecodeError as exc:
                stats.bad_messages += 1
                if len(stats.errors) < 5:
                    stats.errors.append(f"message {stats.messages}: {exc}")
                continue
            stats.spans += len(decoded.spans)
            stats.rejected += decoded.rejected
            if decoded.errors and len(stats.errors) < 5:
                stats.errors.append(f"message {stats.messages}: {decoded.error_message}")
            on_decoded(decoded)
            on_progress(raw.tell())
    return stats
