"""Pure planning: usage rows -> meter events, with integer values and a carried remainder.

Nothing here does I/O, so the whole mapping from money and tokens to what Stripe counts can be
tested on its own, including the no-drift property of the remainder carry.

Token types (tokens mode) are the ones Stripe's LLM token billing prices (``input``, ``output``,
``cached_input``, ``cached_write``, as Vercel's AI Gateway integration sends them), from the
canonical accounting where ``input_tokens`` is the whole prompt including cache reads and writes
and ``output_tokens`` includes reasoning:

* ``input = input_tokens - cache_read - cache_write``, ``cached_input = cache_read``,
  ``cached_write = cache_write`` for providers that bill cache writes on their own (default:
  anthropic);
* ``input = input_tokens - cache_read`` (cache writes ride along, as those providers bill them
  as input), ``cached_input = cache_read`` for every other provider;
* ``output = output_tokens``: reasoning tokens are counted in output, as Stripe's own meter
  counts them, never added again.

The types of one row always sum to ``input_tokens + output_tokens``: nothing counted twice. Only
non-zero types become events. The ``model`` dimension is the name Stripe lists (``models.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from otel_aibill.stripe.config import StripeConfig
from otel_aibill.stripe.models import ModelNames

Dims = tuple[tuple[str, str], ...]
CarryKey = tuple[str, str, Dims]
"""(Stripe customer id, event name, dimensions): the scope of one remainder."""

_WINDOW_SECONDS = {"hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class ExportRow:
    """The part of a ledger row the export needs, with its customer already resolved."""

    seq: int
    customer: str  # the app's customer id
    stripe_customer: str
    start_ns: int
    provider: str
    model: str
    currency: str
    billed: Decimal
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Measure:
    event_name: str
    dims: Dims
    amount: Decimal  # in meter units, not yet rounded


@dataclass(frozen=True, slots=True)
class EventDraft:
    identifier: str
    stripe_customer: str
    event_name: str
    dims: Dims
    window_start: int  # unix seconds
    timestamp: int  # unix seconds, inside the window
    amount: Decimal  # true total of the members, in meter units
    value: int  # what is sent: floor(carry + amount)
    members: tuple[int, ...] = ()  # ledger seqs summed into it (audit, and what a take-back holds)

    def payload(self, sc: StripeConfig) -> dict[str, str]:
        body = {sc.customer_payload_key: self.stripe_customer, sc.value_payload_key: str(self.value)}
        body.update(dict(self.dims))
        return body


def token_types(row: ExportRow, cache_providers: Iterable[str]) -> list[tuple[str, int]]:
    """Split canonical tokens into Stripe token types (see the module docstring)."""
    cache_read, cache_write = row.cache_read_tokens, row.cache_write_tokens
    if row.provider in tuple(cache_providers):
        kinds = [
            ("input", row.input_tokens - cache_read - cache_write),
            ("cached_input", cache_read),
            ("cached_write", cache_write),
        ]
    else:
        kinds = [("input", row.input_tokens - cache_read), ("cached_input", cache_read)]
    kinds.append(("output", row.output_tokens))
    if any(n < 0 for _, n in kinds):
        raise ValueError(f"row {row.seq}: token parts exceed their totals: {kinds}")
    return [(kind, n) for kind, n in kinds if n]


def measures(row: ExportRow, sc: StripeConfig, names: ModelNames | None = None) -> list[Measure]:
    if sc.mode == "cost":
        amount = row.billed.scaleb(sc.unit_exponent)
        return [Measure(sc.cost_event_name, (), amount)]
    model = (names or ModelNames(sc.models))(row.provider, row.model)
    return [
        Measure(sc.tokens_event_name, (("model", model), ("token_type", kind)), Decimal(n))
        for kind, n in token_types(row, sc.cache_token_providers)
    ]


def window_start(ts: int, window: str) -> int:
    size = _WINDOW_SECONDS[window]
    return ts - ts % size


def carry_units(amount: Decimal, remainder: Decimal) -> tuple[int, Decimal]:
    """Whole units to send now and the remainder to carry: their sum never drifts from the total."""
    total = remainder + amount
    # A remainder can be negative after a rejected event was taken back; never send a negative value.
    units = max(0, int(total.to_integral_value(rounding=ROUND_FLOOR)))
    return units, total - units


def event_identifier(batch_id: str, key: tuple[str, str, Dims, int]) -> str:
    """Deterministic from the persisted batch and the group, ≤ 100 chars as Stripe requires."""
    text = "|".join([key[0], key[1], repr(key[2]), str(key[3])])
    return f"oab-{batch_id}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


LEGACY_TOKEN_TYPES = {"cache_read": "cached_input", "cache_write": "cached_write"}
"""Names earlier versions sent for Anthropic's cache tokens, and the type each one is now."""


