"""The whole product: OTLP spans → ``otel-aibill serve`` → ledger → the fake Stripe, exactly once.

``serve`` runs as a subprocess with a Stripe key and webhook secret, so its own exporter loop sends
the meter events and its UI port receives Stripe's webhooks. Spans come from the OpenTelemetry SDK
through its standard OTLP exporters (gRPC and HTTP). The invariant: per Stripe customer, what the
fake Stripe counts equals floor(sum of the ledger's billed amounts × 10^6), with nothing lost
(unmapped usage is held, not dropped) and nothing counted twice, across a restart too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from fakestripe import API_KEY, FakeStripe
from net_support import free_ports
from otel_aibill.cli import app
from otel_aibill.ledger import open_ledger
from otel_aibill.ledger.base import LedgerRow
from otel_aibill.stripe.store import ExportStore

EVENT = "aibill_cost"
SECRET = "whsec_serve_test"
# acme and globex exist in Stripe; initech is mapped but Stripe does not know it (yet);
# hooli has no Stripe mapping at all.
MAPPING = {"acme": "cus_acme", "globex": "cus_globex", "initech": "cus_initech"}
CONFIG = """
[stripe]
poll_interval = 0.2
timeout = 5

[customers]
acme = "cus_acme"
globex = "cus_globex"
initech = "cus_initech"

[[pricing.markup]]
id = "default-20"
percent = "20"

