"""The PostgreSQL ledger's own storage: its schema, migrations, failures and error translation."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from otel_aibill.errors import LedgerUnavailableError
from otel_aibill.ledger import AppendBatch, SchemaTooNewError, open_ledger
from otel_aibill.ledger.postgres.ledger import PostgresLedger
from otel_aibill.ledger.schema import LEDGER
from otel_aibill.ledger.url import parse_postgres_url
from pg_support import BASE_URL
from test_ledger_support import priced


@pytest.fixture
def ledger(pg_url: str) -> Iterator[PostgresLedger]:
    led = PostgresLedger(pg_url)
    yield led
    led.close()


def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    schema = parse_postgres_url(url).schema
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def test_the_schema_is_created_in_its_own_namespace_at_the_latest_version(
    ledger: PostgresLedger, pg_url: str
) -> None:
    assert ledger.schema_version() == LEDGER.latest
    schema = parse_postgres_url(pg_url).schema
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            )
        }
    assert {"usage_rows", "dims", "trace_customers", "not_billable_counts", "customers", "usage"} <= tables
    reopened = PostgresLedger(pg_url)  # reopening applies nothing twice
    assert reopened.schema_version() == LEDGER.latest
    reopened.close()
    assert _sql(pg_url, "SELECT count(*) FROM schema_version") == [(LEDGER.latest,)]


def test_ledgers_opened_at_once_on_a_new_schema_migrate_it_once(pg_url: str) -> None:
    opened: list[PostgresLedger] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresLedger(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(opened) == 4
    assert opened[0].append(AppendBatch(rows=[priced()])).inserted == 1
    assert all(len(led.rows()) == 1 for led in opened)
    for led in opened:
        led.close()
    assert _sql(pg_url, "SELECT count(*) FROM schema_version") == [(LEDGER.latest,)]


def test_a_newer_database_is_refused(ledger: PostgresLedger, pg_url: str) -> None:
    ledger.close()
    _sql(pg_url, "INSERT INTO schema_version VALUES (99, 'from the future', 0)")
    with pytest.raises(SchemaTooNewError, match="version 99"):
        open_ledger(pg_url)


def test_a_failure_inside_the_transaction_rolls_it_back(ledger: PostgresLedger, pg_url: str) -> None:
    _sql(
        pg_url,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'disk says no'; END $$",
    )
    _sql(
        pg_url, "CREATE TRIGGER refuse AFTER INSERT ON trace_customers FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    with pytest.raises(LedgerUnavailableError, match="disk says no"):
        ledger.append(AppendBatch(rows=[priced()], trace_customers={"t": "c"}, not_billable={"x": 1}))
    assert ledger.rows() == [] and ledger.not_billable_counts() == {}
    _sql(pg_url, "DROP TRIGGER refuse ON trace_customers")
    assert ledger.append(AppendBatch(rows=[priced()], trace_customers={"t": "c"})).inserted == 1


def test_text_postgresql_cannot_store_refuses_the_batch_naming_it(ledger: PostgresLedger) -> None:
    from otel_aibill.ledger import InvalidRowError

    with pytest.raises(InvalidRowError, match="refused"):
        ledger.append(AppendBatch(rows=[priced(), priced(trace="bad\x00id")]))
    assert ledger.rows() == []
