"""PostgreSQL ledger append, end to end, against a raw binary COPY of the same rows (one run).

Run through ``bench_ledger.py --db postgresql://...`` (same data as the SQLite run: random ids,
increasing start times, ~5% of calls reported twice as sibling spans, 500 customers). Every
variant gets the same batches; the run is cut into blocks, each block appended to every variant
in turn, the order reversed every block, so drift hits all alike: compare the ratios.

Variants:
  copy        binary COPY of the rows as the ledger stores them (``usage_rows`` columns, ``dims``
              ids resolved, tuples built beforehand) into a table without any index, one
              transaction a batch: the floor
  copy-idx    the same COPY into a table with the ledger's indexes (no dedupe, no staging)
  append      PostgresLedger.append end to end (reading the records, checks, staging COPY, the
              INSERT ... SELECT ... ON CONFLICT with its indexes, counts)
  append-recv shaped like the receiver's batches: every row has a response id (sibling lookup
              and advisory locks) and one trace customer a trace
  sqlite      SqliteLedger.append of the same batches (synchronous=FULL), for the client CPU

Client CPU is this process's CPU time (for SQLite that includes the database engine, which runs
in the process); server CPU is the CPU time of every ``postgres`` process on this machine over
the same block (backends, WAL writer, checkpointer), read from /proc.
"""

from __future__ import annotations

import gc
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from otel_aibill.ledger import AppendBatch, SqliteLedger
from otel_aibill.ledger.postgres import append as pg_append
from otel_aibill.ledger.postgres.ledger import PostgresLedger
from otel_aibill.ledger.rows import RESPONSE_BUCKET_NS
from otel_aibill.ledger.url import parse_postgres_url
from otel_aibill.usage import PricedUsage

_TICK = os.sysconf("SC_CLK_TCK")
_RAW_COLUMNS = (*pg_append._STAGE_COLUMNS, "status", "ingested_at_ns", "resp_bucket")
_RAW_TYPES = (*pg_append._STAGE_TYPES, "text", "int8", "int8")


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every process named ``postgres`` on this machine."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith("postgres"):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


@dataclass
class Totals:
    wall: float = 0.0
    client: float = 0.0
    server: float = 0.0


def _raw_table(conn: psycopg.Connection[Any], schema: str, indexed: bool) -> None:
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(f'SET search_path TO "{schema}"')
    sql_type = {"numeric": "numeric", "int8": "bigint", "int4": "integer", "text": "text"}
    columns = ", ".join(f"{c} {sql_type[t]}" for c, t in zip(_RAW_COLUMNS, _RAW_TYPES, strict=True))
    conn.execute(
        f"CREATE TABLE usage_rows (seq bigserial PRIMARY KEY, {columns})"
        if indexed
        else f"CREATE TABLE usage_rows ({columns})"
    )
    if indexed:
        for ddl in (
            "CREATE UNIQUE INDEX ON usage_rows (start_time_ns, trace_id, span_id)",
            "CREATE INDEX ON usage_rows (response_id, resp_bucket) WHERE response_id IS NOT NULL",
            "CREATE INDEX ON usage_rows (trace_id) WHERE customer IS NULL AND duplicate_of IS NULL",
            "CREATE INDEX ON usage_rows (start_time_ns) WHERE customer IS NULL AND duplicate_of IS NULL",
            "CREATE INDEX ON usage_rows (seq) WHERE customer IS NOT NULL AND billed IS NOT NULL",
        ):
            conn.execute(ddl)


def _raw_rows(ledger: PostgresLedger, rows: list[PricedUsage]) -> list[tuple[Any, ...]]:
    """The rows as the ledger COPYs them, plus what its insert adds (time, response bucket)."""
    now = time.time_ns()
    dim_ids = ledger._appender._dim_ids(rows, now)
    out = []
    for fields, dim_id, row in zip(pg_append._FIELDS(rows), dim_ids, rows, strict=True):
        start, response_id = row.usage.start_time_ns, row.usage.response_id
        bucket = None if response_id is None else start // RESPONSE_BUCKET_NS
        out.append((*fields, dim_id, None, row.status.value, now, bucket))
    return out


