"""Schema version 6: the columns with few distinct values kept once in ``dims``; migration from
version 5, the in-memory id cache through failed transactions and other writers, bad values."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from otel_aibill.ledger import AppendBatch, InvalidRowError, SqliteLedger, UsageQuery
from otel_aibill.ledger.rows import DIM_COLUMNS, INSERT_COLUMNS, SELECT_COLUMNS, to_params
from otel_aibill.ledger.schema import MIGRATIONS
from otel_aibill.ledger.sqlite import migrate, summaries
from otel_aibill.ledger.summary import SummaryBuilder
from otel_aibill.usage import PricedUsage
from test_ledger_support import HOUR, T0, priced, usage


def _varied_rows() -> list[PricedUsage]:
    rows = []
    for i in range(60):
        record = replace(
            usage(
                start=T0 + i * HOUR // 5,
                customer=None if i % 7 == 0 else f"c{i % 3}",
                provider=["openai", "anthropic", "google"][i % 3],
                model=["gpt-4o", "claude-sonnet-4-5", "ünïcode 'model'"][i % 3],
                response_id=f"r{i}" if i % 4 == 0 else None,
                input_tokens=10 + i,
            ),
            request_model=None if i % 2 else "gpt-4o-2024-08-06",
            service_tier=None if i % 5 else "flex",
            server_address=None if i % 6 else "api.example.com",
            scope_name=["openai_v2", "openllmetry"][i % 2],
        )
        cost = None if i % 11 == 0 else f"0.00{i + 1}"
        rows.append(priced(record, cost=cost, billed=f"0.01{i}", currency="EUR" if i % 8 == 0 else "USD"))
    return rows


def _scan(led: SqliteLedger, query: UsageQuery) -> object:
    builder = SummaryBuilder(by=tuple(query.by))
    with led._read() as conn:
        summaries.summarize_rows(conn, builder, query, None, None, after_seq=None)
    return builder.build()


def test_version_5_rows_move_to_version_6_exactly(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=5) == 5
    rows = _varied_rows()
    conn.executemany(
        f"INSERT INTO usage ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})",
        [to_params(r, 1) for r in rows],
    )
    conn.close()

    led = SqliteLedger(f"sqlite:///{path}")
    assert led.schema_version() == len(MIGRATIONS)
    assert [r.priced for r in reversed(led.rows(limit=1000))] == rows  # every field, in order
    assert [r.seq for r in reversed(led.rows(limit=1000))] == list(range(1, 61))
    distinct = {tuple(getattr(r.usage, c, None) or getattr(r, c, None) for c in DIM_COLUMNS) for r in rows}
    assert led._writer.execute("SELECT count(*) FROM dims").fetchone()[0] == len(distinct)
    for query in (UsageQuery(), UsageQuery(by=("customer",)), UsageQuery(by=("day",)), UsageQuery(by=())):
        assert led.usage_summary(query) == _scan(led, query)
    totals = {s.currency: s for s in led.usage_summary(UsageQuery(by=()))}
    assert sum(s.spans for s in totals.values()) == 60
    for currency, total in totals.items():
        assert total.cost == sum(r.cost for r in rows if r.cost is not None and r.currency == currency)
    view = led._writer.execute("SELECT * FROM usage LIMIT 1")
    assert {d[0] for d in view.description} >= set(SELECT_COLUMNS)  # the view still shows them all
    led.append(AppendBatch(rows=[priced(model="a-new-model")]))
    assert "a-new-model" in {s.key["model"] for s in led.usage_summary(UsageQuery(by=("model",)))}
    led.close()


def test_a_combination_from_a_rolled_back_append_is_not_remembered(tmp_path: Path) -> None:
    led = SqliteLedger(f"sqlite:///{tmp_path}/d.db")
    good = priced(model="brand-new")
    bad = priced(replace(usage(), output_tokens=-1))
    with pytest.raises(InvalidRowError):
        led.append(AppendBatch(rows=[good, bad]))
    assert led._writer.execute("SELECT count(*) FROM dims").fetchone()[0] == 0
    assert not any("brand-new" in key for key in led._inserter.dims)
    assert led.append(AppendBatch(rows=[good])).inserted == 1
    [row] = led.rows()
    assert row.priced == good
    assert led._writer.execute("SELECT count(*) FROM dims WHERE model = 'brand-new'").fetchone()[0] == 1
    led.close()


def test_two_ledgers_on_one_file_share_their_combinations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    a, b = SqliteLedger(url), SqliteLedger(url)
    a.append(AppendBatch(rows=[priced(model="x")]))
    b.append(AppendBatch(rows=[priced(model="x"), priced(model="y")]))  # finds x, adds y
    a.append(AppendBatch(rows=[priced(model="y")]))  # finds y (not in a's cache)
    assert a._writer.execute("SELECT model, count(*) FROM dims GROUP BY model").fetchall() == [
        ("x", 1),
        ("y", 1),
    ]
    assert sorted(r.priced.usage.model for r in a.rows()) == ["x", "x", "y", "y"]
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provider": ""}, "provider must be a non-empty string"),
        ({"model": 7}, "model must be a non-empty string"),
        ({"request_model": ["gpt-4o"]}, "request_model must be a string"),
        ({"scope_name": {"a": 1}}, "scope_name must be a string"),
    ],
)
def test_bad_values_of_dims_columns_refuse_the_batch(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    led = SqliteLedger(f"sqlite:///{tmp_path}/bad.db")
    bad = priced(replace(usage(), **change))  # type: ignore[arg-type]
    with pytest.raises(InvalidRowError, match=message):
        led.append(AppendBatch(rows=[priced(), bad]))
    assert led.rows() == [] and led._writer.execute("SELECT count(*) FROM dims").fetchone()[0] == 0
    led.close()


def test_unpriced_and_pending_rows_keep_their_amounts_and_reason(tmp_path: Path) -> None:
    led = SqliteLedger(f"sqlite:///{tmp_path}/u.db")
    rows = [priced(cost=None), priced(customer=None, cost="0.5"), priced(cost=Decimal("1E-40"))]
    led.append(AppendBatch(rows=rows))
    assert [r.priced for r in reversed(led.rows())] == rows
    assert led.rows()[-1].priced.unpriced_reason == "unknown model"
    led.close()
