"""Stripe export end to end: the real ``stripe`` SDK against the local fake Stripe.

The property checked everywhere: after the exporter settles, what Stripe counts per customer equals
the floor of the ledger's true total (micro-units in cost mode, tokens in tokens mode), and no event
is counted twice, whatever faults or crashes happened on the way.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe._http_client

from fakestripe import Clock, FakeStripe, Faults
from fakestripe.support import client_for, open_test_ledger, priced
from otel_aibill.config import Config
from otel_aibill.ledger.base import AppendBatch
from otel_aibill.stripe import ExportStore, StripeConfig, StripeExporter
from otel_aibill.stripe.plan import ExportRow, token_types
from otel_aibill.stripe.setup import ensure_meters

CUSTOMERS = {"acme": "cus_acme", "globex": "cus_globex", "initech": "cus_initech", "cus_direct": "cus_direct"}


@pytest.fixture(autouse=True)
def _fast_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK sleeps 0.5 s+ between its own retries; the behaviour is the same with shorter sleeps.
    monkeypatch.setattr(stripe._http_client.HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(stripe._http_client.HTTPClient, "MAX_DELAY", 0.02)


def settings(**kw: Any) -> StripeConfig:
    base: dict[str, Any] = dict(
        timeout=0.3,
        max_network_retries=2,
        backoff_initial=0.005,
        backoff_max=0.02,
        rate_limit_retries=3,
        concurrency=3,
    )
    base.update(kw)
    return StripeConfig(**base)


def make_rows(now: int, n: int = 60, seed: int = 7) -> list[Any]:
    rng = random.Random(seed)
    names = [*CUSTOMERS, "nomap", None]
    rows = []
    for i in range(n):
        customer = names[i % len(names)] if i % 11 else "unattributed"
        provider, model = rng.choice([("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4")])
        inp = rng.randint(50, 5000)
        cr = rng.randint(0, inp // 2)
        cw = rng.randint(0, (inp - cr) // 2) if provider == "anthropic" else 0
        billed = Decimal(rng.randint(1, 10**9)).scaleb(-rng.randint(6, 12))  # sub-micro precision
        start = now - rng.randint(0, 3 * 3600)
        rows.append(
            priced(
                i + 1,
                customer,
                start,
                billed,
                provider=provider,
                model=model,
                input_tokens=inp,
                output_tokens=rng.randint(1, 900),
                cache_read=cr,
                cache_write=cw,
            )
        )
    return rows


def store_execute(store: ExportStore, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the store's tables behind its back (``?`` placeholders, on either backend)."""
    with store._db.tx() as cur:
        cur.execute(sql, params)


class Harness:
    def __init__(self, tmp: Path, fake: FakeStripe, sc: StripeConfig, store_url: str | None = None) -> None:
        self.url = store_url or f"sqlite:///{tmp / 'aibill.db'}"
        self.ledger_url = self.url  # the export store lives in the ledger's database
        self.fake, self.sc = fake, sc
        self.config = Config(
            db=self.ledger_url, customers={k: v for k, v in CUSTOMERS.items() if k != "cus_direct"}
        )
        self.ledger = open_test_ledger(self.ledger_url)
        self.store = ExportStore(self.url)
        self.client = client_for(fake, sc)
        fake.add_customer(*CUSTOMERS.values())
        ensure_meters(self.client, sc)
        self.rows: list[Any] = []

    def add(self, rows: list[Any]) -> None:
        self.ledger.append(AppendBatch(rows=rows))
        self.rows.extend(rows)

    def exporter(self, **kw: Any) -> StripeExporter:
        return StripeExporter(
            self.ledger,
            self.store,
            self.config,
            self.client,
            stripe_settings=self.sc,
            clock=self.fake.clock,
            **kw,
        )

    def settle(self, rounds: int = 40) -> None:
        exp = self.exporter()
        for _ in range(rounds):
            if exp.run_once().settled:
                return
        raise AssertionError(f"not settled: {len(self.store.events(states=['pending']))} pending")

    def expected(self) -> dict[str, int]:
        """Floor of the true total per Stripe customer, from the ledger's rows."""
        true: dict[str, Decimal] = defaultdict(Decimal)
        for p in self.rows:
            c = p.usage.customer
            stripe_id = CUSTOMERS.get(c) if c in CUSTOMERS else None
            if stripe_id is None:
                continue
            if self.sc.mode == "cost":
                true[stripe_id] += p.billed.scaleb(self.sc.unit_exponent)
            else:
                true[stripe_id] += p.usage.input_tokens + p.usage.output_tokens
        return {c: int(v.to_integral_value(rounding=ROUND_FLOOR)) for c, v in true.items() if v >= 1}

    def event_name(self) -> str:
        return self.sc.cost_event_name if self.sc.mode == "cost" else self.sc.tokens_event_name

    def check(self) -> None:
        name = self.event_name()
        assert self.fake.totals(name) == self.expected()
        counted = self.fake.counted_identifiers(name)
        assert len(counted) == len(set(counted))
        sent = {e.identifier for e in self.store.events(states=["sent"])}
        assert set(counted) == sent  # every counted event is one we recorded as sent, and vice versa
        held = {d.row.seq for d in self.store.held()}
        assert len(held) == sum(1 for p in self.rows if p.usage.customer in ("nomap", "unattributed"))


