"""The ledger's schema, as ordered migrations (``LEDGER``, applied by ``otel_aibill.db``).

Design of the keys (measured in ``benchmarks/bench_ledger.py``):

* Since version 6 the rows are in ``usage_rows`` and the columns with few distinct values
  (``DIM_COLUMNS``) once per combination in ``dims``; ``usage`` is a view joining them, with the
  columns ``usage`` had before. A row is 26 values instead of 38 (about 40% fewer bytes), which
  makes both binding and inserting it cheaper, and the rollup fold sorts by an integer. The
  indexes below are on ``usage_rows``.
* ``usage_rows`` is clustered on ``seq`` (the rowid: insertion order, so appends touch the right
  edge).
* Redelivery dedupe is a unique index on ``(start_time_ns, trace_id, span_id)``. A span's start
  time never changes, so a redelivered span has the same key; leading with time keeps inserts at
  the right edge of the index (a unique index on the random ids alone costs ~4x the append rate).
  The same ids with a *different* start time are stored as a separate row: that is not a
  redelivery but a different (or rewritten) span, and is visible in ``rows()``.
* Sibling spans of one call (same trace, provider and ``response_id``) are found through a
  partial index on ``(resp_bucket, response_id)`` where ``resp_bucket`` is the start hour;
  lookups check the neighbouring buckets too, so siblings starting less than an hour apart are
  always matched. The second sibling is stored with ``duplicate_of`` = the first one's span id,
  which excludes it from every sum and export but keeps it for audit and makes its own redelivery
  a plain duplicate span (the same index lookup tells whether it is already stored).
* Other indexes are partial (pending rows, exportable rows) or on the update path only; there is
  deliberately no index on ``trace_id`` alone nor on ``customer``: both are random or scattered
  keys that cost a large share of the append rate. Summaries filter by span start time.
* ``seq`` is a plain INTEGER PRIMARY KEY since version 4 (AUTOINCREMENT cost ~7% of the append
  rate); with no deletes, the next rowid is max(seq) + 1, so it still only grows.
* ``usage_daily`` is a per-day rollup for summaries (``rollup.py``).
* Amounts are TEXT (exact); ``*_units`` is the same amount as an integer count of 10^-15 units
  where it fits, for exact sums in SQL (``money.py``). Until version 5 each amount had two
  integer columns, split in Python for every appended row; one integer is cheaper to make and to
  bind, and SQL splits it when it sums. (Deriving the units from the text in SQL instead costs
  the fold and every summary of unfolded rows several times more; as VIRTUAL generated columns
  SQLite computes them on insert too, at about four times the cost of the raw insert.)
* ``rollup_state.tail_changes`` counts updates to unfolded rows, so a fold computed on a read
  snapshot can tell whether its rows changed before it is applied (``rollup.py``).
"""

from __future__ import annotations

from otel_aibill.db import Component, Migration
from otel_aibill.ledger.postgres import schema as postgres_schema
from otel_aibill.ledger.rows import DIM_COLUMNS
from otel_aibill.ledger.sqlite import rollup

_V1_USAGE = """
CREATE TABLE usage (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    start_time_ns INTEGER NOT NULL,
    end_time_ns INTEGER NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    input_audio_tokens INTEGER NOT NULL,
    output_audio_tokens INTEGER NOT NULL,
    request_model TEXT,
    response_model TEXT,
    service_tier TEXT,
    response_id TEXT,
    server_address TEXT,
    scope_name TEXT NOT NULL,
    convention TEXT NOT NULL,
    customer TEXT,
    status TEXT NOT NULL CHECK (status IN ('priced', 'unpriced')),
    cost TEXT,
    billed TEXT,
    currency TEXT NOT NULL,
    price_version TEXT,
    price_key TEXT,
    markup_rule TEXT,
    unpriced_reason TEXT NOT NULL,
    cost_hi INTEGER,
    cost_lo INTEGER,
    billed_hi INTEGER,
    billed_lo INTEGER,
    ingested_at_ns INTEGER NOT NULL,
    resp_bucket INTEGER,
    duplicate_of TEXT,
    export_batch TEXT
)
"""

