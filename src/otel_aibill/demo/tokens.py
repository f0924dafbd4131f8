"""Deterministic token counting for the fake providers.

Real tokenizers are neither installed nor needed: tests only need counts that are stable,
plausible (about four characters a token, like English text on real models) and computable
from the request, so expected usage can be derived without a network or a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and separators, as in OpenAI's own counting recipe
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>


def count_text(text: str) -> int:
    """Tokens of a piece of text: ceil(len / 4), and at least one for non-empty text."""
    return -(-len(text) // CHARS_PER_TOKEN)


def text_of(content: object) -> str:
    """The text in a message ``content`` (a string, a list of content parts, or anything else)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(part) for part in content)
    if isinstance(content, dict):
        for key in ("text", "content", "input_text", "output_text"):
            if key in content:
                return text_of(content[key])
        return ""
    return "" if content is None else json.dumps(content, sort_keys=True)


def fingerprint(parts: Iterable[object]) -> str:
    """A stable hash of a prompt prefix, the key of the fake prompt caches."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def round_down(value: int, block: int) -> int:
    return value - value % block
