"""The per-day rollup: always equal to the rows it sums, through appends, attribution, migration."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from otel_aibill.ledger import (
    PENDING_CUSTOMER,
    AppendBatch,
    Attribution,
    SqliteLedger,
    UsageQuery,
    money,
)
from otel_aibill.ledger.base import LedgerRow, UsageSummary
from otel_aibill.ledger.schema import MIGRATIONS
from otel_aibill.ledger.sqlite import migrate, rollup, summaries
from otel_aibill.ledger.summary import DAY_NS, SummaryBuilder, key_value, plan
from otel_aibill.usage import PricedUsage
from test_ledger_support import HOUR, T0, insert_as_before_v5, priced, trace_id

AMOUNTS = ["0.001", "0.1", "0.2", "12345678901234567890.123456789", "1E-40", "-0.3", "0.0001234567890123456"]


@pytest.fixture(params=["background", "inline"])
def ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[SqliteLedger]:
    monkeypatch.setattr(rollup, "FOLD_EVERY", 1)  # fold after every append
    led = SqliteLedger(f"sqlite:///{tmp_path}/r.db?rollup_fold={request.param}")
    yield led
    led.close()


def _truth(led: SqliteLedger) -> dict[tuple[object, ...], tuple[object, ...]]:
    """The rollup, computed in Python from every billable row."""
    out: dict[tuple[object, ...], list[object]] = {}
    for row in led.rows(limit=1_000_000):
        p, u = row.priced, row.priced.usage
        key = (u.start_time_ns // DAY_NS, u.customer or "", u.provider, u.model, u.operation, p.currency)
        g = out.setdefault(key, [0, 0, 0, 0, 0, 0, 0, 0, Decimal(0), Decimal(0)])
        deltas = (1, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
                  u.reasoning_tokens, p.status == "unpriced", u.customer is None)  # fmt: skip
        for i, d in enumerate(deltas):
            g[i] += int(d)  # type: ignore[operator]
        g[8] = _add(g[8], p.cost)
        g[9] = _add(g[9], p.billed)
    return {k: tuple(v) for k, v in out.items()}


def _add(total: object, amount: Decimal | None) -> Decimal:
    assert isinstance(total, Decimal)
    return total if amount is None else money.add(total, amount)


def _stored(led: SqliteLedger) -> dict[tuple[object, ...], tuple[object, ...]]:
    assert led.wait_for_rollup(timeout=60)
    rows = led._writer.execute(
        f"SELECT {', '.join((*rollup.KEYS, *rollup.COUNTS, *rollup.PARTS))} FROM usage_daily WHERE spans != 0"
    )
    return {tuple(r[:6]): (*r[6:14], _amount(*r[14:17]), _amount(*r[17:20])) for r in rows}


def _amount(hi: int, lo: int, extra: str | None) -> Decimal:
    assert type(hi) is int and type(lo) is int
    total = money.join(hi, lo)
    return total if extra is None else money.add(total, Decimal(extra))


def _folded(led: SqliteLedger) -> int:
    assert led.wait_for_rollup(timeout=60)
    return rollup.folded_seq(led._writer)


def _mixed_rows(rng: random.Random, n: int) -> list[PricedUsage]:
    rows = []
    for i in range(n):
        rows.append(
            priced(
                cost=None if i % 11 == 0 else rng.choice(AMOUNTS),
                billed=rng.choice(AMOUNTS),
                currency="EUR" if i % 7 == 0 else "USD",
                customer=None if i % 3 == 0 else rng.choice(["a", "b"]),
                provider=rng.choice(["openai", "anthropic"]),
                start=T0 + rng.randrange(3 * 24) * HOUR + rng.randrange(HOUR),
                input_tokens=rng.randrange(1000),
                output_tokens=rng.randrange(100),
            )
        )
    return rows


def test_rollup_equals_the_rows_after_appends_duplicates_and_attribution(ledger: SqliteLedger) -> None:
    rng = random.Random(5)
    rows = _mixed_rows(rng, 300)
    trace = trace_id()
    siblings = [priced(trace=trace, response_id="r1", cost="0.5", customer="a") for _ in range(3)]
    for start in range(0, 300, 50):
        ledger.append(AppendBatch(rows=rows[start : start + 50]))
    result = ledger.append(AppendBatch(rows=[*siblings, *rows[:20]]))  # siblings + redelivery
    assert (result.inserted, result.duplicate_responses, result.duplicate_spans) == (1, 2, 20)
    assert _folded(ledger) == 303  # every stored row, sibling duplicates included, is folded
    assert _stored(ledger) == _truth(ledger)

    pending = ledger.pending_attribution(limit=1000)
    assert pending
    updates = [
        Attribution(
            r.priced.usage.trace_id,
            r.priced.usage.span_id,
            "late",
            None if r.priced.cost is None else Decimal("0.25"),
            "rule",
        )
        for r in pending[::2]
    ]
    assert ledger.set_attribution(updates) == len(updates)
    assert ledger.set_attribution(updates) == 0  # nothing moves twice
    assert _stored(ledger) == _truth(ledger)
    by_customer = ledger.usage_summary(UsageQuery(by=("customer",)))
    summary = {s.key["customer"]: s for s in by_customer if s.currency == "USD"}
    assert summary["late"].billed == Decimal("0.25") * sum(
        1 for u in updates if u.billed is not None and _currency(ledger, u) == "USD"
    )
    assert summary[PENDING_CUSTOMER].pending_spans == summary[PENDING_CUSTOMER].spans

    last = priced(customer=None, cost="0.7")  # the newest folded row moves too
    ledger.append(AppendBatch(rows=[last]))
    assert _folded(ledger) == max(r.seq for r in ledger.rows())
    u = last.usage
    assert ledger.set_attribution([Attribution(u.trace_id, u.span_id, "z", Decimal("0.9"), None)]) == 1
    assert _stored(ledger) == _truth(ledger)


def _currency(led: SqliteLedger, update: Attribution) -> str:
    [row] = [r for r in led.rows(trace_id=update.trace_id) if r.priced.usage.span_id == update.span_id]
    return row.priced.currency


@pytest.mark.parametrize("fold_every", [1, 7, 10_000])
def test_summaries_are_the_same_with_any_mix_of_rollup_and_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fold_every: int
) -> None:
    """Whole days (rollup + unfolded tail) and partial days (rows) add up to a plain row scan."""
    monkeypatch.setattr(rollup, "FOLD_EVERY", fold_every)
    led = SqliteLedger(f"sqlite:///{tmp_path}/w.db")
    rng = random.Random(9)
    for _ in range(8):
        led.append(AppendBatch(rows=_mixed_rows(rng, 25)))
    day0 = datetime.fromtimestamp(T0 // 10**9, tz=UTC)
    windows = [
        (None, None),
        (day0 + timedelta(days=1), None),
        (None, day0 + timedelta(days=2)),
        (day0 + timedelta(hours=5), day0 + timedelta(days=2, hours=3)),
        (day0 + timedelta(hours=5), day0 + timedelta(hours=9)),
        (day0 + timedelta(days=1), day0 + timedelta(days=2)),
    ]
    everything = led.rows(limit=10_000)
    for since, until in windows:
        for customer in (None, "a", PENDING_CUSTOMER):
            for by in (("customer", "provider", "model"), ("day",), ()):
                got = led.usage_summary(UsageQuery(customer=customer, since=since, until=until, by=by))
                assert got == _scan(everything, customer, since, until, by), (since, until, customer, by)
    led.close()


def _scan(
    rows: list[LedgerRow],
    customer: str | None,
    since: datetime | None,
    until: datetime | None,
    by: tuple[str, ...],
) -> list[UsageSummary]:
    """The summary computed from ``rows()`` alone, in Python."""
    lo = -1 if since is None else int(since.timestamp()) * 10**9
    hi = 2**63 if until is None else int(until.timestamp()) * 10**9
    counts: dict[tuple[object, ...], list[int]] = {}
    amounts: dict[tuple[object, ...], list[Decimal]] = {}
    for row in rows:
        p, u = row.priced, row.priced.usage
        if not lo <= u.start_time_ns < hi:
            continue
        if customer is not None and (u.customer or PENDING_CUSTOMER) != customer:
            continue
        values = {"customer": u.customer, "provider": u.provider, "model": u.model,
                  "operation": u.operation, "day": u.start_time_ns // DAY_NS}  # fmt: skip
        gid = (*(values[n] for n in by), p.currency)
        deltas = (1, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
                  u.reasoning_tokens, p.status == "unpriced", u.customer is None)  # fmt: skip
        c = counts.setdefault(gid, [0] * 8)
        for i, d in enumerate(deltas):
            c[i] += int(d)
        m = amounts.setdefault(gid, [Decimal(0), Decimal(0)])
        m[0] = _add(m[0], p.cost)
        m[1] = _add(m[1], p.billed)
    out = [
        UsageSummary(
            key={n: key_value(n, v) for n, v in zip(by, gid, strict=False)},
            spans=c[0],
            input_tokens=c[1],
            output_tokens=c[2],
            cache_read_tokens=c[3],
            cache_write_tokens=c[4],
            reasoning_tokens=c[5],
            cost=amounts[gid][0],
            billed=amounts[gid][1],
            currency=str(gid[-1]),
            unpriced_spans=c[6],
            pending_spans=c[7],
        )
        for gid, c in counts.items()
    ]
    out.sort(key=lambda s: (tuple(s.key.values()), s.currency))
    return out


def test_fold_falls_back_to_text_sums_when_integer_parts_overflow(ledger: SqliteLedger) -> None:
    big = Decimal("999999999.123456789012345")  # 10k of these overflow the summed integer parts
    ledger.append(AppendBatch(rows=[priced(cost=big, billed=big, customer="c") for _ in range(10_000)]))
    assert _folded(ledger) == 10_000
    [summary] = ledger.usage_summary(UsageQuery())
    assert summary.cost == summary.billed == big * 10_000
    assert _stored(ledger) == _truth(ledger)


def test_migration_backfills_the_rollup_and_keeps_seq_growing(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=3) == 3
    rows = _mixed_rows(random.Random(3), 120)
    insert_as_before_v5(conn, rows)
    conn.close()

    led = SqliteLedger(f"sqlite:///{path}")
    assert led.schema_version() == len(MIGRATIONS)
    assert _folded(led) == 120
    assert _stored(led) == _truth(led)
    before = max(r.seq for r in led.rows(limit=1000))
    led.append(AppendBatch(rows=[priced(customer="new")]))
    [newest, *_] = led.rows()
    assert newest.seq == before + 1 and newest.priced.usage.customer == "new"
    assert (
        "AUTOINCREMENT"
        not in led._writer.execute("SELECT sql FROM sqlite_master WHERE name = 'usage'").fetchone()[0]
    )
    led.close()


def test_plan_splits_windows_into_whole_days_and_edges() -> None:
    d = DAY_NS
    assert [(p.days, p.low, p.high) for p in plan(None, None)] == [(True, None, None)]
    assert [(p.days, p.low, p.high) for p in plan(d + 5, 4 * d + 7)] == [
        (True, 2, 4),
        (False, d + 5, 2 * d),
        (False, 4 * d, 4 * d + 7),
    ]
    assert [(p.days, p.low, p.high) for p in plan(2 * d, 3 * d)] == [(True, 2, 3)]
    assert [(p.days, p.low, p.high) for p in plan(d + 5, d + 9)] == [(False, d + 5, d + 9)]
    assert [(p.days, p.low, p.high) for p in plan(d + 5, 2 * d + 1)] == [(False, d + 5, 2 * d + 1)]


def test_a_fold_computed_before_an_attribution_of_its_rows_is_not_applied(tmp_path: Path) -> None:
    led = SqliteLedger(f"sqlite:///{tmp_path}/s.db?rollup_fold=inline")
    rows = [priced(customer=None, cost="0.5"), priced(customer="a", cost="0.25")]
    led.append(AppendBatch(rows=rows))
    with led._read() as snapshot:
        computed = rollup.compute_fold(snapshot, at_least=1)
    assert computed is not None
    u = rows[0].usage
    assert led.set_attribution([Attribution(u.trace_id, u.span_id, "late", Decimal("0.6"), None)]) == 1
    with led._write() as conn:
        assert not rollup.apply_fold(conn, computed)  # it summed the row as pending
        assert rollup.fold(conn) == 2
    assert _stored(led) == _truth(led)
    with led._write() as conn:
        assert not rollup.apply_fold(conn, computed)  # already folded
    assert _stored(led) == _truth(led)
    led.close()


def test_background_folds_beside_appends_and_attribution_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends, attribution of pending rows and summaries from several threads while the worker
    folds: the rollup always ends equal to the rows, and summaries equal a plain row scan."""
    monkeypatch.setattr(rollup, "FOLD_EVERY", 40)
    led = SqliteLedger(f"sqlite:///{tmp_path}/bg.db")
    rng = random.Random(11)
    batches = [_mixed_rows(rng, 30) for _ in range(40)]
    errors: list[BaseException] = []
    done = threading.Event()

    def appender() -> None:
        try:
            for batch in batches:
                led.append(AppendBatch(rows=batch))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def attributor() -> None:
        try:
            while not done.is_set():
                pending = led.pending_attribution(limit=20)
                led.set_attribution(
                    [
                        Attribution(r.priced.usage.trace_id, r.priced.usage.span_id, "late", None, None)
                        for r in pending
                    ]
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            while not done.is_set():
                led.usage_summary(UsageQuery(by=("customer",)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (appender, attributor, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert led.wait_for_rollup(timeout=60)
    assert led._folder is not None and led._folder.folds + led._folder.stale > 0
    assert led.usage_summary(UsageQuery()) == _scan_rows(led, UsageQuery())  # rollup + tail
    with led._write() as conn:
        rollup.fold(conn)  # the tail shorter than FOLD_EVERY too, to compare the whole rollup
    assert _stored(led) == _truth(led)
    assert led.usage_summary(UsageQuery()) == _scan_rows(led, UsageQuery())
    led.close()


def _scan_rows(led: SqliteLedger, query: UsageQuery) -> list[UsageSummary]:
    builder = SummaryBuilder(by=tuple(query.by))
    with led._read() as conn:
        summaries.summarize_rows(conn, builder, query, None, None, after_seq=None)
    return builder.build()


def test_version_4_rows_move_to_version_5_exactly(tmp_path: Path) -> None:
    """Rows as version 4 stored them (two integer parts per amount) get their units computed from
    the amount texts, read back as the same Decimals, and are folded into the new rollup."""
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=4) == 4
    amounts = ["0.0000001", "7.5E-8", "0.0041250", "1234.5", "9000", "0.1234567890123456789", "-0.3"]
    rows = [priced(cost=Decimal(a), billed=Decimal(a) * 2, customer="c") for a in amounts]
    insert_as_before_v5(conn, rows)
    conn.close()

    led = SqliteLedger(f"sqlite:///{path}")
    assert led.schema_version() == len(MIGRATIONS)
    key = lambda p: str(p.cost)  # noqa: E731
    assert sorted((r.priced for r in led.rows()), key=key) == sorted(rows, key=key)
    stored = dict(led._writer.execute("SELECT cost, cost_units FROM usage").fetchall())
    assert stored == {str(Decimal(a)): money.units(str(Decimal(a))) for a in amounts}
    assert stored["7.5E-8"] == 75_000_000 and stored["9000"] is None
    assert _folded(led) == len(rows)
    assert _stored(led) == _truth(led)
    [summary] = led.usage_summary(UsageQuery())
    assert summary.cost == sum(Decimal(a) for a in amounts)
    assert summary.billed == 2 * sum(Decimal(a) for a in amounts)
    led.close()


def test_fold_keeps_any_text_in_group_keys(ledger: SqliteLedger) -> None:
    """Groups travel through SQL and Python as JSON: names that need escaping come back as sent."""
    names = ['acme "eu"', "back\\slash", "ünïcødé 🚀", '{"json": [1]}', "tab\tand\nnewline", "12", "null"]
    rows = [priced(customer=n, model=n, cost="0.0000001", billed="1E-40") for n in names]
    ledger.append(AppendBatch(rows=rows))
    assert _folded(ledger) == len(names)
    assert _stored(ledger) == _truth(ledger)
    by_customer = {s.key["customer"]: s for s in ledger.usage_summary(UsageQuery(by=("customer", "model")))}
    assert set(by_customer) == set(names)
    assert all(s.cost == Decimal("0.0000001") and s.billed == Decimal("1E-40") for s in by_customer.values())
