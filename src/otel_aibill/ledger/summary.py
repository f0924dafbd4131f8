"""Usage summaries: grouping expressions and exact assembly of the aggregated rows (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from otel_aibill.ledger import money
from otel_aibill.ledger.base import GROUP_FIELDS, UsageSummary

PENDING_CUSTOMER = "(pending)"
"""The ``customer`` key of usage whose customer is not known yet (and the filter that selects it)."""

DAY_NS = 86_400 * 1_000_000_000
_EXPRESSIONS = {
    "customer": "customer",
    "provider": "provider",
    "model": "model",
    "operation": "operation",
    "day": f"start_time_ns / {DAY_NS}",
}


_ROLLUP_EXPRESSIONS = {**_EXPRESSIONS, "customer": "nullif(customer, '')", "day": "day"}


def group_expressions(by: Sequence[str], *, rollup: bool = False) -> list[str]:
    """SQL expressions for ``by`` over ``usage`` (or ``usage_daily``), giving the same values.

    Integer division is the same in SQLite and PostgreSQL.
    """
    unknown = [name for name in by if name not in GROUP_FIELDS]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}; choose from {', '.join(GROUP_FIELDS)}")
    if len(set(by)) != len(by):
        raise ValueError(f"group fields repeat: {list(by)}")
    expressions = _ROLLUP_EXPRESSIONS if rollup else _EXPRESSIONS
    return [expressions[name] for name in by]


@dataclass(slots=True, frozen=True)
class Part:
    """A piece of a summary window: whole days ``[first_day, end_day)`` from the rollup (plus its
    unfolded tail), or a time range ``[since_ns, until_ns)`` read from ``usage``. None = open."""

    days: bool
    low: int | None
    high: int | None


def plan(since_ns: int | None, until_ns: int | None) -> list[Part]:
    """Split a window into whole UTC days (rollup) and the partial days at its edges (rows)."""
    first = None if since_ns is None else -(-since_ns // DAY_NS)
    end = None if until_ns is None else until_ns // DAY_NS
    if first is not None and end is not None and first >= end:
        return [Part(days=False, low=since_ns, high=until_ns)]
    parts = [Part(days=True, low=first, high=end)]
    if since_ns is not None and first is not None and since_ns < first * DAY_NS:
        parts.append(Part(days=False, low=since_ns, high=first * DAY_NS))
    if until_ns is not None and end is not None and end * DAY_NS < until_ns:
        parts.append(Part(days=False, low=end * DAY_NS, high=until_ns))
    return parts


def key_value(name: str, value: Any) -> str:
    if name == "customer" and value is None:
        return PENDING_CUSTOMER
    if name == "day":
        return datetime.fromtimestamp(int(value) * 86_400, tz=UTC).date().isoformat()
    return str(value)


@dataclass(slots=True)
class _Group:
    counts: list[int]  # spans, 5 token sums, unpriced, pending
    cost: Decimal = Decimal(0)
    billed: Decimal = Decimal(0)
    extra_cost: list[Decimal] = field(default_factory=list)
    extra_billed: list[Decimal] = field(default_factory=list)


GroupId = tuple[Any, ...]  # raw group values + currency


@dataclass(slots=True)
class SummaryBuilder:
    """Collects aggregate rows, then exact extras, and builds ``UsageSummary`` objects."""

    by: tuple[str, ...]
    groups: dict[GroupId, _Group] = field(default_factory=dict)

    def _group(self, row: Sequence[Any]) -> _Group:
        n = len(self.by) + 1
        counts = [int(v or 0) for v in row[n : n + 8]]
        gid = tuple(row[:n])
        group = self.groups.get(gid)
        if group is None:
            group = self.groups[gid] = _Group(counts=counts)
        else:
            group.counts = [a + b for a, b in zip(group.counts, counts, strict=True)]
        return group

    def add_aggregate(self, row: Sequence[Any], *, money_in_sql: bool) -> None:
        """``row`` = group values, currency, 8 counts, then cost hi/lo and billed hi/lo sums.

        Rows for a group already seen (another part of the window) are added to it.
        """
        group = self._group(row)
        if money_in_sql:
            n = len(self.by) + 9
            cost_hi, cost_lo, billed_hi, billed_lo = (int(v or 0) for v in row[n : n + 4])
            group.cost = money.add(group.cost, money.join(cost_hi, cost_lo))
            group.billed = money.add(group.billed, money.join(billed_hi, billed_lo))

    def add_rollup(self, row: Sequence[Any]) -> None:
        """``row`` = group values, currency, 8 counts, then per amount (cost, billed) the summed
        integer parts and the space-separated exact sums without them."""
        group = self._group(row)
        n = len(self.by) + 9
        cost_hi, cost_lo, cost_extra, billed_hi, billed_lo, billed_extra = row[n : n + 6]
        group.cost = money.add(group.cost, money.join(int(cost_hi or 0), int(cost_lo or 0)))
        group.billed = money.add(group.billed, money.join(int(billed_hi or 0), int(billed_lo or 0)))
        for text, extra in ((cost_extra, group.extra_cost), (billed_extra, group.extra_billed)):
            extra.extend(Decimal(x) for x in (text or "").split())

    def add_amounts(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of group values, currency, cost text or None, billed text or None."""
        n = len(self.by) + 1
        for row in rows:
            group = self.groups[tuple(row[:n])]
            if row[n] is not None:
                group.extra_cost.append(Decimal(row[n]))
            if row[n + 1] is not None:
                group.extra_billed.append(Decimal(row[n + 1]))

    def build(self) -> list[UsageSummary]:
        out = []
        for gid, g in self.groups.items():
            spans, inp, outp, cache_read, cache_write, reasoning, unpriced, pending = g.counts
            out.append(
                UsageSummary(
                    key={name: key_value(name, value) for name, value in zip(self.by, gid, strict=False)},
                    spans=spans,
                    input_tokens=inp,
                    output_tokens=outp,
                    cache_read_tokens=cache_read,
                    cache_write_tokens=cache_write,
                    reasoning_tokens=reasoning,
                    cost=money.add(g.cost, money.exact_sum(g.extra_cost)),
                    billed=money.add(g.billed, money.exact_sum(g.extra_billed)),
                    currency=str(gid[-1]),
                    unpriced_spans=unpriced,
                    pending_spans=pending,
                )
            )
        out.sort(key=lambda s: (tuple(s.key.values()), s.currency))
        return out
