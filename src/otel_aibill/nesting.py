"""One LLM call seen as nested inference spans is billed once.

Several instrumentations of one SDK can be active together (e.g. OpenInference, OpenLLMetry and
openai-v2 all patch the openai client): each call then yields inference spans nested in each
other, all with the same usage, and not all of them carry a response id for the ledger's
sibling rule. A usage span whose parent or child is a usage span of the same trace with the same
provider and the same token totals describes the same call; the first one seen is billed.

A parent/child link is required, so two separate identical calls in one trace stay two calls; and
two spans that both carry a response id name the same call only if the ids are equal (a retry or
a second call inside an LLM span can report the same token totals).
The memory is bounded and per process: nested spans of one call end within milliseconds of each
other and travel together. Known limit: when the middle span of a chain of three arrives in a
later batch than both ends, the two ends were already billed separately.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

from otel_aibill.usage import NotBillableReason, UsageRecord

Fingerprint = tuple[str, int, int]
SpanKey = tuple[str, str]  # trace id, span id
Seen = tuple[Fingerprint, str | None]  # usage fingerprint, response id


def _fingerprint(u: UsageRecord) -> Fingerprint:
    return (u.provider, u.input_tokens, u.output_tokens)


def _same_call(u: UsageRecord, other: Seen | None) -> bool:
    if other is None or other[0] != _fingerprint(u):
        return False
    return u.response_id is None or other[1] is None or other[1] == u.response_id


class NestedCalls:
    def __init__(self, size: int) -> None:
        self._size = size
        self._by_span: OrderedDict[SpanKey, Seen] = OrderedDict()
        self._by_parent: dict[SpanKey, list[Seen]] = {}
        self._parent_of: dict[SpanKey, SpanKey] = {}
        self._nested: set[SpanKey] = set()

    def _seen_as_parent(self, u: UsageRecord) -> bool:
        return any(_same_call(u, child) for child in self._by_parent.get((u.trace_id, u.span_id), ()))

    def _seen_as_child(self, u: UsageRecord) -> bool:
        if u.parent_span_id is None:
            return False
        return _same_call(u, self._by_span.get((u.trace_id, u.parent_span_id)))

    def _remember(self, u: UsageRecord) -> None:
        key = (u.trace_id, u.span_id)
        fp = (_fingerprint(u), u.response_id)
        self._by_span[key] = fp
        if u.parent_span_id is not None:
            parent = (u.trace_id, u.parent_span_id)
            self._by_parent.setdefault(parent, []).append(fp)
            self._parent_of[key] = parent
        while len(self._by_span) > self._size:
            old, _ = self._by_span.popitem(last=False)
            self._nested.discard(old)
            if old in self._parent_of:
                self._by_parent.pop(self._parent_of.pop(old), None)

    def drop_nested(self, usages: Sequence[UsageRecord], counts: Counter[str]) -> list[UsageRecord]:
        """The usages that are not a nested repeat of a call already seen; repeats are counted."""
        kept = []
        # Inner spans end first; in that order a chain is met link by link, whatever the batch order.
        for u in sorted(usages, key=lambda u: u.end_time_ns):
            key = (u.trace_id, u.span_id)
            if key in self._by_span:  # redelivered: decided before, decide the same again
                nested = key in self._nested
            else:
                nested = self._seen_as_child(u) or self._seen_as_parent(u)
                self._remember(u)  # nested ones too: a chain of three links through the middle
                if nested:
                    self._nested.add(key)
            if nested:
                counts[NotBillableReason.DUPLICATE_NESTED.value] += 1
            else:
                kept.append(u)
        return kept
