"""Executing a write transaction's statements on a thread of their own.

An append is two kinds of work: building each row's parameters (Python, holding the GIL) and
SQLite inserting them (C, which the ``sqlite3`` module runs with the GIL released). Done in turn,
one core idles while the other works. With a ``Stepper``, the appending thread hands a group of
rows' statement to this thread and builds the next group's parameters while SQLite inserts the
last one, on another core.

The hand-over waits until this thread has started the statement: binding the parameters needs
the GIL, and a thread that only asked for it would wait until the builder blocked, which undoes
the overlap. Statements still run one at a time, in order, on the caller's connection and inside
the caller's transaction; the caller holds the write lock throughout and only touches the
connection again once ``Running.result`` has returned.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any


class Running:
    """One statement handed to the ``Stepper``."""

    __slots__ = ("conn", "done", "error", "params", "rowcount", "sql", "started")

    def __init__(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
        self.conn = conn
        self.sql = sql
        self.params = params
        self.started = threading.Event()
        self.done = threading.Event()
        self.rowcount = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        self.started.set()
        try:
            self.rowcount = self.conn.execute(self.sql, self.params).rowcount
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc
        finally:
            self.params = ()
            self.done.set()

    def result(self) -> int:
        """The statement's row count once it has finished; its exception if it failed."""
        self.done.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.rowcount


class Stepper:
    """A daemon thread, started on first use, that runs one handed-over statement at a time."""

    def __init__(self, name: str = "otel-aibill-ledger-writer") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Running | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Running:
        """Hand over a statement; returns once it has started. Wait for it with ``result``
        before the next ``start`` or any other use of ``conn``."""
        job = Running(conn, sql, params)
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._jobs.put(job)
        job.started.wait()
        return job

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            self._jobs.put(None)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run()
