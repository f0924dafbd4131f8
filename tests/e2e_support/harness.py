"""Run the instrumented subprocesses and compute what they should have billed.

The expected usage comes from what the fake provider answered (its exchange log), converted
to the canonical accounting (input = total prompt including cache reads and writes; output
includes reasoning); the expected cost is ``genai_prices.calc_price`` on that usage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

from genai_prices import Usage, calc_price

from otel_aibill.demo import Exchange

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("runner.py")
COMPAT_RUNNER = Path(__file__).with_name("compat_runner.py")
BIN = Path(sys.executable).parent


@dataclass
class Run:
    """One subprocess: its ledger, the calls it made, the spans it saw."""

    name: str
    db: str
    proc: subprocess.Popen[str]
    out_path: Path | None = None
    spans_path: Path | None = None
    output: str = ""
    returncode: int | None = None
    result: dict[str, Any] = field(default_factory=dict)
    spans: list[dict[str, Any]] = field(default_factory=list)

    def wait(self, timeout: float) -> Run:
        try:
            self.output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.output, _ = self.proc.communicate()
        self.returncode = self.proc.returncode
        if self.out_path is not None and self.out_path.exists():
            self.result = json.loads(self.out_path.read_text())
        if self.spans_path is not None and self.spans_path.exists():
            self.spans = json.loads(self.spans_path.read_text())
        return self

    def call(self, family: str, scenario: str) -> dict[str, Any]:
        for call in self.result.get("calls", []):
            if call["family"] == family and call["scenario"] == scenario:
                return dict(call)
        raise AssertionError(f"{family}:{scenario} was not run in {self.name}: {self.output[-3000:]}")

    def spans_of(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["trace_id"] == trace_id]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


def launch_group(group: str, fake_base: str, workdir: Path, runner: Path = RUNNER) -> Run:
    db = f"sqlite:///{workdir / f'{group}.db'}"
    out, spans = workdir / f"{group}.json", workdir / f"{group}.spans.json"
    env = _env(E2E_FAKE_BASE=fake_base, E2E_DB=db, E2E_OUT=str(out), E2E_SPANS=str(spans))
    proc = subprocess.Popen(
        [sys.executable, str(runner), group],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Run(group, db, proc, out, spans)


# Installed instrumentations that register the same entry point names as openai-v2 ("openai").
_HIDDEN = (
    "opentelemetry-instrumentation-openai",
    "opentelemetry-instrumentation-anthropic",
    "openinference-instrumentation-openai",
    "openinference-instrumentation-anthropic",
)


def shadow_distributions(directory: Path, names: tuple[str, ...] = _HIDDEN) -> Path:
    """Metadata-only copies of ``names`` without entry points, for the front of ``PYTHONPATH``.

    ``importlib.metadata`` keeps the first distribution of a name on ``sys.path``, so these hide
    the packages' auto-instrumentation entry points (the packages stay importable): the process
    then looks like a service with only opentelemetry-instrumentation-openai-v2 installed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        dist = metadata.distribution(name)
        target = directory / f"{name.replace('-', '_')}-{dist.version}.dist-info"
        target.mkdir(exist_ok=True)
        (target / "METADATA").write_text(
            dist.read_text("METADATA") or f"Name: {name}\nVersion: {dist.version}\n"
        )
    return directory


