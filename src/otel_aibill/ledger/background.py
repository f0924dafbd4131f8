"""A daemon thread that does one kind of background work when asked (the rollup fold, the
checkpoint): started by the first request, requests made while it works coalesce into one."""

from __future__ import annotations

import threading
from collections.abc import Callable


class OnRequest:
    """The thread and its state, guarded by ``_cond``; subclasses run ``_run`` on it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._requested = False
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Ask for the work to run soon; never waits for it."""
        with self._cond:
            if self._stopping:
                return
            self._requested = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def close(self) -> None:
        """Let the work in progress finish and end the thread; a request not started is dropped."""
        with self._cond:
            self._stopping = True
            self._requested = False
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _wait_idle(self, idle: Callable[[], bool], timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def _run(self) -> None:
        raise NotImplementedError
