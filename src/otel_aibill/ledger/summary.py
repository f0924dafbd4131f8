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


def group_expressions(by: Sequence[str]) -> list[str]:
    """SQL expressions for ``by`` (integer division is the same in SQLite and PostgreSQL)."""
    unknown = [name for name in by if name not in GROUP_FIELDS]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}; choose from {', '.join(GROUP_FIELDS)}")
    if len(set(by)) != len(by):
        raise ValueError(f"group fields repeat: {list(by)}")
    return [_EXPRESSIONS[name] for name in by]


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

    def add_aggregate(self, row: Sequence[Any], *, money_in_sql: bool) -> None:
        """``row`` = group values, currency, 8 counts, then cost hi/lo and billed hi/lo sums."""
        n = len(self.by) + 1
        counts = [int(v or 0) for v in row[n : n + 8]]
        group = _Group(counts=counts)
        if money_in_sql:
            cost_hi, cost_lo, billed_hi, billed_lo = (int(v or 0) for v in row[n + 8 : n + 12])
            group.cost = money.join(cost_hi, cost_lo)
            group.billed = money.join(billed_hi, billed_lo)
        self.groups[tuple(row[:n])] = group

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
