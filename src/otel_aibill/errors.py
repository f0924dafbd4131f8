"""The two kinds of failure every caller must tell apart: bad data, and try again later.

A span, row or request that is refused for what it contains fails the same way on every retry:
it is reported (OTLP partial success, a log line, a held row) and the rest goes on. A dependency
that is down or busy (the ledger's database, Stripe) may work on the next attempt: the caller
keeps the data and retries, and a receiver answers with a retryable status. Backends translate
their drivers' exceptions into these, so the pipeline decides on one tree, not on each driver's.
"""

from __future__ import annotations


class AibillError(Exception):
    """Base of otel-aibill's own exceptions."""


class BadDataError(AibillError, ValueError):
    """The input itself is refused; retrying the same input fails again.

    A ``ValueError`` too, so code that validates with ``ValueError`` keeps working.
    """


class RetryLaterError(AibillError):
    """A dependency is unavailable or overloaded; the same input may succeed later."""


class LedgerUnavailableError(RetryLaterError):
    """The ledger's database cannot be reached or refused the transaction for its own reasons."""


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the data's fault (refuse it, go on) rather than the system's (retry).

    Besides ``BadDataError``, a ``ValueError`` or ``TypeError`` raised while converting a value
    (text a driver cannot encode, a field of the wrong type) is the data's; a ``RetryLaterError``
    never is.
    """
    if isinstance(exc, RetryLaterError):
        return False
    return isinstance(exc, (BadDataError, ValueError, TypeError))