def launch_autoinstrumented(
    app: Path, fake_openai_url: str, workdir: Path, *, only_openai_v2: bool = True
) -> Run:
    """``opentelemetry-instrument --traces_exporter aibill`` around ``app``.

    ``only_openai_v2``: hide the other installed OpenAI/Anthropic instrumentations; otherwise all
    of them load, as in an environment where several were installed, and each call is traced
    three times (nested spans).
    """
    name = "autoinstrumented" if only_openai_v2 else "autoinstrumented_all"
    db = f"sqlite:///{workdir / f'{name}.db'}"
    env = _env(
        OPENAI_BASE_URL=fake_openai_url,
        OPENAI_API_KEY="sk-e2e-auto",
        OTEL_AIBILL_DB=db,
        OTEL_RESOURCE_ATTRIBUTES=f"service.name={name},customer.id=acme",
        OTEL_TRACES_EXPORTER="aibill",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    if only_openai_v2:
        shadows = shadow_distributions(workdir / "shadow")
        env["PYTHONPATH"] = os.pathsep.join([str(shadows), env["PYTHONPATH"]])
    instrument = shutil.which("opentelemetry-instrument", path=str(BIN)) or "opentelemetry-instrument"
    proc = subprocess.Popen(
        [instrument, sys.executable, str(app)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=workdir,
    )
    return Run(name, db, proc)


@dataclass(frozen=True, slots=True)
class Expected:
    """Usage in the canonical accounting, as a ledger row should hold it."""

    provider: str
    model: str  # served model
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    service_tier: str | None = None
    split_known: bool = True  # the 5m / 1h split of cache writes is known

    def cost(self) -> Decimal:
        kw: dict[str, int] = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.cache_read_tokens:
            kw["cache_read_tokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            kw["cache_write_tokens"] = self.cache_write_tokens
            if self.split_known:
                kw["cache_write_5m_tokens"] = self.cache_write_5m_tokens
                kw["cache_write_1h_tokens"] = self.cache_write_1h_tokens
        tier = self.service_tier if self.service_tier in ("flex", "priority") else None
        price = calc_price(
            Usage(**kw),
            self.model,
            provider_id=self.provider,
            price_context={"service_tier": tier} if tier else None,
        )
        return Decimal(price.total_price)


def expected_from(exchange: Exchange) -> Expected:
    """What the fake provider reported, in the canonical accounting."""
    usage = exchange.usage
    assert usage is not None and exchange.model is not None, exchange
    if exchange.provider == "anthropic":
        read = usage.get("cache_read_input_tokens") or 0
        write = usage.get("cache_creation_input_tokens") or 0
        split = usage.get("cache_creation") or {}
        return Expected(
            provider="anthropic",
            model=exchange.model,
            input_tokens=usage["input_tokens"] + read + write,  # Anthropic's input EXCLUDES cache
            output_tokens=usage["output_tokens"],
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_5m_tokens=split.get("ephemeral_5m_input_tokens", 0),
            cache_write_1h_tokens=split.get("ephemeral_1h_input_tokens", 0),
            reasoning_tokens=(usage.get("output_tokens_details") or {}).get("thinking_tokens", 0),
            service_tier=usage.get("service_tier"),
        )
    body = exchange.response[0] if exchange.stream else exchange.response
    tier = body.get("service_tier")
    if "input_tokens" in usage:  # Responses API
        return Expected(
            provider="openai",
            model=exchange.model,
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cache_read_tokens=usage["input_tokens_details"]["cached_tokens"],
            reasoning_tokens=usage["output_tokens_details"]["reasoning_tokens"],
            service_tier=tier,
        )
    details_in = usage.get("prompt_tokens_details") or {}
    details_out = usage.get("completion_tokens_details") or {}
    return Expected(
        provider="openai",
        model=exchange.model,
        input_tokens=usage["prompt_tokens"],  # OpenAI's prompt_tokens already includes cached tokens
        output_tokens=usage.get("completion_tokens", 0),
        cache_read_tokens=details_in.get("cached_tokens", 0),
        reasoning_tokens=details_out.get("reasoning_tokens", 0),
        service_tier=tier,
    )


def as_reported(expected: Expected, family: str, exchange: Exchange) -> Expected:
    """The usage as this instrumentation can report it (measured gaps; see the module docstring
    of the test). Billing can only be as exact as what the spans carry."""
    e = expected
    if family == "openai_v2":  # no cache or reasoning attributes on chat spans
        e = replace(e, cache_read_tokens=0, reasoning_tokens=0)
    if family == "openinference_openai":  # no served service tier
        e = replace(e, service_tier=None)
    if family in ("traceloop_anthropic", "openinference_anthropic"):  # cache writes without the TTL split
        e = replace(e, cache_write_5m_tokens=0, cache_write_1h_tokens=0, split_known=False)
    if family == "traceloop_anthropic":
        e = replace(e, reasoning_tokens=0)
        if exchange.stream:  # adds message_start's output_tokens to message_delta's cumulative count
            e = replace(
                e, output_tokens=e.output_tokens + exchange.response[0]["message"]["usage"]["output_tokens"]
            )
    return e