def _kinds(kinds: Iterable[str]) -> set[str]:
    return {LEGACY_TOKEN_TYPES.get(k, k) for k in kinds}


def _parts(row: ExportRow, cache: bool) -> dict[str, int]:
    return dict(token_types(row, (row.provider,) if cache else ()))


def _build(row: ExportRow, parts: Mapping[str, int], cache: bool, cache_write: int) -> ExportRow:
    """A copy of ``row`` whose token types are exactly ``parts``.

    Without separate cache types, cache writes are part of ``input`` and ride along with it.
    """
    cache_read = parts.get("cached_input", 0)
    cache_write = parts.get("cached_write", 0) if cache else cache_write
    input_tokens = parts.get("input", 0) + cache_read + (cache_write if cache else 0)
    return ExportRow(
        row.seq,
        row.customer,
        row.stripe_customer,
        row.start_ns,
        row.provider,
        row.model,
        row.currency,
        row.billed,
        input_tokens,
        parts.get("output", 0),
        cache_read,
        cache_write,
    )


def restrict_tokens(row: ExportRow, keep: Iterable[str], kinds: Iterable[str]) -> ExportRow:
    """The part of a row made of the token types ``keep``; ``kinds`` are all the types it was sent as.

    A rejected customer's events can be taken back while other events of the same row (its
    other token types) stay counted; only the taken-back types may be sent again. Which split
    applies (cache writes as their own type or not) is read from ``kinds``, so no setting is
    needed; when a row has no cache writes both splits agree. Types sent under their earlier
    names (``cache_read``, ``cache_write``) are read as the types they are now.
    """
    keep, every = _kinds(keep), _kinds(kinds)
    cache = "cached_write" in every
    parts = _parts(row, cache)
    kept = {k: n for k, n in parts.items() if k in keep}
    if kept == parts:
        return row
    cache_write = row.cache_write_tokens if cache or "input" in keep else 0
    return _build(row, kept, cache, cache_write)


def merge_tokens(a: ExportRow, b: ExportRow, kinds: Iterable[str]) -> ExportRow:
    """Two held parts of the same row as one (each token type counted once)."""
    cache = "cached_write" in _kinds(kinds)
    pa, pb = _parts(a, cache), _parts(b, cache)
    parts = {k: max(pa.get(k, 0), pb.get(k, 0)) for k in pa.keys() | pb.keys()}
    return _build(a, parts, cache, max(a.cache_write_tokens, b.cache_write_tokens))


@dataclass(slots=True)
class _Group:
    amount: Decimal
    last_ts: int
    members: list[int]


def plan_batch(
    batch_id: str,
    rows: Iterable[ExportRow],
    sc: StripeConfig,
    carry: Mapping[CarryKey, Decimal],
    now_s: int,
) -> tuple[list[EventDraft], dict[CarryKey, Decimal]]:
    """Group rows by (customer, meter, dimensions, window) and give each group an integer value.

    Returns the events (in a stable order) and the remainders that changed.
    """
    groups: dict[tuple[str, str, Dims, int], _Group] = {}
    names = ModelNames(sc.models)
    for row in rows:
        ts = row.start_ns // 1_000_000_000
        win = window_start(ts, sc.window)
        for m in measures(row, sc, names):
            key = (row.stripe_customer, m.event_name, m.dims, win)
            group = groups.get(key)
            if group is None:
                groups[key] = _Group(m.amount, ts, [row.seq])
            else:
                group.amount += m.amount
                group.last_ts = max(group.last_ts, ts)
                group.members.append(row.seq)
    changed: dict[CarryKey, Decimal] = {}
    events = []
    for key in sorted(groups):
        group = groups[key]
        ckey: CarryKey = (key[0], key[1], key[2])
        rem = changed.get(ckey, carry.get(ckey, Decimal(0)))
        value, changed[ckey] = carry_units(group.amount, rem)
        events.append(
            EventDraft(
                identifier=event_identifier(batch_id, key),
                stripe_customer=key[0],
                event_name=key[1],
                dims=key[2],
                window_start=key[3],
                timestamp=min(group.last_ts, now_s),
                amount=group.amount,
                value=value,
                members=tuple(group.members),
            )
        )
    return events, changed
