"""Spans of one trace that describe the same provider call are billed once, with the best of each.

One call is often seen by several instrumentations at once: a framework's LLM span and the SDK
instrumentation's span below it (LangChain under OpenInference or OpenLLMetry, LiteLLM over an
instrumented SDK), an SDK's own span beside an instrumentor's, or nested instrumentations of one
SDK. Their spans need not be parent and child (the OpenInference LangChain tracer does not attach
its spans to the context) and need not share a response id (OpenInference records none).

Two usage spans of one trace and provider are the same call when

* they carry the same response id; or
* they have the same input and output totals, no conflicting response ids, and either one is the
  parent of the other, or they come from different instrumentation scopes, name compatible models
  (request or response model, with or without a date suffix) and one's interval lies within the
  other's (give or take :data:`TOLERANCE_NS`).

A call holds at most one span per scope (unless linked as parent/child or by response id), so two
parallel calls with equal usage, each seen by two instrumentations, stay two calls.

Merge, don't pick: the bill takes, field by field, the best information any span of the call
carries (:func:`merge`): the totals and parts of the richest span, parts only the others report
(cache reads and writes, reasoning, audio), the most specific served model, the response id and
the service tier. The result depends only on the set of spans, not on their order.

Memory is a window of the most recent calls (bounded in number, evicted oldest first, like the
pipeline's trace customers). When a span enriches a call stored by an earlier batch, the decision
says so, so the stored row can be superseded; when an append fails, :meth:`SameCalls.forget`
undoes what that batch changed, so that a retry is decided afresh.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from otel_aibill.records import replacer
from otel_aibill.semconv.counts import Counts
from otel_aibill.semconv.tokens import InvalidUsage
from otel_aibill.usage import NotBillableReason, UsageRecord

TOLERANCE_NS = 2_000_000
"""How far (2 ms) one span's start or end may lie outside the other's for one to be within it."""
MAX_SPANS_PER_CALL = 8
MAX_CANDIDATES = 64
"""A span is compared with at most this many of the most recent calls of each kind in its trace:
spans of one call end close together (an exporter sends them in end order), and a trace of
thousands of equal calls must not cost thousands of comparisons a span."""

_DUPLICATE = NotBillableReason.DUPLICATE_CALL.value
_PARTS = (
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)
_DATE = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-v\d+:\d+)$")
_with_data = replacer(
    UsageRecord,
    "model",
    *_PARTS,
    "request_model",
    "response_model",
    "service_tier",
    "response_id",
    "server_address",
    "customer",
    "reported_cost",
)


def model_base(model: str | None) -> str | None:
    """The model id without a date or version suffix, lowercased: what two spans of one call share."""
    if not model:
        return None
    name = model.strip().lower().rsplit("/", 1)[-1]
    return _DATE.sub("", name) or name


def _models(u: UsageRecord) -> set[str]:
    return {
        b for m in (u.model, u.request_model, u.response_model) if (b := model_base(m)) and b != "unknown"
    }


def _within(a: UsageRecord, b: UsageRecord) -> bool:
    """One interval lies within the other, with the tolerance."""
    t = TOLERANCE_NS
    return (a.start_time_ns >= b.start_time_ns - t and a.end_time_ns <= b.end_time_ns + t) or (
        b.start_time_ns >= a.start_time_ns - t and b.end_time_ns <= a.end_time_ns + t
    )


def _linked(a: UsageRecord, b: UsageRecord) -> bool:
    return a.parent_span_id == b.span_id or b.parent_span_id == a.span_id


def same_call(a: UsageRecord, b: UsageRecord) -> bool:
    """Whether two usage spans (of one trace) describe one provider call (see the module doc)."""
    if a.provider != b.provider:
        return False
    if a.response_id is not None and b.response_id is not None:
        return a.response_id == b.response_id
    if a.input_tokens != b.input_tokens or a.output_tokens != b.output_tokens:
        return False
    if _linked(a, b):
        return True
    if a.scope_name == b.scope_name or not _within(a, b):
        return False
    ma, mb = _models(a), _models(b)
    return not ma or not mb or not ma.isdisjoint(mb)


def richness(u: UsageRecord) -> tuple[int, int]:
    """How much of a call a span reports: its non-zero token parts (they change the price), then
    its served details."""
    return (
        sum(1 for name in _PARTS if getattr(u, name)),
        (u.response_model is not None) + (u.response_id is not None) + (u.service_tier is not None),
    )


def _rank(u: UsageRecord) -> tuple[int, int, int, str]:
    parts, details = richness(u)
    return (-parts, -details, u.end_time_ns, u.span_id)


def _specific(model: str) -> tuple[bool, int, str]:
    return (model_base(model) != model.strip().lower(), len(model), model)


def merge(spans: Iterable[UsageRecord], identity: UsageRecord | None = None) -> UsageRecord:
    """One record for the spans of one call: ``identity``'s ids and times (by default the richest
    span's), the richest span's totals, each part at its largest among the spans with those totals,
    the most specific served model, and the first response id, tier and address in rank order.
    Independent of the order of ``spans``."""
    ranked = sorted(spans, key=_rank)
    base = ranked[0]
    identity = identity or base
    same_totals = [
        u for u in ranked if u.input_tokens == base.input_tokens and u.output_tokens == base.output_tokens
    ]
    parts = [max(getattr(u, name) for u in same_totals) for name in _PARTS]
    try:
        Counts(base.input_tokens, base.output_tokens, *parts).validate()
    except InvalidUsage:  # parts that do not fit together: keep the richest span's own
        parts = [getattr(base, name) for name in _PARTS]
    served = [u for u in ranked if u.response_model is not None]
    if served:
        best = max(served, key=lambda u: _specific(u.response_model or ""))
        model, response_model = best.model, best.response_model
    else:
        model, response_model = base.model, None
    return _with_data(
        identity,
        model,
        *parts,
        next((u.request_model for u in ranked if u.request_model is not None), None),
        response_model,
        next((u.service_tier for u in ranked if u.service_tier is not None), None),
        next((u.response_id for u in ranked if u.response_id is not None), None),
        next((u.server_address for u in ranked if u.server_address is not None), None),
        identity.customer
        if identity.customer is not None
        else next((u.customer for u in ranked if u.customer is not None), None),
        next((u.reported_cost for u in ranked if u.reported_cost is not None), None),
    )


class _Call:
    """The spans of one call seen so far, and which one the ledger bills it under."""

    __slots__ = ("billed", "indexed", "merged", "spans")

    def __init__(self, first: UsageRecord) -> None:
        self.indexed = False  # a trace's only call is not indexed: it is compared directly
        self.spans = [first]
        self.billed = first  # whose ids the bill carries
        self.merged = first  # the bill: ``billed``'s ids, the best data of ``spans``

    def match(self, u: UsageRecord) -> tuple[int, int] | None:
        """How well ``u`` joins this call (lower is better: response id, parent/child, time
        distance), or None when it does not."""
        strong = linked = weak = False
        for s in self.spans:
            if u.response_id is not None and s.response_id is not None and u.response_id != s.response_id:
                return None  # another response: another call
            if same_call(u, s):
                if u.response_id is not None and u.response_id == s.response_id:
                    strong = True
                elif _linked(u, s):
                    linked = True
                else:
                    weak = True
        if strong:
            return (0, 0)
        if linked:
            return (1, 0)
        if not weak or any(s.scope_name == u.scope_name for s in self.spans):
            return None  # one span per instrumentation: an equal call of the same one is another call
        distance = min(
            abs(s.start_time_ns - u.start_time_ns) + abs(s.end_time_ns - u.end_time_ns) for s in self.spans
        )
        return (2, distance)


@dataclass(slots=True)
class Decision:
    """What to bill of one batch of usages.

    ``kept``: positions in the batch of the spans billed, in end-time order; ``merged``: for a kept
    position whose bill is not the span's own record, the merged record; ``superseded``: merged
    records (with the ids of the span stored earlier) of calls an earlier batch billed and this one
    enriched.
    """

    kept: list[int] = field(default_factory=list)
    merged: dict[int, UsageRecord] = field(default_factory=dict)
    superseded: list[UsageRecord] = field(default_factory=list)
    duplicates: int = 0


class _Seen:
    """A trace in the window: how many of its calls are remembered, and the call itself while it is
    the only one (not indexed: a trace of one call costs a dict entry)."""

    __slots__ = ("calls", "only")

    def __init__(self, only: _Call) -> None:
        self.calls = 1
        self.only: _Call | None = only


class SameCalls:
    """The same-call rule over batches, with a bounded window of recent calls (see module doc).

    The calls are indexed by what a span of the same call must share with one of their spans, its
    trace always: its span id (seen before), its response id, a parent/child link, or its provider
    and totals under another scope; a span is compared only with those calls (the most recent
    :data:`MAX_CANDIDATES` of each kind), so a trace of many equal calls costs no more. The oldest
    calls are forgotten first once ``size`` are remembered.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._calls: deque[_Call] = deque()  # oldest first
        self._traces: dict[str, _Seen] = {}
        self._by_span: dict[tuple[str, str], _Call] = {}
        self._by_response: dict[tuple[str, str], _Call] = {}
        self._by_parent: dict[tuple[str, str], list[_Call]] = {}
        self._by_counts: dict[tuple[str, str, int, int], dict[str, list[_Call]]] = {}  # -> scope -> calls
        # what the last ``decide`` changed, for ``forget``
        self._created: list[_Call] = []
        self._grown: list[tuple[_Call, int, UsageRecord]] = []  # spans and merged before

    def decide(self, usages: Sequence[UsageRecord], counts: Counter[str]) -> Decision:
        """Group ``usages`` into calls (with the window's), count the repeats in ``counts``."""
        decision = Decision()
        kept = decision.kept
        created: list[_Call] = []
        created_at: dict[int, int] = {}  # id(new call) -> position of its first span
        grown: dict[int, tuple[_Call, int, UsageRecord]] = {}  # id(call) -> before this batch
        joined: dict[int, dict[str, int]] = {}  # id(new call with several spans) -> span id -> position
        ends = [u.end_time_ns for u in usages]
        order = sorted(range(len(usages)), key=lambda i: (ends[i], usages[i].span_id))
        for i in order:
            u = usages[i]
            call = self._find(u)
            if call is None:
                call = _Call(u)
                self._add(call)
                created.append(call)
                created_at[id(call)] = i
                kept.append(i)  # a call of one span so far: billed as it is
                continue
            if any(s.span_id == u.span_id for s in call.spans):
                # seen before: decided the same way
                if call.billed.span_id == u.span_id and id(call) not in created_at:
                    kept.append(i)  # on to the ledger, which counts the span twice
                    if call.merged is not call.billed:
                        decision.merged[i] = call.merged
                else:
                    decision.duplicates += 1
                continue
            decision.duplicates += 1
            if len(call.spans) >= MAX_SPANS_PER_CALL:
                continue
            if id(call) in created_at:
                positions = joined.get(id(call))
                if positions is None:
                    positions = joined[id(call)] = {call.spans[0].span_id: created_at[id(call)]}
                positions[u.span_id] = i
            elif id(call) not in grown:
                grown[id(call)] = (call, len(call.spans), call.merged)
            call.spans.append(u)
            if call.indexed:
                self._index(call, u)
        if joined:  # new calls of several spans: billed once, as their merge, under the richest
            calls = {id(call): call for call in created}
            bills = set(kept)
            for key, positions in joined.items():
                call = calls[key]
                merged = merge(call.spans)
                call.billed = next(s for s in call.spans if s.span_id == merged.span_id)
                call.merged = call.billed if merged == call.billed else merged
                bills.difference_update(positions.values())
                pos = positions[call.billed.span_id]
                bills.add(pos)
                if call.merged is not call.billed:
                    decision.merged[pos] = call.merged
            kept[:] = sorted(bills, key=lambda i: (ends[i], usages[i].span_id))
        for call, _, before in grown.values():
            merged = merge(call.spans, call.billed)
            if merged != before:
                decision.superseded.append(merged)
                call.merged = merged
        if decision.duplicates:
            counts[_DUPLICATE] += decision.duplicates
        self._created, self._grown = created, list(grown.values())
        return decision

    def forget(self) -> None:
        """Undo the last ``decide`` (its batch's append failed), so that a retry of those spans
        is decided as if they had never been seen."""
        for call, spans_before, merged_before in self._grown:
            gone = call.spans[spans_before:]
            del call.spans[spans_before:]
            if call.indexed:
                self._unindex(call, gone)
            call.merged = merged_before
        for call in reversed(self._created):
            try:
                self._calls.remove(call)  # by identity: calls define no equality
            except ValueError:
                continue  # already evicted
            self._drop_call(call)
        self._created, self._grown = [], []

    def _find(self, u: UsageRecord) -> _Call | None:
        """The call ``u`` belongs to: the one holding its span id, else the best match, else None."""
        trace_id = u.trace_id
        entry = self._traces.get(trace_id)
        if entry is None:
            return None  # a trace not seen (recently): nothing to compare with
        only = entry.only
        if only is not None:  # the trace's one call so far
            if any(s.span_id == u.span_id for s in only.spans):
                return only
            return only if only.match(u) is not None else None
        call = self._by_span.get((trace_id, u.span_id))
        if call is not None:
            return call
        candidates: list[_Call] = []
        if u.response_id is not None and (same := self._by_response.get((trace_id, u.response_id))):
            candidates.append(same)
        if u.parent_span_id is not None and (parent := self._by_span.get((trace_id, u.parent_span_id))):
            candidates.append(parent)
        children = self._by_parent.get((trace_id, u.span_id))
        if children:
            candidates += children[-MAX_CANDIDATES:]
        scopes = self._by_counts.get((trace_id, u.provider, u.input_tokens, u.output_tokens))
        if scopes:
            for scope, calls in scopes.items():
                if scope != u.scope_name:
                    candidates += calls[-MAX_CANDIDATES:]
        if not candidates:
            return None
        best: _Call | None = None
        best_key: tuple[int, int] | None = None
        for call in candidates:
            key = call.match(u)
            if key is not None and (best_key is None or key < best_key):
                best, best_key = call, key
        return best

    def _add(self, call: _Call) -> None:
        self._calls.append(call)
        trace_id = call.spans[0].trace_id
        entry = self._traces.get(trace_id)
        if entry is None:
            self._traces[trace_id] = _Seen(call)
        else:
            only = entry.only
            if only is not None:  # a second call: index both from now on
                entry.only = None
                self._index_all(only)
            entry.calls += 1
            self._index_all(call)
        if len(self._calls) > self._size:
            self._drop_call(self._calls.popleft())

    def _index_all(self, call: _Call) -> None:
        call.indexed = True
        for u in call.spans:
            self._index(call, u)

    def _drop_call(self, call: _Call) -> None:
        """Forget ``call`` (already out of ``_calls``)."""
        trace_id = call.spans[0].trace_id
        entry = self._traces.get(trace_id)
        if entry is None:
            return
        if call.indexed:
            self._unindex(call, call.spans, keep=())
        entry.calls -= 1
        if entry.calls <= 0:
            del self._traces[trace_id]
        elif entry.only is call:
            entry.only = None

    def _index(self, call: _Call, u: UsageRecord) -> None:
        trace_id = u.trace_id
        self._by_span[trace_id, u.span_id] = call
        rid = u.response_id
        if rid is not None:
            self._by_response.setdefault((trace_id, rid), call)
        parent = u.parent_span_id
        if parent is not None:
            children = self._by_parent.get((trace_id, parent))
            if children is None:
                self._by_parent[trace_id, parent] = [call]
            elif children[-1] is not call:
                children.append(call)
        key = (trace_id, u.provider, u.input_tokens, u.output_tokens)
        scopes = self._by_counts.get(key)
        if scopes is None:
            self._by_counts[key] = {u.scope_name: [call]}
        elif (same := scopes.get(u.scope_name)) is None:
            scopes[u.scope_name] = [call]
        elif same[-1] is not call:
            same.append(call)

    def _unindex(
        self, call: _Call, gone: Sequence[UsageRecord], keep: Sequence[UsageRecord] | None = None
    ) -> None:
        """Forget spans ``gone`` of ``call``; ``keep``: the spans it still has (by default its
        ``spans``), whose entries stay."""
        rest = call.spans if keep is None else keep
        if not rest:
            self._unindex_all(gone, call)
            return
        for u in gone:
            trace_id = u.trace_id
            if self._by_span.get((trace_id, u.span_id)) is call:
                del self._by_span[trace_id, u.span_id]
            rid = u.response_id
            if (
                rid is not None
                and self._by_response.get((trace_id, rid)) is call
                and all(s.response_id != rid for s in rest)
            ):
                del self._by_response[trace_id, rid]
            parent = u.parent_span_id
            if parent is not None and all(s.parent_span_id != parent for s in rest):
                _drop(self._by_parent, (trace_id, parent), call)
            key = (trace_id, u.provider, u.input_tokens, u.output_tokens)
            scope = u.scope_name
            if all(
                (s.provider, s.input_tokens, s.output_tokens, s.scope_name) != (*key[1:], scope) for s in rest
            ):
                scopes = self._by_counts.get(key)
                if scopes is not None:
                    _drop(scopes, scope, call)
                    if not scopes:
                        del self._by_counts[key]

    def _unindex_all(self, spans: Sequence[UsageRecord], call: _Call) -> None:
        """``_unindex`` of every span of a call that keeps none."""
        for u in spans:
            trace_id = u.trace_id
            if self._by_span.get((trace_id, u.span_id)) is call:
                del self._by_span[trace_id, u.span_id]
            if u.response_id is not None and self._by_response.get((trace_id, u.response_id)) is call:
                del self._by_response[trace_id, u.response_id]
            if u.parent_span_id is not None:
                _drop(self._by_parent, (trace_id, u.parent_span_id), call)
            key = (trace_id, u.provider, u.input_tokens, u.output_tokens)
            scopes = self._by_counts.get(key)
            if scopes is not None:
                _drop(scopes, u.scope_name, call)
                if not scopes:
                    del self._by_counts[key]


def _drop(index: dict[Any, list[_Call]], key: Any, call: _Call) -> None:
    calls = index.get(key)
    if calls is not None:
        if calls[0] is call and (len(calls) == 1 or calls[1] is not call):
            del calls[0]  # the oldest call, evicted: the common case
        else:
            calls[:] = [c for c in calls if c is not call]
        if not calls:
            del index[key]