_V1_INDEXES = (
    "CREATE UNIQUE INDEX usage_span ON usage (start_time_ns, trace_id, span_id)",
    "CREATE INDEX usage_response ON usage (resp_bucket, response_id) WHERE response_id IS NOT NULL",
    "CREATE INDEX usage_pending_trace ON usage (trace_id) WHERE customer IS NULL AND duplicate_of IS NULL",
    "CREATE INDEX usage_pending_start ON usage (start_time_ns)"
    " WHERE customer IS NULL AND duplicate_of IS NULL",
    "CREATE INDEX usage_exportable ON usage (seq)"
    " WHERE export_batch IS NULL AND customer IS NOT NULL AND billed IS NOT NULL"
    " AND status = 'priced' AND duplicate_of IS NULL",
)
_V3_INDEXES = ("CREATE INDEX usage_export_batch ON usage (export_batch) WHERE export_batch IS NOT NULL",)

# Without AUTOINCREMENT (which reads and writes sqlite_sequence for every inserted row), a new
# rowid is max(seq) + 1; rows are never deleted, so seq still only grows.
_V4_REBUILD = (
    _V1_USAGE.replace("CREATE TABLE usage", "CREATE TABLE usage_v4").replace(" AUTOINCREMENT", ""),
    "INSERT INTO usage_v4 SELECT * FROM usage ORDER BY seq",
    "DROP TABLE usage",
    "ALTER TABLE usage_v4 RENAME TO usage",
    *_V1_INDEXES,
    *_V3_INDEXES,
    "DELETE FROM sqlite_sequence WHERE name = 'usage'",
)

# The rollup as version 4 made it (amount sums as TEXT, merged in Python). It starts empty with
# nothing folded, which is always consistent (summaries read unfolded rows); version 5 replaces
# it and does the backfill.
_V4_ROLLUP = (
    "CREATE TABLE usage_daily ("
    " day INTEGER NOT NULL, customer TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,"
    " operation TEXT NOT NULL, currency TEXT NOT NULL,"
    + ", ".join(f"{c} INTEGER NOT NULL CHECK (typeof({c}) = 'integer')" for c in rollup.COUNTS)
    + ", cost TEXT NOT NULL, billed TEXT NOT NULL,"
    " PRIMARY KEY (day, customer, provider, model, operation, currency)"
    ") WITHOUT ROWID",
    "CREATE TABLE rollup_state (id INTEGER PRIMARY KEY CHECK (id = 1), folded_seq INTEGER NOT NULL)",
    "INSERT INTO rollup_state (id, folded_seq) VALUES (1, 0)",
)

_V5_USAGE = (
    _V1_USAGE.replace("CREATE TABLE usage", "CREATE TABLE usage_v5")
    .replace(" AUTOINCREMENT", "")
    .replace(
        "    cost_hi INTEGER,\n    cost_lo INTEGER,\n    billed_hi INTEGER,\n    billed_lo INTEGER,\n",
        "    cost_units INTEGER,\n    billed_units INTEGER,\n",
    )
)
_KEPT = (
    "seq, trace_id, span_id, parent_span_id, start_time_ns, end_time_ns, provider, model, operation,"
    " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cache_write_5m_tokens,"
    " cache_write_1h_tokens, reasoning_tokens, input_audio_tokens, output_audio_tokens, request_model,"
    " response_model, service_tier, response_id, server_address, scope_name, convention, customer,"
    " status, cost, billed, currency, price_version, price_key, markup_rule, unpriced_reason,"
    " ingested_at_ns, resp_bucket, duplicate_of, export_batch"
)
_V5_REBUILD = (
    _V5_USAGE,
    f"INSERT INTO usage_v5 ({_KEPT}, cost_units, billed_units)"
    f" SELECT {_KEPT}, dec_units(cost), dec_units(billed) FROM usage ORDER BY seq",
    "DROP TABLE usage",
    "ALTER TABLE usage_v5 RENAME TO usage",
    *_V1_INDEXES,
    *_V3_INDEXES,
    "DROP TABLE usage_daily",
    *rollup.STATEMENTS,
    "UPDATE rollup_state SET folded_seq = 0",
    "ALTER TABLE rollup_state ADD COLUMN tail_changes INTEGER NOT NULL DEFAULT 0",
)