@pytest.fixture
def fake() -> Any:
    with FakeStripe(clock=Clock()) as f:
        yield f


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("mode", ["cost", "tokens"])
def test_export_without_faults(tmp_path: Path, fake: FakeStripe, api: str, mode: str, store_url: str) -> None:
    h = Harness(tmp_path, fake, settings(api=api, mode=mode), store_url=store_url)
    now = int(fake.clock())
    h.add(make_rows(now))
    h.settle()
    h.check()
    # events <= customers x meters x windows (x dimensions in tokens mode)
    events = h.store.events()
    keys = {(e.stripe_customer, e.event_name, e.dims, e.window_start) for e in events}
    assert len(keys) == len(events)
    if api == "v2":
        assert all(m != "post" or p != "/v1/billing/meter_events" for m, p, _ in fake.requests)
    # A second pass has nothing to do and sends nothing.
    before = len(fake.requests)
    report = h.exporter().run_once()
    assert report.events_planned == 0 and report.requests == 0
    assert [r for r in fake.requests[before:] if r[0] == "post"] == []


@pytest.mark.parametrize("kind", ["500", "429", "timeout", "reset", "lost"])
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_faults_at_30_percent_cost(tmp_path: Path, api: str, kind: str, store_url: str) -> None:
    with FakeStripe(faults=Faults(rate=0.3, kinds=(kind,), seed=zlib.crc32(f"{api}{kind}".encode()))) as fake:
        h = Harness(tmp_path, fake, settings(api=api, max_events_per_request=1), store_url=store_url)
        h.add(make_rows(int(fake.clock()), n=45))
        h.settle()
        h.check()
        assert fake.faults.counts.get(kind, 0) > 0


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_all_faults_at_30_percent_tokens(tmp_path: Path, api: str, store_url: str) -> None:
    with FakeStripe(faults=Faults(rate=0.3, seed=3)) as fake:
        h = Harness(
            tmp_path, fake, settings(api=api, mode="tokens", max_events_per_request=3), store_url=store_url
        )
        h.add(make_rows(int(fake.clock()), n=40))
        h.settle()
        h.check()
        assert len(fake.faults.counts) >= 3


