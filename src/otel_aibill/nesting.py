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

_NESTED = NotBillableReason.DUPLICATE_NESTED.value


class NestedCalls:
    def __init__(self, size: int) -> None:
        self._size = size
        self._by_span: OrderedDict[SpanKey, Seen] = OrderedDict()
        self._by_parent: dict[SpanKey, list[Seen]] = {}
        self._parent_of: dict[SpanKey, SpanKey] = {}
        self._nested: set[SpanKey] = set()

    def drop_nested(self, usages: Sequence[UsageRecord], counts: Counter[str]) -> list[UsageRecord]:
        """The usages that are not a nested repeat of a call already seen; repeats are counted."""
        return [usages[i] for i in self.kept_indices(usages, counts)]

    def kept_indices(self, usages: Sequence[UsageRecord], counts: Counter[str]) -> list[int]:
        """``drop_nested`` as positions in ``usages``, in the order it keeps them (end time)."""
        by_span, by_parent, parent_of = self._by_span, self._by_parent, self._parent_of
        nested_keys, size = self._nested, self._size
        kept: list[int] = []
        repeats = 0
        # Inner spans end first; in that order a chain is met link by link, whatever the batch order.
        ends = [u.end_time_ns for u in usages]
        for i in sorted(range(len(usages)), key=ends.__getitem__):
            u = usages[i]
            trace_id = u.trace_id
            key = (trace_id, u.span_id)
            if key in by_span:  # redelivered: decided before, decide the same again
                nested = key in nested_keys
            else:
                fingerprint = (u.provider, u.input_tokens, u.output_tokens)
                response_id = u.response_id
                parent_id = u.parent_span_id
                nested = False
                # the same call as its parent, or as a child already seen
                if parent_id is not None:
                    parent = (trace_id, parent_id)
                    other = by_span.get(parent)
                    nested = other is not None and _same_call(fingerprint, response_id, other)
                if not nested and (children := by_parent.get(key)):
                    nested = any(_same_call(fingerprint, response_id, child) for child in children)
                # remembered, nested ones too: a chain of three links through the middle
                seen = (fingerprint, response_id)
                by_span[key] = seen
                if parent_id is not None:
                    by_parent.setdefault(parent, []).append(seen)
                    parent_of[key] = parent
                while len(by_span) > size:
                    old, _ = by_span.popitem(last=False)
                    nested_keys.discard(old)
                    if old in parent_of:
                        by_parent.pop(parent_of.pop(old), None)
                if nested:
                    nested_keys.add(key)
            if nested:
                repeats += 1
            else:
                kept.append(i)
        if repeats:
            counts[_NESTED] += repeats
        return kept


def _same_call(fingerprint: Fingerprint, response_id: str | None, other: Seen) -> bool:
    if other[0] != fingerprint:
        return False
    return response_id is None or other[1] is None or other[1] == response_id
