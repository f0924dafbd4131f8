"""The lowest CPU priority for the ledger's background threads (pure OS call, no state)."""

from __future__ import annotations

import logging
import os
import sys
import threading

_log = logging.getLogger(__name__)


def lower_priority(what: str) -> None:
    """Make the calling thread yield the CPU to every other thread of the process (Linux: the
    nice value of a thread id; elsewhere that call names a process, so nothing is done).

    Background work (a rollup fold, a checkpoint) only has to finish before it is due again,
    while appends are waited for: at normal priority, on a machine with few cores, it competes
    with the appending thread and the statement thread for the same cores (measured for the
    fold: about a quarter of the append rate on 2 cores); at the lowest priority it runs on the
    time they leave idle."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError as exc:  # not allowed here (e.g. a sandbox): the work just runs at normal priority
        _log.debug("otel-aibill: could not lower the %s thread's priority: %s", what, exc)