[[pricing.markup]]
id = "globex-deal"
customer = "globex"
percent = "35"
fixed_fee = "0.0001"
"""
CHILDREN = 3  # GenAI spans per trace


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Serve:
    """``otel-aibill serve`` in a subprocess, talking to the fake Stripe."""

    def __init__(self, tmp: Path, db: str, config: Path, fake: FakeStripe | None, name: str) -> None:
        self.grpc_port, self.http_port, self.ui_port = free_ports(3)
        env = {**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET}
        for name_ in ("OTEL_AIBILL_DB", "STRIPE_API_KEY"):
            env.pop(name_, None)
        if fake is not None:
            env["STRIPE_API_KEY"] = API_KEY
            env["OTEL_AIBILL_STRIPE_API_BASE"] = fake.api_base
            env["OTEL_AIBILL_STRIPE_METER_EVENTS_BASE"] = fake.meter_events_base
        self.log = tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "otel_aibill.cli", "--db", db, "--config", str(config), "serve"]
        cmd += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        cmd += ["--ui-port", str(self.ui_port)]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.log.read_text()}")
            try:
                return bool(httpx.get(f"{self.ui}/healthz", timeout=1).json()["ok"])
            except (httpx.HTTPError, ValueError):
                return False

        _wait("serve to start", up)

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.ui}/stripe/webhook"

    def send(self, spans: list[ReadableSpan], grpc: bool) -> None:
        exporter: GrpcExporter | HttpExporter
        if grpc:
            exporter = GrpcExporter(endpoint=f"127.0.0.1:{self.grpc_port}", insecure=True, timeout=30)
        else:
            exporter = HttpExporter(endpoint=f"http://127.0.0.1:{self.http_port}/v1/traces", timeout=30)
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def traces(
    customers: list[str], per_customer: int, seed: int
) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
    """Requests as a service emits them: a root span naming the customer, GenAI child spans
    (OpenAI and Anthropic models) that do not. Returns (children, roots): children end first."""
    rng = random.Random(seed)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "chat-api"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    web = provider.get_tracer("chat-api.http")
    llm = provider.get_tracer("chat-api.llm")
    for customer in customers:
        for _ in range(per_customer):
            with web.start_as_current_span("POST /chat", attributes={"customer.id": customer}):
                calls = [
                    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", {}),
                    (
                        "anthropic",
                        "claude-haiku-4-5",
                        "claude-haiku-4-5-20251001",
                        {"gen_ai.usage.cache_read.input_tokens": rng.randint(0, 900)},
                    ),
                    (
                        "openai",
                        "o3",
                        "o3-2025-04-16",
                        {"gen_ai.usage.reasoning.output_tokens": rng.randint(0, 90)},
                    ),
                ]
                for prov, model, served, extra in calls:
                    attrs: dict[str, Any] = {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": prov,
                        "gen_ai.request.model": model,
                        "gen_ai.response.model": served,
                        "gen_ai.usage.input_tokens": rng.randint(1000, 1999),
                        "gen_ai.usage.output_tokens": rng.randint(100, 199),
                        **extra,
                    }
                    with llm.start_as_current_span(f"chat {model}", attributes=attrs):
                        pass
    spans = list(memory.get_finished_spans())
    children = [s for s in spans if s.parent is not None]
    roots = [s for s in spans if s.parent is None]
    return children, roots


def ledger_rows(db: str) -> list[LedgerRow]:
    ledger = open_ledger(db)
    try:
        return ledger.rows(limit=1_000_000)
    finally:
        ledger.close()


def expected_units(rows: list[LedgerRow]) -> dict[str, int]:
    """floor(sum billed × 10^6) per Stripe customer: what Stripe must count in cost mode."""
    billed: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        customer = r.priced.usage.customer
        if customer in MAPPING:
            assert r.priced.billed is not None
            billed[MAPPING[customer]] += r.priced.billed
    return {c: int(b.scaleb(6).to_integral_value(rounding=ROUND_FLOOR)) for c, b in billed.items()}


def settled(db: str, rows: int) -> bool:
    """Every span is in the ledger with its customer, and the exporter has nothing left to do."""
    ledger = open_ledger(db)
    store = ExportStore(db)
    try:
        stored = ledger.rows(limit=1_000_000)
        return (
            len(stored) == rows
            and all(r.priced.usage.customer for r in stored)
            and not ledger.exportable(1)
            and not store.staging_batches()
            and not store.events(states=["pending", "review"])
        )
    finally:
        store.close()
        ledger.close()


def sign(body: str, secret: str, t: int | None = None) -> str:
    """Stripe's scheme: HMAC-SHA256 of ``{t}.{body}`` with the endpoint secret, as ``t=..,v1=..``."""
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def test_otlp_to_stripe_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    db = store_url  # the ledger and the export store, in one database
    config = tmp_path / "aibill.toml"
    config.write_text(CONFIG, encoding="utf-8")
    runner = CliRunner()
    base = ["--db", db, "--config", str(config)]
    with FakeStripe() as fake:
        fake.add_customer("cus_acme", "cus_globex")
        monkeypatch.delenv("OTEL_AIBILL_DB", raising=False)
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_API_BASE", fake.api_base)
        monkeypatch.setenv("OTEL_AIBILL_STRIPE_METER_EVENTS_BASE", fake.meter_events_base)
        setup = runner.invoke(app, [*base, "stripe", "setup"])
        assert setup.exit_code == 0 and "created" in setup.output, setup.output

        serve = Serve(tmp_path, db, config, fake, "serve-1")
        try:
            customers = ["acme", "globex", "initech", "hooli"]
            children, roots = traces(customers, per_customer=3, seed=11)
            serve.send(children, grpc=False)  # usage first, customer unknown yet (pending)
            serve.send(roots, grpc=True)  # then the root spans that name the customers
            total = len(customers) * 3 * CHILDREN
            _wait("the exporter to settle", lambda: settled(db, total))

            rows = ledger_rows(db)
            by_customer = Counter(r.priced.usage.customer for r in rows)
            assert by_customer == {c: 3 * CHILDREN for c in customers}
            assert {r.priced.usage.provider for r in rows} == {"openai", "anthropic"}
            for r in rows:
                cost, billed = r.priced.cost, r.priced.billed
                assert cost is not None and billed is not None and cost > 0
                if r.priced.usage.customer == "globex":
                    assert r.priced.markup_rule == "globex-deal"
                    assert billed == cost * Decimal("1.35") + Decimal("0.0001")
                else:
                    assert r.priced.markup_rule == "default-20"
                    assert billed == cost * Decimal("1.2")

            # Stripe counts exactly the floor of the ledger's total for customers it knows.
            want = expected_units(rows)
            assert fake.totals(EVENT) == {c: want[c] for c in ("cus_acme", "cus_globex")}
            assert want["cus_acme"] > 0 and want["cus_globex"] > 0

            # Unmapped usage is held, every row of it, and still in the ledger.
            store = ExportStore(db)
            hooli_seqs = {r.seq for r in rows if r.priced.usage.customer == "hooli"}
            held = [d for d in store.held() if d.reason == "no_stripe_mapping"]
            assert {d.row.seq for d in held} == hooli_seqs
            hooli = runner.invoke(app, [*base, "usage", "--customer", "hooli", "--format", "json"])
            assert hooli.exit_code == 0, hooli.output
            (line,) = [x for x in json.loads(hooli.output) if x["provider"] == "anthropic"]
            assert Decimal(line["billed"]) > 0

            # Stripe refuses cus_initech asynchronously and says so by webhook, signed, to serve.
            assert "cus_initech" not in fake.totals(EVENT)
            fake.webhook_url, fake.webhook_secret = serve.webhook_url, SECRET
            statuses = fake.deliver_webhooks()
            assert statuses and set(statuses) == {200}
            assert "cus_initech" in store.rejected_customers()
            initech_seqs = {r.seq for r in rows if r.priced.usage.customer == "initech"}
            rejected = [d for d in store.held() if d.reason == "rejected_customer"]
            assert {d.row.seq for d in rejected} == initech_seqs
            assert {e.code for e in store.webhook_errors()} == {"meter_event_customer_not_found"}

            # Badly signed deliveries are refused before anything is read.
            body = json.dumps(
                {"id": "evt_x", "object": "v2.core.event", "type": "v1.billing.meter.no_meter_found"}
            )
            errors_before = len(store.webhook_errors())
            for header in (sign(body, "whsec_wrong"), "t=1,v1=00", "garbage"):
                r = httpx.post(serve.webhook_url, content=body, headers={"Stripe-Signature": header})
                assert r.status_code == 400, (header, r.text)
            r = httpx.post(serve.webhook_url, content=body)
            assert r.status_code == 400
            assert len(store.webhook_errors()) == errors_before
            # A well-signed event of a type serve does not act on is acknowledged and ignored.
            other = json.dumps({"id": "evt_y", "object": "v2.core.event", "type": "v1.billing.meter.other"})
            r = httpx.post(
                serve.webhook_url, content=other, headers={"Stripe-Signature": sign(other, SECRET)}
            )
            assert r.status_code == 200 and r.json().get("ignored") is True

            # The customer is created in Stripe and the rejection cleared: its usage goes, exactly.
            fake.add_customer("cus_initech")
            store.clear_rejections("cus_initech")
            _wait("initech to be sent", lambda: fake.totals(EVENT).get("cus_initech") == want["cus_initech"])
            _wait("the exporter to settle", lambda: settled(db, total))
            assert fake.totals(EVENT) == want
            assert not [d for d in store.held() if d.reason == "rejected_customer"]

            # Stripe's summaries agree with the ledger and with what was sent.
            starts = [r.priced.usage.start_time_ns // 1_000_000_000 for r in rows]
            t0, t1 = min(starts) // 3600 * 3600, (int(time.time()) // 3600 + 1) * 3600
            window = ["--from", _iso(t0), "--to", _iso(t1)]
            rec = runner.invoke(app, [*base, "stripe", "reconcile", *window], env={"COLUMNS": "200"})
            assert rec.exit_code == 0, rec.output
            assert "MISMATCH" not in rec.output
            assert f"held {len(hooli_seqs)} rows: no_stripe_mapping" in rec.output
            store.close()
        finally:
            assert serve.stop() == 0, serve.log.read_text()
        lines = serve.log.read_text().splitlines()  # one line per message, not wrapped at 80 columns
        assert any(ln.endswith(f"ops http://127.0.0.1:{serve.ui_port}/healthz (ledger {db})") for ln in lines)
        webhook = "webhook at /stripe/webhook on the ops port"
        assert f"Stripe export: cost mode, v1 API, every 0.2s; {webhook}" in lines

        # Restart: nothing already sent is sent again; new usage is sent exactly.
        sent_before = [e.identifier for e in fake.state.log]
        totals_before = fake.totals(EVENT)
        requests_before = len(fake.requests)
        assert len(set(sent_before)) == len(sent_before)
        serve = Serve(tmp_path, db, config, fake, "serve-2")
        try:
            children, roots = traces(["acme"], per_customer=1, seed=12)
            serve.send(children + roots, grpc=False)
            _wait("the restarted exporter to settle", lambda: settled(db, total + CHILDREN))
            rows = ledger_rows(db)
            want = expected_units(rows)
            assert want["cus_acme"] > totals_before["cus_acme"]
            assert fake.totals(EVENT) == want
            assert {k: v for k, v in want.items() if k != "cus_acme"} == {
                k: v for k, v in totals_before.items() if k != "cus_acme"
            }
            sent_after = [e.identifier for e in fake.state.log]
            assert sent_after[: len(sent_before)] == sent_before
            assert len(set(sent_after)) == len(sent_after)  # no identifier was sent twice
            assert len(sent_after) > len(sent_before)
            # Stripe drops a repeated identifier without logging it, so count the requests too:
            # after the restart, one accepted POST per new event and nothing else.
            posts = [
                st for _, path, st in fake.requests[requests_before:] if path == "/v1/billing/meter_events"
            ]
            assert posts == [200] * (len(sent_after) - len(sent_before))
        finally:
            assert serve.stop() == 0, serve.log.read_text()


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_webhook_refuses_a_replayed_old_signature(store_url: str) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from otel_aibill.stripe.webhook import webhook_route

    store = ExportStore(store_url)
    web = TestClient(Starlette(routes=[webhook_route(store, SECRET)]))
    body = json.dumps(
        {
            "id": "evt_old",
            "object": "v2.core.event",
            "type": "v1.billing.meter.no_meter_found",
            "created": "x",
        }
    )
    fresh = web.post("/stripe/webhook", content=body, headers={"Stripe-Signature": sign(body, SECRET)})
    assert fresh.status_code == 200
    day_old = sign(body, SECRET, t=int(time.time()) - 86400)
    assert web.post("/stripe/webhook", content=body, headers={"Stripe-Signature": day_old}).status_code == 400


@pytest.mark.parametrize(
    ("toml", "db", "message"),
    [
        ('[stripe]\nmode = "invoices"\n', "sqlite:///{tmp}/l.db", "invalid [stripe] settings"),
        ("", "mysql://127.0.0.1:1/none", "Stripe export store needs a sqlite:///path.db or postgresql://"),
    ],
)
def test_serve_refuses_what_it_cannot_export(tmp_path: Path, toml: str, db: str, message: str) -> None:
    """A bad [stripe] section, or a ledger the export store cannot use, stops serve at start
    with a clear error instead of a traceback or a receiver that silently never exports."""
    config = tmp_path / "aibill.toml"
    config.write_text(toml, encoding="utf-8")
    cmd = [sys.executable, "-m", "otel_aibill.cli", "--db", db.format(tmp=tmp_path), "--config", str(config)]
    cmd += ["serve", "--grpc-port", "0", "--http-port", "0", "--ui-port", "0"]
    env = {**os.environ, "STRIPE_API_KEY": API_KEY, "COLUMNS": "200"}
    env.pop("OTEL_AIBILL_DB", None)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_serve_without_a_key_is_a_dry_run_and_still_takes_webhooks(tmp_path: Path, store_url: str) -> None:
    db = store_url
    config = tmp_path / "aibill.toml"
    config.write_text(CONFIG, encoding="utf-8")
    serve = Serve(tmp_path, db, config, None, "dry")
    try:
        children, roots = traces(["acme"], per_customer=1, seed=3)
        serve.send(children + roots, grpc=True)
        _wait("the spans", lambda: len(ledger_rows(db)) == CHILDREN)
        body = json.dumps(
            {
                "id": "evt_1",
                "object": "v2.core.event",
                "type": "v1.billing.meter.no_meter_found",
                "created": "2026-01-01T00:00:00.000Z",
            }
        )
        bad = httpx.post(serve.webhook_url, content=body, headers={"Stripe-Signature": sign(body, "whsec_x")})
        assert bad.status_code == 400
        good = httpx.post(serve.webhook_url, content=body, headers={"Stripe-Signature": sign(body, SECRET)})
        assert good.status_code == 200 and good.json() == {"received": True}
    finally:
        assert serve.stop() == 0, serve.log.read_text()
    store = ExportStore(db)
    try:
        # Recorded, though without a key the details cannot be fetched from Stripe.
        assert [(e.event_id, e.code) for e in store.webhook_errors()] == [("evt_1", "unknown")]
        assert store.events() == []  # nothing was planned or sent
    finally:
        store.close()
    assert "dry run (no STRIPE_API_KEY)" in serve.log.read_text()
    ledger = open_ledger(db)
    try:
        assert len(ledger.exportable()) == CHILDREN  # still pending export, nothing lost
    finally:
        ledger.close()
