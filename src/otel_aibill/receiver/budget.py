"""A bound in bytes on the request bodies the receiver holds between reading them and their commit.

The committer's queue is bounded in spans, but a span can be large: what bounds memory is the
bytes of the (decompressed) bodies that are being read, decoded, prepared or waiting for their
commit. Each request takes its bytes as it reads them and gives them back when it is answered;
a request that would go over the budget is told to retry later (HTTP 429, gRPC UNAVAILABLE), as
when the queue is full. With nothing held, one request is always let through whatever its size.
"""

from __future__ import annotations

import threading


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes; False (nothing taken) when that would go over the limit."""
        with self._lock:
            if self._held and self._held + n > self.limit:
                return False
            self._held += n
            return True

    def give_back(self, n: int) -> None:
        with self._lock:
            self._held -= n