def run(
    url: str,
    make_batch: Any,
    receiver_shaped: Any,
    *,
    rows: int,
    batch: int,
    block: int,
    day_ns: int,
    show_blocks: bool,
) -> None:
    options = parse_postgres_url(url)
    tag = uuid.uuid4().hex[:8]
    schemas = {
        name: f"bench_{name.replace('-', '_')}_{tag}" for name in ("copy", "copy-idx", "append", "recv")
    }
    admin = psycopg.connect(options.conninfo, autocommit=True)
    raw: dict[str, psycopg.Connection[Any]] = {}
    tmp = tempfile.TemporaryDirectory()
    try:
        for name, indexed in (("copy", False), ("copy-idx", True)):
            conn = psycopg.connect(options.conninfo, autocommit=True)
            _raw_table(conn, schemas[name], indexed)
            raw[name] = conn
        with_schema = url + ("&" if "?" in url else "?") + "schema="
        append = PostgresLedger(with_schema + schemas["append"] + "&pool_max=1")
        recv = PostgresLedger(with_schema + schemas["recv"] + "&pool_max=1")
        sqlite = SqliteLedger(f"sqlite:///{tmp.name}/ledger.db")
        names = ["copy", "copy-idx", "append", "append-recv", "sqlite"]
        totals = {name: Totals() for name in names}
        rng = random.Random(7)
        step = day_ns // rows
        done = 0
        inserted = 0
        order = list(names)
        while done < rows:
            size = min(block, rows - done)
            batches: list[list[PricedUsage]] = []
            while sum(map(len, batches)) < size:
                n = min(batch, size - sum(map(len, batches)))
                batches.append(make_batch(rng, done + sum(map(len, batches)), n, step))
            prepared = [_raw_rows(append, b) for b in batches]
            plain = [AppendBatch(rows=b) for b in batches]
            shaped = [receiver_shaped(b) for b in batches]
            _raw_rows(recv, [r for b in shaped for r in b.rows])  # dims known to both ledgers
            gc.freeze()
            line = []
            for name in order:
                wall, client, server = time.perf_counter(), time.process_time(), postgres_cpu_s()
                if name in raw:
                    conn = raw[name]
                    for tuples in prepared:
                        with (
                            conn.transaction(),
                            conn.cursor().copy(
                                f"COPY usage_rows ({', '.join(_RAW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                            ) as copy,
                        ):
                            copy.set_types(_RAW_TYPES)
                            for t in tuples:
                                copy.write_row(t)
                elif name == "append":
                    for b in plain:
                        inserted += append.append(b).inserted
                elif name == "append-recv":
                    for b in shaped:
                        recv.append(b)
                else:
                    for b in plain:
                        sqlite.append(b)
                    sqlite.wait_for_rollup()
                t = totals[name]
                elapsed = time.perf_counter() - wall
                t.wall += elapsed
                t.client += time.process_time() - client
                t.server += postgres_cpu_s() - server
                line.append(f"{name} {size / elapsed:,.0f}")
            gc.unfreeze()
            if show_blocks:
                print(f"rows {done + size:>9,}: " + "  ".join(line), flush=True)
            order.reverse()
            done += size
        print(
            f"{rows:,} rows in batches of {batch}; append billed {inserted:,}, the rest are sibling"
            " duplicates"
        )
        print(f"{'variant':12s} {'rows/s':>10s} {'x copy':>7s} {'client us/row':>14s} {'server us/row':>14s}")
        for name, t in totals.items():
            server = "" if name == "sqlite" else f"{t.server / rows * 1e6:>14.2f}"
            print(
                f"{name:12s} {rows / t.wall:>10,.0f} {totals['copy'].wall / t.wall:>7.2f}"
                f" {t.client / rows * 1e6:>14.2f} {server}"
            )
        append.close()
        recv.close()
        sqlite.close()
    finally:
        for conn in raw.values():
            conn.close()
        for schema in schemas.values():
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()
        tmp.cleanup()
