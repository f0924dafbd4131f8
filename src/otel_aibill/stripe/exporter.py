"""The exporter loop: ledger rows -> persisted batch -> meter events -> confirmed, exactly once.

Order of a run: finish batches a crash left half-built; put ledger rows (and held rows that
can now be sent) into one new batch, planned and persisted before sending; reconcile events
whose first attempt is older than Stripe's dedupe window; send the rest; record the outcome.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import stripe

from otel_aibill.config import Config
from otel_aibill.ledger.base import Ledger, LedgerRow
from otel_aibill.stripe.config import StripeConfig, currency_of, stripe_config
from otel_aibill.stripe.customers import customer_map, resolve
from otel_aibill.stripe.plan import ExportRow, plan_batch, token_types
from otel_aibill.stripe.reconcile import committed_subset, meter_ids, summary_total
from otel_aibill.stripe.store import HELD_BATCH, ExportStore, HeldRow, StoredEvent
from otel_aibill.stripe.transport import Outcome, SendResult, V1Sender, V2Sender, isolate
from otel_aibill.usage import UNATTRIBUTED

log = logging.getLogger("otel_aibill.stripe")

Hook = Callable[[str, Sequence[str]], None]
"""Called at ``staged``, ``finalized`` and ``sent`` (after Stripe answered, before we record it)."""

RETRYABLE_HELD = ("no_stripe_mapping", "rejected_customer", "currency_mismatch")


class LeaseLost(RuntimeError):
    """Another exporter took the lease (ours ran out): stop before doing anything twice."""


@dataclass(slots=True)
class ExportReport:
    dry_run: bool
    batches: list[str] = field(default_factory=list)
    rows_staged: int = 0
    events_planned: int = 0
    events_sent: int = 0
    events_already_in_stripe: int = 0
    requests: int = 0
    rate_limited: int = 0
    retry_later: int = 0
    rejected: int = 0
    reconciled: int = 0
    review: int = 0
    held: dict[str, int] = field(default_factory=dict)
    """Rows newly held back, by reason."""
    held_released: int = 0
    """Held rows whose cause was fixed, sent on in this run."""
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return self.pending == 0


class StripeExporter:
    def __init__(
        self,
        ledger: Ledger,
        store: ExportStore,
        config: Config,
        client: stripe.StripeClient | None,
        *,
        stripe_settings: StripeConfig | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        hook: Hook | None = None,
    ) -> None:
        self.ledger, self.store, self.config, self.client = ledger, store, config, client
        self.sc = stripe_settings or stripe_config(config)
        self.currency = currency_of(config, self.sc)
        self._clock, self._sleep, self._hook = clock, sleep, hook or (lambda point, ids: None)
        self._v2: V2Sender | None = None
        self._meters: dict[str, tuple[str, str]] | None = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._lease_until = 0
        self._lease_lock = threading.Lock()

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                report = self.run_once()
                wait = self.sc.poll_interval if report.settled else min(self.sc.poll_interval, 5.0)
            except Exception:
                log.exception("stripe export run failed; retrying")
                wait = self.sc.poll_interval
            stop.wait(wait)

    def run_once(self) -> ExportReport:
        if self.client is None:
            return self._dry_run()
        report = ExportReport(dry_run=False)
        until = self.store.acquire_lease(self._owner, self._now(), self.sc.lease_ttl, _owner_gone)
        if until is None:
            report.errors.append("another exporter is running on this database; nothing done")
        else:
            self._lease_until = until
            try:
                for batch in self.store.staging_batches():
                    self._finalize(batch, report)
                self._stage(report)
                self._send(report)
            finally:
                self.store.release_lease(self._owner)
        report.pending = len(self.store.events(states=["pending"]))
        report.review = len(self.store.events(states=["review"]))
        return report

    def _now(self) -> int:
        return int(self._clock())

    def _keep_lease(self) -> None:
        """Renew the lease once a third of it is used; stop if another exporter took it."""
        with self._lease_lock:
            now = self._now()
            if now < self._lease_until - self.sc.lease_ttl * 2 // 3:
                return
            until = self.store.acquire_lease(self._owner, now, self.sc.lease_ttl, _owner_gone)
            if until is None:
                raise LeaseLost("the export lease ran out and another exporter took it")
            self._lease_until = until

    # -- classify and stage -----------------------------------------------------------------

    def _classify(
        self, row: ExportRow, mapping: Mapping[str, str], rejected: Mapping[str, str], now: int
    ) -> ExportRow | HeldRow:
        if row.customer in ("", UNATTRIBUTED):
            return HeldRow(row, "unattributed", "usage without a customer", now)
        if row.start_ns // 1_000_000_000 < now - self.sc.max_event_age:
            return HeldRow(
                row, "too_old", f"older than {self.sc.max_event_age}s: Stripe would refuse it", now
            )
        if self.sc.mode == "cost" and row.currency.upper() != self.currency:
            return HeldRow(row, "currency_mismatch", f"{row.currency} usage, {self.currency} meter", now)
        if self.sc.mode == "tokens":
            # One row whose parts exceed their totals would otherwise fail every later plan.
            try:
                token_types(row, self.sc.cache_token_providers)
            except ValueError as exc:
                return HeldRow(row, "invalid_tokens", str(exc), now)
        stripe_id = resolve(row.customer, mapping)
        if stripe_id is None:
            return HeldRow(row, "no_stripe_mapping", f"no Stripe customer for {row.customer!r}", now)
        if stripe_id in rejected:
            return HeldRow(
                _with_customer(row, stripe_id),
                "rejected_customer",
                rejected[stripe_id],
                now,
            )
        return _with_customer(row, stripe_id)

    def _stage(self, report: ExportReport) -> None:
        now = self._now()
        mapping = customer_map(self.ledger, self.config)
        rejected = self.store.rejected_customers()
        batch_id = uuid.uuid4().hex[:16]
        self.store.create_batch(batch_id, now, self.sc.api, self.sc.mode)
        staged = 0

        # Held rows whose cause is gone go first, into the same batch.
        retry = []
        for held in self.store.held():
            if held.reason not in RETRYABLE_HELD:
                continue
            if held.reason == "rejected_customer" and held.row.stripe_customer in rejected:
                continue
            fixed = self._classify(held.row, mapping, rejected, now)
            if isinstance(fixed, ExportRow):
                retry.append(fixed)
        if retry:
            # The ledger keeps these rows in the held batch (it never moves a row between
            # batches); which events they ended up in is recorded here (``event_members``).
            self.store.restage_held(batch_id, retry)
            report.held_released += len(retry)
            staged += len(retry)

        while staged < self.sc.batch_rows:
            self._keep_lease()
            page = self.ledger.exportable(min(self.sc.page_rows, self.sc.batch_rows - staged))
            if not page:
                break
            known = self.store.known_seqs([r.seq for r in page])
            if known:
                # Staged before a crash that came before the ledger heard of it: tell it again.
                self._reassign(known)
            fresh = [r for r in page if r.seq not in known]
            if not fresh:
                if len(known) == len(page) and self._stuck(page):
                    report.errors.append("ledger keeps returning rows already exported; stopping")
                    break
                continue
            rows: list[ExportRow] = []
            held_rows: list[HeldRow] = []
            for lrow in fresh:
                item = self._classify(_export_row(lrow), mapping, rejected, now)
                (rows if isinstance(item, ExportRow) else held_rows).append(item)  # type: ignore[arg-type]
            self.store.stage(batch_id, rows, held_rows)
            self._hook("staged", [str(r.seq) for r in rows])
            if rows:
                self.ledger.assign_export_batch([r.seq for r in rows], batch_id)
            if held_rows:
                self.ledger.assign_export_batch([d.row.seq for d in held_rows], HELD_BATCH)
                counts: dict[str, int] = {}
                for d in held_rows:
                    report.held[d.reason] = report.held.get(d.reason, 0) + 1
                    counts[d.reason] = counts.get(d.reason, 0) + 1
                    log.debug("stripe export: row %s held (%s): %s", d.row.seq, d.reason, d.detail)
                for reason, n in sorted(counts.items()):  # one line per reason, not one per row
                    log.warning("stripe export: %d rows held (%s)", n, reason)
            staged += len(rows)
        if staged == 0:
            self.store.drop_batch(batch_id)
            return
        report.rows_staged += staged
        self._finalize(batch_id, report)

    def _reassign(self, known: Mapping[int, str]) -> None:
        by_batch: dict[str, list[int]] = defaultdict(list)
        for seq, batch in known.items():
            by_batch[batch or HELD_BATCH].append(seq)
        for batch, seqs in by_batch.items():
            self.ledger.assign_export_batch(seqs, batch)

    def _stuck(self, page: Sequence[LedgerRow]) -> bool:
        again = self.ledger.exportable(len(page))
        return bool(again) and {r.seq for r in again} == {r.seq for r in page}

    def _finalize(self, batch_id: str, report: ExportReport) -> None:
        events, carry = plan_batch(
            batch_id, self.store.iter_staged(batch_id), self.sc, self.store.carry(), self._now()
        )
        self.store.finalize(batch_id, events, carry)
        self._hook("finalized", [e.identifier for e in events])
        report.batches.append(batch_id)
        report.events_planned += len(events)

    # -- send -------------------------------------------------------------------------------

    def _meter_ok(self, report: ExportReport, event_names: set[str]) -> set[str]:
        assert self.client is not None
        if self._meters is None or not event_names <= set(self._meters):
            self._meters = meter_ids(self.client)
        ok = {n for n in event_names if self._meters.get(n, ("", ""))[1] == "active"}
        for name in sorted(event_names - ok):
            msg = f"no active Stripe meter for event {name!r}: run `otel-aibill stripe setup`; events held"
            log.error(msg)
            report.errors.append(msg)
        return ok

    def _send(self, report: ExportReport) -> None:
        pending = self.store.events(states=["pending"])
        if not pending:
            return
        ok = self._meter_ok(report, {e.event_name for e in pending})
        pending = [e for e in pending if e.event_name in ok]
        pending = self._reconcile_stale(pending, report)
        if not pending:
            return
        if self.sc.api == "v2":
            self._send_v2(pending, report)
        else:
            self._send_v1(pending, report)

    def _reconcile_stale(self, pending: list[StoredEvent], report: ExportReport) -> list[StoredEvent]:
        """Before resending an event tried longer ago than the dedupe window, ask Stripe if it has it."""
        assert self.client is not None and self._meters is not None
        now = self._now()
        stale_keys = {
            (e.stripe_customer, e.event_name)
            for e in pending
            if e.first_attempt_at is not None and now - e.first_attempt_at > self.sc.dedupe_window
        }
        if not stale_keys:
            return pending
        settled: set[str] = set()
        for customer, name in sorted(stale_keys):
            unknown = [
                e for e in pending if (e.stripe_customer, e.event_name) == (customer, name) and e.attempts > 0
            ]
            start = min(e.timestamp for e in unknown)
            end = max(e.timestamp for e in unknown) + 1
            sent = self.store.events(
                states=["sent"],
                stripe_customer=customer,
                event_name=name,
                ts_from=start - start % 60,
                ts_to=-(-end // 60) * 60,
            )
            in_stripe = summary_total(self.client, self._meters[name][0], customer, start, end)
            missing = in_stripe - sum(e.value for e in sent)
            subset = (
                committed_subset([e.value for e in unknown], int(missing))
                if missing == missing.to_integral_value() and missing >= 0
                else None
            )
            ids = [e.identifier for e in unknown]
            settled.update(ids)
            if subset is None:
                self.store.mark_state(ids, "review", "reconcile", f"Stripe has {in_stripe}, ambiguous")
                report.review += len(ids)
                log.error(
                    "stripe export: cannot tell which of %d events Stripe holds for %s/%s",
                    len(ids),
                    customer,
                    name,
                )
                continue
            committed = [unknown[i].identifier for i in subset]
            self.store.mark_sent(committed, now)
            self.store.reset_attempts([i for i in ids if i not in set(committed)])
            report.reconciled += len(ids)
        fresh = {e.identifier: e for e in self.store.events(states=["pending"])}
        return [
            fresh[e.identifier]
            for e in pending
            if e.identifier in fresh and (e.identifier not in settled or fresh[e.identifier].attempts == 0)
        ]

    def _backoff(self, attempt: int) -> float:
        base: float = min(self.sc.backoff_max, self.sc.backoff_initial * 2.0**attempt)
        return base * (0.5 + random.random() / 2)  # seconds, jittered

    def _record(self, events: Sequence[StoredEvent], result: SendResult, report: ExportReport) -> None:
        ids = [e.identifier for e in events]
        if result.outcome in (Outcome.SENT, Outcome.DUPLICATE):
            self.store.mark_sent(ids, self._now())
            if result.outcome is Outcome.SENT:
                report.events_sent += len(ids)
            else:
                report.events_already_in_stripe += len(ids)
        elif result.outcome is Outcome.REJECTED:
            self.store.mark_state(ids, "error", result.code, result.message)
            report.rejected += len(ids)
            log.error("stripe export: Stripe rejected %s: %s %s", ids, result.code, result.message)
        else:
            self.store.note_error(ids, f"{result.outcome}: {result.code} {result.message}")
            report.retry_later += len(ids)
            if result.outcome is Outcome.METER:
                report.errors.append(result.message)

    def _with_rate_limit(self, call: Callable[[], SendResult], report: ExportReport) -> SendResult:
        attempt = 0
        while True:
            result = call()
            if result.outcome is not Outcome.RATE_LIMITED:
                return result
            report.rate_limited += 1
            if attempt >= self.sc.rate_limit_retries:
                return result
            self._sleep(self._backoff(attempt))
            attempt += 1

    def _send_v1(self, pending: list[StoredEvent], report: ExportReport) -> None:
        assert self.client is not None
        # One in-flight call per (customer, meter): each worker owns whole keys.
        parts: dict[int, list[StoredEvent]] = defaultdict(list)
        for ev in pending:
            parts[hash((ev.stripe_customer, ev.event_name)) % self.sc.concurrency].append(ev)
        senders = [V1Sender(self.client, self.sc) for _ in parts]

        def work(sender: V1Sender, events: list[StoredEvent]) -> None:
            for ev in events:
                self._keep_lease()
                self.store.mark_attempt([ev.identifier], self._now())
                result = self._with_rate_limit(lambda ev=ev: sender.send(ev), report)  # type: ignore[misc]
                self._hook("sent", [ev.identifier])
                self._record([ev], result, report)

        if len(parts) == 1:
            work(senders[0], next(iter(parts.values())))
        else:
            with ThreadPoolExecutor(max_workers=len(parts)) as pool:
                for f in [pool.submit(work, s, evs) for s, evs in zip(senders, parts.values(), strict=True)]:
                    f.result()
        report.requests += sum(s.requests for s in senders)

    def _send_v2(self, pending: list[StoredEvent], report: ExportReport) -> None:
        assert self.client is not None
        if self._v2 is None:
            self._v2 = V2Sender(self.client, self.sc, self._clock)
        sender = self._v2
        before = sender.requests
        size = self.sc.max_events_per_request
        for i in range(0, len(pending), size):
            chunk = pending[i : i + size]
            self._keep_lease()
            self.store.mark_attempt([e.identifier for e in chunk], self._now())

            def send(events: Sequence[StoredEvent]) -> SendResult:
                self._keep_lease()
                return self._with_rate_limit(lambda: sender.send(events), report)

            for part, result in isolate(chunk, send):
                self._hook("sent", [e.identifier for e in part])
                self._record(part, result, report)
        report.requests += sender.requests - before

    # -- what is held -----------------------------------------------------------------------

    def held_counts(self) -> dict[str, int]:
        """Every ledger row held back from Stripe now, by reason: the held rows the store keeps,
        plus the rows not yet exported that a run would hold (a dry run does not store those).
        The one count ``stripe export`` and ``stripe held`` both show."""
        counts: dict[str, int] = {}
        for held in self.store.held():
            counts[held.reason] = counts.get(held.reason, 0) + 1
        now = self._now()
        mapping = customer_map(self.ledger, self.config)
        rejected = self.store.rejected_customers()
        page = self.ledger.exportable(self.sc.batch_rows)
        known = self.store.known_seqs([r.seq for r in page])
        for lrow in page:
            if lrow.seq not in known:
                item = self._classify(_export_row(lrow), mapping, rejected, now)
                if isinstance(item, HeldRow):
                    counts[item.reason] = counts.get(item.reason, 0) + 1
        return dict(sorted(counts.items()))

    # -- dry run ----------------------------------------------------------------------------

    def _dry_run(self) -> ExportReport:
        """No key: plan what would be sent from the rows not yet exported; record and list it."""
        report = ExportReport(dry_run=True)
        now = self._now()
        mapping = customer_map(self.ledger, self.config)
        page = self.ledger.exportable(self.sc.batch_rows)
        known = self.store.known_seqs([r.seq for r in page])
        rows = []
        for lrow in page:
            if lrow.seq in known:
                continue
            item = self._classify(_export_row(lrow), mapping, {}, now)
            if isinstance(item, ExportRow):
                rows.append(item)
            else:
                report.held[item.reason] = report.held.get(item.reason, 0) + 1
        events, _ = plan_batch("dryrun", rows, self.sc, self.store.carry(), now)
        report.rows_staged = len(rows)
        report.events_planned = len(events)
        self.store.record_dry_run([(e, e.payload(self.sc)) for e in events if e.value > 0], now)
        report.dry_run_events = self.store.dry_run()
        return report


def _owner_gone(owner: str) -> bool:
    """A lease holder on this host whose process no longer exists (it crashed)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _with_customer(row: ExportRow, stripe_id: str) -> ExportRow:
    # Spelled out: dataclasses.replace costs more than the rest of classification per row.
    return ExportRow(
        row.seq,
        row.customer,
        stripe_id,
        row.start_ns,
        row.provider,
        row.model,
        row.currency,
        row.billed,
        row.input_tokens,
        row.output_tokens,
        row.cache_read_tokens,
        row.cache_write_tokens,
    )


def _export_row(lrow: LedgerRow) -> ExportRow:
    p = lrow.priced
    u = p.usage
    return ExportRow(
        seq=lrow.seq,
        customer=u.customer or "",
        stripe_customer="",
        start_ns=u.start_time_ns,
        provider=u.provider,
        model=u.model,
        currency=p.currency,
        billed=p.billed if p.billed is not None else Decimal(0),
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
    )
