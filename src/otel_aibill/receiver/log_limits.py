"""One log line per kind of client misbehaviour per interval, not one per request.

A client sending garbage (an unparsable chunked body, say) makes the HTTP server log a warning
per request; at a few thousand requests a second that is the log. ``RateLimited`` lets the
first such line of an interval through, with the number of the same lines dropped before it.
"""

from __future__ import annotations

import logging
import threading
import time


class RateLimited(logging.Filter):
    def __init__(self, messages: tuple[str, ...], interval_s: float = 10.0) -> None:
        super().__init__()
        self._messages = messages
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = next((m for m in self._messages if message.startswith(m)), None)
        if key is None:
            return True
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._dropped[key] = self._dropped.get(key, 0) + 1
                return False
            self._last[key] = now
            dropped = self._dropped.pop(key, 0)
        record.exc_info = record.exc_text = None  # one line
        if dropped:
            record.msg = f"{message} ({dropped} more like it in the last {self._interval:g}s not logged)"
            record.args = ()
        return True


CLIENT_ERRORS = (
    "Invalid HTTP request received.",
    "Unsupported upgrade request.",
    "ASGI callable returned without completing response.",
)
"""uvicorn's per-request lines about what clients sent (the last one follows the first when the
app's reply to a request uvicorn already refused cannot be sent)."""


def limit_client_error_logs(logger_name: str = "uvicorn.error") -> None:
    """Rate-limit the HTTP server's client-error warnings (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RateLimited) for f in logger.filters):
        logger.addFilter(RateLimited(CLIENT_ERRORS))
