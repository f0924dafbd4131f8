"""Liveness and readiness: a ledger that refuses writes makes the receiver not ready, not dead."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from otel_aibill.ledger import open_ledger
from otel_aibill.pipeline import Pipeline, Prepared
from otel_aibill.receiver.committer import CommitFailed, GroupCommitter
from otel_aibill.receiver.metrics import ReceiverMetrics
from otel_aibill.receiver.ops_app import build_ops_app
from otel_aibill.usage import SpanView

T0 = 1_764_000_000_000_000_000


class DiskFull:
    """The real pipeline, with a switch that makes its commits fail as SQLite does on a full disk."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.full = False

    def prepare(self, spans: Sequence[SpanView]) -> Prepared:
        return self.pipeline.prepare(spans)

    def commit(self, prepared: Prepared) -> Any:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return self.pipeline.commit(prepared)


def _spans(n: int) -> list[SpanView]:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
        "customer.id": "acme",
    }
    return [
        SpanView(f"{n:032x}", f"{n:016x}", "chat", T0, T0 + 1000, attrs)  # type: ignore[arg-type]
    ]


def test_readyz_follows_the_ledger_while_healthz_stays_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    sinks: list[DiskFull] = []

    def factory() -> Any:
        ledger = open_ledger(url)
        sinks.append(DiskFull(Pipeline(ledger)))
        return sinks[0], ledger.close

    committer = GroupCommitter(factory, ReceiverMetrics(), max_pending_spans=4)
    committer.start()
    app = build_ops_app(
        ReceiverMetrics(),
        lambda: {"ok": True},
        ready=lambda: {"ok": committer.not_ready() is None, "reason": committer.not_ready()},
    )
    web = TestClient(app)
    try:
        assert web.get("/readyz").status_code == 200
        committer.submit(committer.prepare(_spans(1))).result(10)

        sinks[0].full = True
        with pytest.raises(CommitFailed):
            committer.submit(committer.prepare(_spans(2))).result(10)
        ready = web.get("/readyz")
        assert ready.status_code == 503 and "commit failed" in ready.json()["reason"]
        assert web.get("/healthz").status_code == 200  # alive: a restart would not help

        # a failure long past is not held against the receiver forever (a balancer tries it again)
        now = time.monotonic()
        monkeypatch.setattr(time, "monotonic", lambda: now + committer.READY_AFTER_FAILURE_S + 1)
        assert web.get("/readyz").status_code == 200
        monkeypatch.undo()

        sinks[0].full = False
        committer.submit(committer.prepare(_spans(3))).result(10)
        assert web.get("/readyz").status_code == 200
    finally:
        committer.close()
