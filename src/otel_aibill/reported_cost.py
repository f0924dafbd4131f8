"""Costs an instrumentation reports for a call, checked against ours.

LiteLLM records its own estimate of every call's cost (``gen_ai.cost.total_cost``). The bill
always comes from our catalog, but a gateway user compares the two: when they disagree by more
than :data:`RELATIVE_TOLERANCE` (and :data:`ABSOLUTE_TOLERANCE`), the disagreement is counted in
:data:`COUNTS` and logged, so a wrong price on either side gets noticed instead of billed quietly.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal

from otel_aibill.usage import PricedUsage

log = logging.getLogger(__name__)

RELATIVE_TOLERANCE = Decimal("0.01")
ABSOLUTE_TOLERANCE = Decimal("0.000001")
COUNTS: Counter[str] = Counter()
"""Priced calls with a reported cost, by outcome: ``agree``, ``disagree``, ``unpriced`` (we have no
price, the instrumentation has one)."""
_LOG_FIRST = 20


def disagree(ours: Decimal, reported: Decimal) -> bool:
    """Whether two costs of one call differ by more than the tolerances."""
    return abs(ours - reported) > max(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * max(ours, reported))


def check(rows: Iterable[PricedUsage]) -> None:
    """Compare each row's cost with the cost its instrumentation reported, where it reported one."""
    for row in rows:
        reported = row.usage.reported_cost
        if reported is None:
            continue
        cost = row.cost
        outcome = "unpriced" if cost is None else "disagree" if disagree(cost, reported) else "agree"
        COUNTS[outcome] += 1
        if outcome != "agree" and (COUNTS[outcome] <= _LOG_FIRST or COUNTS[outcome] % 1000 == 0):
            usage = row.usage
            log.warning(
                "otel-aibill: %s call %s of trace %s (%s/%s): our cost %s, the instrumentation reported %s",
                outcome,
                usage.span_id,
                usage.trace_id,
                usage.provider,
                usage.model,
                row.cost,
                reported,
            )
