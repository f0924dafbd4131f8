"""Folding the rollup tail beside appends instead of inside them.

A fold's cost is scanning and sorting ``FOLD_EVERY`` rows by group; done in the appending
transaction, every ``FOLD_EVERY``-th append paid for it while holding the write lock. Here a
worker thread computes the fold on a read snapshot of its own connection (SQLite sorts with the
GIL released, so on another core), then writes the few hundred group sums under the write lock.
If the snapshot went stale (``rollup.apply_fold``), the fold is done in place in that same write
transaction, as before. Until a fold lands, summaries read the tail rows, so nothing waits for it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from otel_aibill.ledger import rollup

_log = logging.getLogger(__name__)

Connect = Callable[[], sqlite3.Connection]
Write = Callable[[], AbstractContextManager[sqlite3.Connection]]


class FoldWorker:
    """One daemon thread, started on the first request; requests while it works coalesce."""

    def __init__(self, connect: Connect, write: Write) -> None:
        self._connect = connect
        self._write = write
        self._cond = threading.Condition()
        self._requested = False
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.folds = 0
        self.stale = 0

    def request(self) -> None:
        with self._cond:
            if self._stopping:
                return
            self._requested = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-aibill-rollup-fold", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no fold is requested or running (True), or ``timeout`` seconds passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._requested or self._busy), timeout)

    def close(self) -> None:
        """Finish the fold in progress (a requested one that has not started is dropped: the
        rows stay in the tail and the next open folds them)."""
        with self._cond:
            self._stopping = True
            self._requested = False
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._requested or self._stopping)
                    if self._stopping:
                        return
                    self._requested = False
                    self._busy = True
                try:
                    if conn is None:
                        conn = self._connect()
                        rollup.register_functions(conn)
                    self._fold_once(conn)
                except Exception:  # the tail stays in place and summaries read it: log, go on
                    _log.exception("otel-aibill: folding the usage rollup failed; will retry")
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            if conn is not None:
                conn.close()

    def _fold_once(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        try:
            computed = rollup.compute_fold(conn, at_least=rollup.FOLD_EVERY)
            if computed is None:
                return
        except sqlite3.OperationalError:  # e.g. a count that overflows: the write path decides
            computed = None
        finally:
            conn.execute("COMMIT")
        with self._write() as writer:
            if computed is not None and rollup.apply_fold(writer, computed):
                self.folds += 1
                return
            self.stale += 1
            rollup.fold_quietly(writer, at_least=rollup.FOLD_EVERY)
