"""Copying the write-ahead log into the database file beside appends instead of inside them.

In WAL mode a commit only appends pages to the log. SQLite copies them into the database file
(a checkpoint) in the commit that finds the log past ``wal_autocheckpoint`` pages: that append
pays for copying every page written since the last checkpoint and for syncing the file, with the
write lock held. Here a thread of its own, at the lowest CPU priority, runs a PASSIVE checkpoint
after appends (one never blocks a writer or a reader, and copies what it can), so most pages are
copied while the next appends go on. The commit that crosses the limit still checkpoints, as
before, so the log keeps its size, but it only has the last pages left to copy.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from otel_aibill.ledger.background import OnRequest
from otel_aibill.ledger.priority import lower_priority

_log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.1
"""Least time between two checkpoints: each one syncs the database file, which appends coming
every few milliseconds need not pay for every time."""


class Checkpointer(OnRequest):
    """The checkpoint's thread (``background.py``); ``request`` it after an append commits. One
    requested when the ledger closes is dropped: the writer's own checkpoints copy those pages."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        super().__init__("otel-aibill-checkpoint")
        self._connect = connect
        self.checkpoints = 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no checkpoint is requested or running (True), or ``timeout`` seconds (False)."""
        return self._wait_idle(lambda: not (self._requested or self._busy), timeout)

    def _run(self) -> None:
        lower_priority("checkpoint")
        conn: sqlite3.Connection | None = None
        last = float("-inf")
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._requested or self._stopping)
                    if self._stopping:
                        return
                    wait = last + MIN_INTERVAL_S - time.monotonic()
                    if wait > 0 and self._cond.wait_for(lambda: self._stopping, wait):
                        return
                    self._requested = False
                    self._busy = True
                try:
                    last = time.monotonic()
                    if conn is None:
                        conn = self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:  # the writer's own checkpoints still copy the log: log, go on
                    _log.exception("otel-aibill: checkpointing the ledger's log failed; will retry")
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            if conn is not None:
                conn.close()
