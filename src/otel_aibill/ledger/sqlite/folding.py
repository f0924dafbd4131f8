"""Folding the rollup tail beside appends instead of inside them.

A fold's cost is scanning and sorting ``FOLD_EVERY`` rows by group; done in the appending
transaction, every ``FOLD_EVERY``-th append paid for it while holding the write lock. Here a
worker thread computes the fold on a read snapshot of its own connection (SQLite sorts with the
GIL released), at the lowest CPU priority, so it runs on the time that appends leave idle instead
of taking it from them. The result, a few thousand group sums, is written by the next append in
its own transaction (``take``), so the worker never holds the write lock at low priority while an
append waits for it; if no append comes soon, the worker writes it itself. If the snapshot went
stale (``rollup.apply_fold``), the fold is done in place in that write transaction, as before.
Until a fold lands, summaries read the tail rows, so nothing waits for it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from otel_aibill.ledger.sqlite import rollup

_log = logging.getLogger(__name__)

Connect = Callable[[], sqlite3.Connection]
Write = Callable[[], AbstractContextManager[sqlite3.Connection]]


def _lower_priority() -> None:
    """Make the calling thread yield the CPU to every other thread of the process (Linux: the
    nice value of a thread id; elsewhere that call names a process, so nothing is done).

    A fold only has to finish before the next one is due, while appends are waited for: at
    normal priority, on a machine with few cores, the fold's sort competes with the appending
    thread and the statement thread for the same cores (measured: about a quarter of the append
    rate on 2 cores); at the lowest priority it runs on the time they leave idle."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError as exc:  # not allowed here (e.g. a sandbox): folds just run at normal priority
        _log.debug("otel-aibill: could not lower the rollup fold thread's priority: %s", exc)


_HANDOVER_S = 0.5
"""How long a computed fold waits for an append to write it before the worker does."""


class FoldWorker:
    """One daemon thread, started on the first request; requests while it works coalesce."""

    def __init__(self, connect: Connect, write: Write) -> None:
        self._connect = connect
        self._write = write
        self._cond = threading.Condition()
        self._requested = False
        self._busy = False
        self._ready: rollup.Fold | None = None
        self._in_flight = False  # taken by an append that has not committed yet
        self._apply_now = False
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

    def take(self) -> rollup.Fold | None:
        """A computed fold for the caller to write in its write transaction (``write_fold``);
        the caller calls ``taken_done`` once that transaction has ended, either way."""
        with self._cond:
            ready, self._ready = self._ready, None
            if ready is not None:
                self._in_flight = True
                self._cond.notify_all()
            return ready

    def taken_done(self) -> None:
        """The transaction that wrote a taken fold ended: the next fold may start (one computed
        before it committed would find the same tail and be refused as stale)."""
        with self._cond:
            self._in_flight = False
            self._cond.notify_all()

    def write_fold(self, conn: sqlite3.Connection, computed: rollup.Fold) -> None:
        """Write a computed fold in the caller's write transaction; a stale one is done in place.
        Sums too large for the rollup leave the tail in place (``rollup.fold_quietly``) rather
        than failing the caller's transaction."""
        conn.execute("SAVEPOINT fold_write")
        try:
            written = rollup.apply_fold(conn, computed)
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
            conn.execute("ROLLBACK TO fold_write")
            conn.execute("RELEASE fold_write")
            _log.warning("usage rollup not updated (%s); summaries read the rows instead", exc)
            return
        conn.execute("RELEASE fold_write")
        if written:
            self.folds += 1
            return
        self.stale += 1
        rollup.fold_quietly(conn, at_least=rollup.FOLD_EVERY)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no fold is requested, running or waiting to be written (True), or ``timeout``
        seconds passed (False). A computed fold is written now instead of waiting for an append."""
        with self._cond:
            self._apply_now = True
            self._cond.notify_all()
            try:
                return self._cond.wait_for(
                    lambda: not (self._requested or self._busy or self._in_flight), timeout
                )
            finally:
                self._apply_now = False

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
        _lower_priority()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: (self._requested and not self._in_flight) or self._stopping)
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
                        self._ready = None
                        self._busy = False
                        self._cond.notify_all()
        finally:
            if conn is not None:
                conn.close()

    def _idle(self) -> bool:
        return not (self._requested or self._busy or self._in_flight)

    def _handed_over(self) -> bool:
        return self._ready is None or self._apply_now or self._stopping

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
        if computed is not None:
            with self._cond:  # hand it to the next append; unless one takes it soon, write it here
                self._ready = computed
                self._cond.notify_all()
                self._cond.wait_for(self._handed_over, _HANDOVER_S)
                computed, self._ready = self._ready, None
                if computed is None or self._stopping:
                    return
        with self._write() as writer:
            if computed is None:
                self.stale += 1
                rollup.fold_quietly(writer, at_least=rollup.FOLD_EVERY)
            else:
                self.write_fold(writer, computed)
