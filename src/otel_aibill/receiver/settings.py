"""Receiver settings: the ``[receiver]`` table of the config file, overridden by CLI flags and env."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from otel_aibill.config import Config

MIB = 1024 * 1024
AUTH_TOKEN_ENV = "OTEL_AIBILL_AUTH_TOKEN"
COMMIT_DELAY_ENV = "OTEL_AIBILL_RECEIVER_COMMIT_DELAY_MS"
"""Testing hook: extra milliseconds added to every ledger commit, to simulate a slow ledger."""


class ReceiverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    grpc_port: int = Field(default=4317, ge=0, le=65535)
    http_port: int = Field(default=4318, ge=0, le=65535)
    ui_port: int = Field(default=8318, ge=0, le=65535)
    auth_token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_message_bytes: int = Field(default=64 * MIB, ge=1024)
    """Limit on a request's decompressed size (OTLP recommends 64 MiB)."""
    max_inflight_bytes: int = Field(default=256 * MIB, ge=1024)
    """Decompressed request bytes held from reading to commit; beyond, clients retry later."""
    max_pending_spans: int = Field(default=65_536, ge=1)
    """Spans accepted but not yet committed; beyond this, clients are told to retry later."""
    max_batch_spans: int = Field(default=8_192, ge=1)
    """Upper bound of spans per group commit."""
    retry_after_seconds: float = Field(default=1.0, gt=0)
    grpc_workers: int = Field(default=32, ge=1)
    """gRPC handler threads: bounds concurrent in-flight gRPC exports (they wait for the commit)."""
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    commit_delay_ms: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _tls_pair(self) -> ReceiverSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        return self


def receiver_settings(config: Config, **overrides: Any) -> ReceiverSettings:
    """Config ``[receiver]``, then env (auth token, commit delay), then explicit overrides (not None)."""
    extra = config.model_extra or {}
    data: dict[str, Any] = dict(extra.get("receiver") or {})
    if token := os.environ.get(AUTH_TOKEN_ENV):
        data["auth_token"] = token
    if delay := os.environ.get(COMMIT_DELAY_ENV):
        data["commit_delay_ms"] = float(delay)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return ReceiverSettings.model_validate(data)
