"""Read OTLP trace files written by the Collector's ``file`` exporter (or by hand) into spans.

Formats: OTLP/JSON lines (the exporter's default: one ExportTraceServiceRequest per line) and
protobuf (``format: proto``: each message preceded by its length as a 4-byte big-endian unsigned
integer), either of them gzip-compressed as a whole file. Files are streamed message by message,
so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import gzip
import io
import json
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
MAX_ERRORS = 5
"""How many bad messages of a file are described; all of them are counted."""


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


def messages(reader: BinaryIO, fmt: Literal["json", "proto"]) -> Iterator[tuple[str, bytes | str]]:
    """Yield (where, raw request) pairs: JSON lines, or length-prefixed protobuf messages.

    ``where`` names the message for error reports: ``line N`` for JSON (blank lines are skipped
    but still counted), ``message N`` for protobuf. A JSON file whose first line is not a whole
    object (``{`` alone, as ``jq`` or ``json.dumps(indent=...)`` write it) is read as one or more
    pretty-printed documents instead of JSON lines.
    """
    if fmt == "json":
        yield from _json_messages(reader)
        return
    number = 0
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
        number += 1
        yield f"message {number}", body


def _json_messages(reader: BinaryIO) -> Iterator[tuple[str, bytes | str]]:
    lines = iter(reader)
    number = 0
    for line in lines:
        number += 1
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.endswith(b"}"):  # the start of a pretty-printed document
            yield from _json_documents(line + b"".join(lines), number)
            return
        yield f"line {number}", line
        break
    for line in lines:
        number += 1
        if line.strip():
            yield f"line {number}", line


def _json_documents(data: bytes, first_line: int) -> Iterator[tuple[str, bytes | str]]:
    """Whole JSON documents one after another; held in memory, as such files are small."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        yield f"line {first_line}", data  # let the decoder report it
        return
    decoder = json.JSONDecoder()
    pos, line = 0, first_line
    while True:
        start = len(text) - len(text[pos:].lstrip())
        if start == len(text):
            return
        line += text.count("\n", pos, start)
        try:
            _, end = decoder.raw_decode(text, start)
        except ValueError:
            yield f"line {line}", text[start:]  # the decoder reports what is wrong; nothing follows
            return
        yield f"line {line}", text[start:end]
        line += text.count("\n", start, end)
        pos = end


def read_file(
    path: Path,
    fmt: FileFormat,
    on_decoded: Callable[[Decoded], None],
    on_progress: Callable[[int], None] = lambda _: None,
) -> FileStats:
    """Decode every message of ``path``, handing each to ``on_decoded``.

    A message that cannot be decoded does not stop the file: it is counted in ``bad_messages``
    and the first ``MAX_ERRORS`` are described (with their line or message number) in ``errors``.
    """
    stats = FileStats()
    reader, raw = _open(path)
    with reader, raw:
        kind = _detect(reader) if fmt == "auto" else fmt
        decode = decode_json if kind == "json" else decode_protobuf
        for where, message in messages(reader, kind):
            stats.messages += 1
            try:
                decoded = decode(message) if isinstance(message, bytes) else decode_json(message)
            except DecodeError as exc:
                stats.bad_messages += 1
                if len(stats.errors) < MAX_ERRORS:
                    stats.errors.append(f"{where}: {exc}")
                continue
            stats.spans += len(decoded.spans)
            stats.rejected += decoded.rejected
            if decoded.errors and len(stats.errors) < MAX_ERRORS:
                stats.errors.append(f"{where}: {decoded.error_message}")
            on_decoded(decoded)
            on_progress(raw.tell())
    return stats
