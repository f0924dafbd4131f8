"""Optional bearer-token check, shared by the gRPC and HTTP receivers."""

from __future__ import annotations

import hmac


def bearer_ok(expected: str | None, authorization: str | None) -> bool:
    """True when no token is configured, or ``authorization`` is ``Bearer <token>`` (constant time)."""
    if not expected:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), expected.encode())