def test_token_types_sum_to_the_canonical_total() -> None:
    row = ExportRow(1, "a", "cus_a", 0, "anthropic", "claude", "USD", Decimal(0), 1000, 300, 600, 250)
    assert token_types(row, ("anthropic",)) == [
        ("input", 150),
        ("cached_input", 600),
        ("cached_write", 250),
        ("output", 300),
    ]
    row = ExportRow(1, "a", "cus_a", 0, "openai", "gpt-4o", "USD", Decimal(0), 1000, 300, 600, 0)
    assert token_types(row, ("anthropic",)) == [("input", 400), ("cached_input", 600), ("output", 300)]
    bad = ExportRow(1, "a", "cus_a", 0, "openai", "gpt-4o", "USD", Decimal(0), 10, 3, 60, 0)
    with pytest.raises(ValueError):
        token_types(bad, ())


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import stripe._http_client
    stripe._http_client.HTTPClient.INITIAL_DELAY = 0.01
    from fakestripe.support import open_test_ledger
    from otel_aibill.config import Config
    from otel_aibill.stripe import ExportStore, StripeConfig, StripeExporter, StripeEnv, make_client
    sc = StripeConfig.model_validate_json({sc!r})
    config = Config.model_validate_json({config!r})
    client = make_client(StripeEnv({key!r}, {api!r}, {mev!r}, None), sc)
    seen = []
    def hook(point, ids):
        if point == {point!r}:
            seen.append(1)
            if len(seen) == {after}:
                os.kill(os.getpid(), signal.SIGKILL)
    StripeExporter(open_test_ledger({ledger_url!r}), ExportStore({url!r}), config, client, stripe_settings=sc,
                   hook=hook).run_once()
    """
)


@pytest.mark.parametrize(
    ("api", "point", "after"),
    [("v1", "sent", 3), ("v2", "sent", 1), ("v1", "staged", 1), ("v2", "finalized", 1)],
)
def test_sigkill_between_steps_then_restart(
    tmp_path: Path, fake: FakeStripe, api: str, point: str, after: int, store_url: str
) -> None:
    from fakestripe.server import API_KEY

    sc = settings(api=api, concurrency=1, max_events_per_request=5, page_rows=20)
    h = Harness(tmp_path, fake, sc, store_url=store_url)
    h.add(make_rows(int(fake.clock()), n=50))
    script = CRASH_SCRIPT.format(
        tests=str(Path(__file__).parent),
        sc=sc.model_dump_json(),
        config=h.config.model_dump_json(),
        key=API_KEY,
        api=fake.api_base,
        mev=fake.meter_events_base,
        point=point,
        after=after,
        url=h.url,
        ledger_url=h.ledger_url,
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    h.settle()
    h.check()


LOOP_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading
    sys.path.insert(0, {tests!r})
    import stripe._http_client
    stripe._http_client.HTTPClient.INITIAL_DELAY = 0.01
    from fakestripe.support import open_test_ledger
    from otel_aibill.config import Config
    from otel_aibill.stripe import ExportStore, StripeConfig, StripeExporter, StripeEnv, make_client
    sc = StripeConfig.model_validate_json({sc!r})
    config = Config.model_validate_json({config!r})
    client = make_client(StripeEnv({key!r}, {api!r}, {mev!r}, None), sc)
    kill_after = int(sys.argv[1])
    seen = []
    def hook(point, ids):
        if point == "sent":
            seen.append(1)
            print("sent", flush=True)
            if len(seen) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    StripeExporter(open_test_ledger({url!r}), ExportStore({url!r}), config, client, stripe_settings=sc,
                   hook=hook).run_forever(stop)
    """
)


def test_exporter_processes_on_one_postgres_database_bill_once(
    tmp_path: Path, fake: FakeStripe, pg_url: str
) -> None:
    """Several exporter loops on one database while usage keeps arriving, the first one to send
    SIGKILLed mid-run: one exports at a time (the advisory lock), the lock of the killed one is
    released with its session, and Stripe counts every unit once."""
    from fakestripe.server import API_KEY

    sc = settings(concurrency=1, max_events_per_request=5, page_rows=20, poll_interval=0.1)
    h = Harness(tmp_path, fake, sc, store_url=pg_url)
    rows = make_rows(int(fake.clock()), n=120, seed=11)
    h.add(rows[:40])
    script = LOOP_SCRIPT.format(
        tests=str(Path(__file__).parent),
        sc=sc.model_dump_json(),
        config=h.config.model_dump_json(),
        key=API_KEY,
        api=fake.api_base,
        mev=fake.meter_events_base,
        url=h.url,
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    victim = subprocess.Popen([sys.executable, "-c", script, "2"], stdout=subprocess.PIPE, text=True, env=env)
    assert victim.stdout is not None and victim.stdout.readline().strip() == "sent"  # it holds the lock
    others = [
        subprocess.Popen([sys.executable, "-c", script, "0"], stdout=subprocess.DEVNULL, env=env)
        for _ in range(2)
    ]
    try:
        assert victim.wait(timeout=60) == -signal.SIGKILL  # it sent, then died holding the lock
        for start in range(40, 120, 20):
            h.add(rows[start : start + 20])
        for _ in range(600):
            if not h.ledger.exportable(1) and not h.store.events(states=["pending", "review"]):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the surviving exporters never finished the export")
    finally:
        for proc in others:
            proc.send_signal(signal.SIGTERM)
        for proc in others:
            assert proc.wait(timeout=60) == 0
        victim.kill()
    h.check()
