"""The fake providers' prompt cache: which prompt prefixes were seen, so a repeat is a cache read."""

from __future__ import annotations

import threading
from collections.abc import Iterable


class PromptCache:
    """A set of prefix fingerprints. Entries never expire: tests want deterministic hits."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, fingerprint: object) -> bool:
        with self._lock:
            return fingerprint in self._seen

    def add(self, fingerprints: Iterable[str]) -> None:
        with self._lock:
            self._seen.update(fingerprints)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