_V6_ROW_COLUMNS = (
    "seq, trace_id, span_id, parent_span_id, start_time_ns, end_time_ns,"
    " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cache_write_5m_tokens,"
    " cache_write_1h_tokens, reasoning_tokens, input_audio_tokens, output_audio_tokens, response_id,"
    " customer, status, cost, billed, markup_rule, cost_units, billed_units, ingested_at_ns,"
    " resp_bucket, duplicate_of, export_batch"
)
_V6 = (
    "CREATE TABLE dims (id INTEGER PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL,"
    " operation TEXT NOT NULL, request_model TEXT, response_model TEXT, service_tier TEXT,"
    " server_address TEXT, scope_name TEXT NOT NULL, convention TEXT NOT NULL, currency TEXT NOT NULL,"
    " price_version TEXT, price_key TEXT, unpriced_reason TEXT NOT NULL)",
    f"CREATE INDEX dims_values ON dims ({', '.join(DIM_COLUMNS)})",
    f"INSERT INTO dims ({', '.join(DIM_COLUMNS)}) SELECT DISTINCT {', '.join(DIM_COLUMNS)} FROM usage",
    """CREATE TABLE usage_rows (
    seq INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    start_time_ns INTEGER NOT NULL,
    end_time_ns INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    input_audio_tokens INTEGER NOT NULL,
    output_audio_tokens INTEGER NOT NULL,
    response_id TEXT,
    customer TEXT,
    status TEXT NOT NULL CHECK (status IN ('priced', 'unpriced')),
    cost TEXT,
    billed TEXT,
    markup_rule TEXT,
    cost_units INTEGER,
    billed_units INTEGER,
    ingested_at_ns INTEGER NOT NULL,
    resp_bucket INTEGER,
    duplicate_of TEXT,
    export_batch TEXT,
    dim_id INTEGER NOT NULL REFERENCES dims (id)
)""",
    f"INSERT INTO usage_rows ({_V6_ROW_COLUMNS}, dim_id)"
    f" SELECT {', '.join(f'u.{c.strip()}' for c in _V6_ROW_COLUMNS.split(','))}, d.id"
    " FROM usage u CROSS JOIN dims d INDEXED BY dims_values ON "
    + " AND ".join(f"d.{c} IS u.{c}" for c in DIM_COLUMNS)
    + " ORDER BY u.seq",
    "DROP TABLE usage",
    *(ix.replace(" ON usage (", " ON usage_rows (") for ix in (*_V1_INDEXES, *_V3_INDEXES)),
    "CREATE VIEW usage AS SELECT usage_rows.*, "
    + ", ".join(f"dims.{c}" for c in DIM_COLUMNS)
    + " FROM usage_rows CROSS JOIN dims ON dims.id = usage_rows.dim_id",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "usage, trace customers, not-billable counts",
        (
            _V1_USAGE,
            *_V1_INDEXES,
            "CREATE TABLE trace_customers ("
            " trace_id TEXT PRIMARY KEY, customer TEXT NOT NULL, first_seen_ns INTEGER NOT NULL"
            ") WITHOUT ROWID",
            "CREATE TABLE not_billable_counts ("
            " reason TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (reason, day)"
            ") WITHOUT ROWID",
        ),
        postgres=postgres_schema.CREATE,  # the latest shape at once: later versions have no steps
    ),
    Migration(
        2,
        "customers",
        (
            "CREATE TABLE customers ("
            " customer_id TEXT PRIMARY KEY, stripe_customer_id TEXT, name TEXT,"
            " updated_at_ns INTEGER NOT NULL"
            ") WITHOUT ROWID",
        ),
    ),
    Migration(3, "export batch lookup for audit", _V3_INDEXES),
    Migration(
        4,
        "per-day rollup for summaries; seq without AUTOINCREMENT",
        (*_V4_REBUILD, *_V4_ROLLUP),
    ),
    Migration(
        5,
        "one integer per amount instead of two; rollup sums in integers; fold snapshot check",
        _V5_REBUILD,  # the rollup starts empty; version 6 folds every row into it
    ),
    Migration(
        6,
        "columns with few distinct values moved to dims; usage is a view of usage_rows and dims",
        (*_V6, rollup.fold),  # the rollup is kept as it is; this folds its tail
    ),
    Migration(
        7,
        "new trace customers go to a small table, merged into trace_customers in key order",
        (
            "CREATE TABLE trace_customers_recent ("
            " trace_id TEXT PRIMARY KEY, customer TEXT NOT NULL, first_seen_ns INTEGER NOT NULL"
            ") WITHOUT ROWID",
        ),
    ),
    Migration(
        8,
        "trace customers expire: their first-seen time indexed",
        ("CREATE INDEX trace_customers_seen ON trace_customers (first_seen_ns)",),
    ),
)

LEDGER = Component("ledger", "schema_version", MIGRATIONS)
"""The ledger's tables, versioned in ``schema_version``."""
