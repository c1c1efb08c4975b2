"""IntakeWorkflow: one per scope (e.g. per GitOps repository), id ``intake/<scope>``; signals in, loops out.

Callers deliver signals by signal-with-start of ``receive`` with a ``SignalBatch`` (a list, so a gateway can
micro-batch). The run loop drains what the handler recorded:

* dedup by fingerprint: a fingerprint seen before (within ``dedup_ttl``, up to ``dedup_capacity`` remembered) is
  a *refresh*, not new work: it replaces the pending signal if its window is still open, or is forwarded to the
  loop that owns it (alerts), and is counted either way;
* windows: new signals collect in the open window, which closes ``quiet_period`` after the last new signal,
  ``window_max_age`` after its first, or at ``window_max_signals``;
* a closed window goes to the activity ``triage.group_signals``; each work item starts a child
  ``RemediationWorkflow`` with id ``remediate/<scope>/<work-item-id>`` (``<service>-<kind>-<hash>``, deterministic
  from the grouping: ``fixloop.core.models.work_item_id``; parent-close policy ABANDON: loops outlive
  intake runs). A work item whose loop already runs (the same storm re-delivered, or new findings for the same
  fix) is sent to that loop as ``add_signals`` instead: one loop per fix, however often the storm comes;
* alerts on a service whose fix is in flight (a loop told the intake, by signal ``fixing``, that its merge
  request for that service is open) join that loop (``join_alerts``) instead of starting an investigation: the fix
  then has to make their monitors recover. An open incident tells the intake the same for each of its services, so
  its later alerts join it (one Jira comment per batch) instead of opening a second incident. Alerts arriving
  before any fix or incident for their service is open are triaged as usual (an ``incident`` on a topology, else
  ``alert_investigation``);
* Flux's applied revisions (signal ``flux_applied``, from the gateway's Flux hook) are kept, the newest 200, and
  handed to each incident loop at its start: its culprit change is the commit applied last before the onset, and a
  later deploy must not hide when the culprit was applied (the Kustomization's status only has the last one);
* the alert history: the (entity, metric) keys of each triage's correlated alerts are remembered
  (``fixloop.core.incidents.remember``, the 500 most frequent) and handed to the next triage, which ranks incidents
  with it (a chronic alert explains little: ``fixloop.core.rca.Background``);
* continue-as-new when the run's history passes ``max_run_events`` (or the server suggests it), checked before
  every window so that a steady stream of full windows cannot hold it off, carrying only ``IntakeState``: the
  dedup memory (8 bytes of fingerprint + 4 bytes of minute per entry, zlib-compressed: 100,000 fingerprints take
  about 1.2 MB of base64), the open window, counters. The carry must fit in one payload (Temporal's limit is
  2 MB): while it would pass ``CARRY_MAX_BYTES``, the open window is closed early (``closed_by="carry"``).
  Signals arriving faster than windows close pile up in the run's history (the server ends a run at 50 MB):
  senders of a storm pace themselves on ``status`` (``IntakeStatus.untriaged``: ``fixloop submit`` keeps at most
  one window untriaged before each further batch, ``bench/storm.py`` at most ``--backlog``).

Byte budgets (Temporal refuses a payload over 2 MiB and a request over 4 MiB; a workflow task's completion carries
all its commands' payloads): no payload this workflow sends can exceed them, whatever arrives, so it cannot stall
on ``PayloadsTooLarge``. Every signal is at most S = ``SIGNAL_MAX_BYTES`` = 16 KiB (``Signal`` cuts and counts).

* triage input: a closed window is triaged in chunks of at most ``triage_max_bytes`` T (default 512 KiB, at most
  768 KiB; ``fixloop.core.models.batched``) and ``window_max_signals``, plus ``recent_deploys`` (the newest 200, each a
  work item id of <= 64 and a service of <= 512 characters: <= 3.2 KB of JSON), ``incident_window`` (an ISO 8601
  duration, < 32 bytes), the alert history (``IntakeState.alert_history``, ``fixloop.core.incidents.remember``:
  at most 500 keys of at most 300 characters with their counts, < 160 KB) and no topology (the triage activity
  reads it itself, ``fixloop.activities.triage``): <= 768 KiB + 0.65 MB + 160 KB + the scope < 1.7 MiB;
* triage result: the activity refuses a result over R = ``RESULT_MAX_BYTES`` = 768 KiB (non-retryable
  ``TriageResultTooLarge``), and the chunk is then triaged in two halves, down to one signal, whose result is at
  most one work item or one unassigned entry built from that signal's <= 16 KiB (<< R);
* child starts and ``add_signals``: a work item (<= R) with its signals (a subset of its chunk, <= T) and, for an
  incident, the revisions Flux applied (``IntakeState.applied``: the newest ``APPLIED_KEPT`` = 200, each a sha, a
  time and a revision of <= 300 characters: < 90 KB) is <= 1.6 MiB + ``START_OVERHEAD_BYTES`` per start (< 2 MiB);
  the starts of a chunk are sent in groups of at most 1.5 MiB (or a single start) per workflow task (each counted
  with ``START_OVERHEAD_BYTES`` = 4 KiB for its id, options, summary, static details (at most 1.5 KiB) and search
  attributes), so a task's completion stays under 4 MiB;
* ``join_alerts`` and ``refresh`` to a loop: chunks of at most T and 500 signals, one per workflow task;
* continue-as-new: at most ``CARRY_MAX_BYTES`` (1.8 MB): the open window is closed early while it would not
  fit; with nothing pending, the oldest half of the alert owners, else of the open fixes, else of the dedup
  memory, is dropped (counted in ``owners_evicted`` / ``evicted``) until it does;
* ``receive`` signals are the sender's: ``fixloop.app.temporal.submit_signals`` sends at most 1 MiB per call.

Every signal received is accounted for: ``received == new + duplicates`` and ``new == assigned + unassigned +
pending``. Signal ``finish`` ends the workflow once the open window has closed and been triaged (a scope
retired, or a one-shot run such as ``bench/storm.py``; the window still closes by its own rules); the result is
the final ``IntakeState`` without the dedup memory. Query ``status`` -> ``IntakeStatus``.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from pydantic_core import to_json

    from fixloop.activities.triage import TriageActivities
    from fixloop.core.culprit import AppliedRevision
    from fixloop.core.incidents import remember
    from fixloop.core.markup import markdown
    from fixloop.core.metrics import INTAKE_SIGNALS, INTAKE_WINDOWS, TRIAGE_FALLBACKS
    from fixloop.core.models import (
        ALERT_KINDS,
        Kind,
        RecentDeploy,
        Signal,
        TriageResult,
        Unassigned,
        WorkItem,
        WorkItemKind,
        batched,
        signal_bytes,
    )
    from fixloop.workflows import options
    from fixloop.workflows.contracts.intake import (
        APPLIED_KEPT,
        Finish,
        FluxApplied,
        IntakeInput,
        IntakeState,
        IntakeStatus,
        SignalBatch,
        WindowRecord,
    )
    from fixloop.workflows.contracts.loop import AlertsJoined, MoreSignals, OpenFix, Refresh, RemediationInput, loop_id
    from fixloop.workflows.contracts.triage import RESULT_TOO_LARGE, GroupSignalsInput
    from fixloop.workflows.options import Call
    from fixloop.workflows.remediation import RemediationWorkflow, initial_attributes, static_details

WINDOWS_KEPT = 20
OWNERS_MAX = 10_000
RECENT_DEPLOYS_MAX = 200  # deploys of the last attach_window remembered: <= 3.2 KB each in a triage input
CARRY_MAX_BYTES = 1_800_000  # continue-as-new input, JSON; the server rejects payloads over 2 MiB
SIGNALS_PER_MESSAGE = 500  # signals per join_alerts / refresh signal to a loop (AlertsJoined's own bound)
STARTS_MAX_BYTES = 1_536 * 1024  # what one workflow task's child starts / add_signals may carry (gRPC: 4 MiB)
START_OVERHEAD_BYTES = 4 * 1024  # per child start beyond its work item and signals: ids, options, summary, attributes
_ENTRY = struct.Struct(">8sI")  # fingerprint prefix (first 16 hex chars), minute of last sighting


def pack_seen(seen: dict[bytes, int]) -> bytes:
    keys = sorted(seen)
    return b"".join(map(_ENTRY.pack, keys, map(seen.__getitem__, keys)))  # twice as fast as a generator


def unpack_seen(data: bytes) -> dict[bytes, int]:
    if len(data) % _ENTRY.size:
        raise ValueError(f"packed dedup memory of {len(data)} bytes is not a multiple of {_ENTRY.size}")
    return {k: v for k, v in _ENTRY.iter_unpack(data)}


def _minute(t: datetime) -> int:
    return int(t.timestamp() // 60)


@workflow.defn
class IntakeWorkflow:
    @workflow.init
    def __init__(self, inp: IntakeInput) -> None:
        self.inp = inp
        self.state = inp.state or IntakeState()
        self.seen = unpack_seen(zlib.decompress(self.state.seen)) if self.state.seen else {}
        self.state.seen = b""
        self._queue: list[SignalBatch] = []
        self._deploys: list[RecentDeploy] = []
        self._applied: list[AppliedRevision] = []
        self._fixes: list[OpenFix] = []
        self._forwards: list[tuple[str, list[Signal]]] = []
        self._worked = False

    @workflow.signal
    def receive(self, batch: SignalBatch) -> None:
        self._queue.append(batch)

    @workflow.signal
    def deployed(self, deploy: RecentDeploy) -> None:
        """A loop of this scope has deployed ``deploy.service``: alerts on it soon after attach to that loop."""
        self._deploys.append(deploy)

    @workflow.signal
    def flux_applied(self, applied: FluxApplied) -> None:
        """Flux applied these revisions (the gateway's ``ReconciliationSucceeded`` events): kept for incidents."""
        self._applied.extend(applied.revisions)

    @workflow.signal
    def fixing(self, fix: OpenFix) -> None:
        """A loop of this scope has a merge request open for ``fix.service`` (or has ended): alerts on that
        service join it until then."""
        self._fixes.append(fix)

    @workflow.signal
    def finish(self, request: Finish) -> None:
        self.state.finishing = True

    @workflow.query
    def status(self) -> IntakeStatus:
        return IntakeStatus(
            scope=self.inp.scope,
            counters=self.state.counters,
            pending=len(self.state.pending),
            remembered=len(self.seen),
            windows=self.state.windows,
            finishing=self.state.finishing,
            queued=sum(len(b.signals) for b in self._queue),
            window_max_signals=self.inp.options.window_max_signals,
        )

    @workflow.run
    async def run(self, inp: IntakeInput) -> IntakeState:
        while True:
            self._drain()
            if self._forwards:
                await self._forward_refreshes()
                continue
            if self.state.finishing and not self.state.pending and not self._queue:
                break
            if self._worked and options.continue_as_new_due(self.inp.options.max_run_events):
                await self._continue_as_new()
            closed_by = self._window_due()
            if closed_by:
                await self._close_window(closed_by)
                continue
            timeout = self._next_deadline()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._queue) or (self.state.finishing and not self.state.pending), timeout=timeout
                )
            except TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._evict()
        return self.state.model_copy(update={"seen": b""})

    # --- dedup and windows ---------------------------------------------------------------------------------

    def _drain(self) -> None:
        batches, self._queue = self._queue, []
        if self._deploys:
            self.state.recent_deploys.extend(self._deploys)
            del self.state.recent_deploys[:-RECENT_DEPLOYS_MAX]
            self._deploys = []
        if self._applied:
            known = {(a.at, a.sha): a for a in [*self.state.applied, *self._applied]}
            self.state.applied = sorted(known.values(), key=lambda a: (a.at, a.sha))[-APPLIED_KEPT:]
            self._applied = []
        for fix in self._fixes:
            if fix.open:
                self.state.open_fixes.pop(fix.service, None)  # re-insert: the newest fix of a service is last
                self.state.open_fixes[fix.service] = fix.loop
            elif self.state.open_fixes.get(fix.service) == fix.loop:
                del self.state.open_fixes[fix.service]
        self._fixes = []
        if not batches:
            return
        self._worked = True
        now = workflow.now()
        minute = _minute(now)
        c = self.state.counters
        new_before, duplicates_before = c.new, c.duplicates
        pending_index = {s.fingerprint: i for i, s in enumerate(self.state.pending)}
        refreshes: dict[str, list[Signal]] = {}
        added = False
        for batch in batches:
            for s in batch.signals:
                c.received += 1
                key = bytes.fromhex(s.fingerprint[:16])
                known = key in self.seen
                self.seen[key] = minute
                if not known:
                    c.new += 1
                    pending_index[s.fingerprint] = len(self.state.pending)
                    self.state.pending.append(s)
                    added = True
                    continue
                c.duplicates += 1
                i = pending_index.get(s.fingerprint)
                if i is not None:
                    if s.observed_at >= self.state.pending[i].observed_at:
                        self.state.pending[i] = s
                elif s.kind is Kind.ALERT and s.fingerprint in self.state.owners:
                    refreshes.setdefault(self.state.owners[s.fingerprint], []).append(s)
        options.count(INTAKE_SIGNALS, c.new - new_before, result="new")
        options.count(INTAKE_SIGNALS, c.duplicates - duplicates_before, result="duplicate")
        if added:
            if self.state.window_opened_at is None:
                self.state.window_opened_at = now
            self.state.last_new_at = now
        self._forwards.extend(refreshes.items())
        if len(self.seen) > self.inp.options.dedup_capacity * 1.1:
            self._evict()

    def _window_due(self) -> str | None:
        if not self.state.pending:
            return None
        opts = self.inp.options
        now = workflow.now()
        if len(self.state.pending) >= opts.window_max_signals:
            return "size"
        if self.state.window_opened_at and now - self.state.window_opened_at >= opts.window_max_age:
            return "age"
        if self.state.last_new_at and now - self.state.last_new_at >= opts.quiet_period:
            return "quiet"
        return None

    def _next_deadline(self) -> timedelta | None:
        if not self.state.pending or self.state.window_opened_at is None or self.state.last_new_at is None:
            return None
        opts = self.inp.options
        due = min(self.state.window_opened_at + opts.window_max_age, self.state.last_new_at + opts.quiet_period)
        return max(due - workflow.now(), timedelta(seconds=1))

    def _evict(self) -> None:
        opts = self.inp.options
        oldest = _minute(workflow.now() - opts.dedup_ttl)
        before = len(self.seen)
        kept = {k: m for k, m in self.seen.items() if m >= oldest}
        if len(kept) > opts.dedup_capacity:
            newest = sorted(kept.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[: opts.dedup_capacity]
            kept = dict(newest)
        self.seen = kept
        self.state.counters.evicted += before - len(kept)
        cutoff = workflow.now() - opts.attach_window
        self.state.recent_deploys = [d for d in self.state.recent_deploys if d.deployed_at >= cutoff][
            -RECENT_DEPLOYS_MAX:
        ]
        if len(self.state.owners) > OWNERS_MAX:
            self.state.counters.owners_evicted += len(self.state.owners) - OWNERS_MAX
            self.state.owners = dict(list(self.state.owners.items())[-OWNERS_MAX:])
        if len(self.state.open_fixes) > OWNERS_MAX:
            self.state.open_fixes = dict(list(self.state.open_fixes.items())[-OWNERS_MAX:])

    # --- triage and loops ----------------------------------------------------------------------------------

    async def _close_window(self, closed_by: str) -> None:
        opts = self.inp.options
        window, rest = self.state.pending[: opts.window_max_signals], self.state.pending[opts.window_max_signals :]
        self.state.pending = rest
        if not rest:
            self.state.window_opened_at = None
            self.state.last_new_at = None
        window, joined = await self._join_open_fixes(window)
        c = self.state.counters
        c.windows += 1
        c.assigned += joined
        started_before, updated_before = c.loops_started, c.loops_updated
        work_items = unassigned = 0
        for chunk in batched(window, max_bytes=opts.triage_max_bytes, max_count=opts.window_max_signals):
            items, left = await self._triage_chunk(chunk, closed_by)
            work_items += items
            unassigned += left
        self.state.windows.append(
            WindowRecord(
                closed_at=workflow.now(),
                closed_by=closed_by,
                signals=len(window) + joined,
                work_items=work_items,
                unassigned=unassigned,
                loops_started=c.loops_started - started_before,
                loops_updated=c.loops_updated - updated_before,
            )
        )
        del self.state.windows[:-WINDOWS_KEPT]
        options.count(INTAKE_WINDOWS, closed_by=closed_by)

    async def _triage_chunk(self, chunk: list[Signal], closed_by: str) -> tuple[int, int]:
        """Triage one chunk of a window and start (or update) a loop per work item; returns (work items,
        unassigned). A result too large for one payload is triaged again as two halves."""
        result = await self._triage(chunk, closed_by)
        if result is None:
            half = len(chunk) // 2
            first, second = await self._triage_chunk(chunk[:half], closed_by), await self._triage_chunk(
                chunk[half:], closed_by
            )
            return first[0] + second[0], first[1] + second[1]
        if result.alert_keys:  # the alerts ranked on a topology: the history the next incidents are ranked with
            self.state.alert_history = remember(self.state.alert_history, result.alert_keys)
        covered = {f for wi in result.work_items for f in wi.signals} | {u.fingerprint for u in result.unassigned}
        missing = {s.fingerprint for s in chunk} - covered
        c = self.state.counters
        c.assigned += sum(len(set(wi.signals)) for wi in result.work_items)
        c.unassigned += len(result.unassigned) + len(missing)
        if missing:
            workflow.logger.warning("triage left %d signal(s) without a group; counted unassigned", len(missing))
        by_fingerprint = {s.fingerprint: s for s in chunk}
        starts = [(wi, [by_fingerprint[f] for f in wi.signals if f in by_fingerprint]) for wi in result.work_items]
        group: list[tuple[WorkItem, list[Signal]]] = []
        size = 0
        for wi, signals in starts:  # one workflow task per group: its commands' payloads stay under the limits
            n = len(to_json(wi)) + sum(map(signal_bytes, signals)) + START_OVERHEAD_BYTES
            if wi.kind is WorkItemKind.INCIDENT:
                n += len(to_json(self.state.applied))
            if group and size + n > STARTS_MAX_BYTES:
                await asyncio.gather(*(self._start_loop(w, ss) for w, ss in group))
                group, size = [], 0
            group.append((wi, signals))
            size += n
        await asyncio.gather(*(self._start_loop(w, ss) for w, ss in group))
        return len(result.work_items), len(result.unassigned) + len(missing)

    async def _join_open_fixes(self, window: list[Signal]) -> tuple[list[Signal], int]:
        """Send the window's alerts on a service with an open fix loop (its merge request open, not deployed: a
        loop that deployed the service within ``attach_window`` gets them as a ``deploy_regression`` instead) into
        that loop (``join_alerts``). Returns the rest of the window and how many alerts joined; alerts whose loop
        cannot be signalled (it just ended) stay in the window."""
        fixes = self.state.open_fixes
        if not fixes:
            return window, 0
        cutoff = workflow.now() - self.inp.options.attach_window
        deployed = {d.service for d in self.state.recent_deploys if d.deployed_at >= cutoff}
        joins: dict[str, list[Signal]] = {}
        for s in window:
            if s.kind is Kind.ALERT and s.service and s.service in fixes and s.service not in deployed:
                joins.setdefault(fixes[s.service], []).append(s)
        if not joins:
            return window, 0
        joined: set[str] = set()
        for wid, alerts in joins.items():
            try:
                for part in self._messages(alerts):
                    await workflow.get_external_workflow_handle(wid).signal(
                        RemediationWorkflow.join_alerts, AlertsJoined(signals=part)
                    )
            except FailureError as e:
                workflow.logger.warning("%d alert(s) could not join %s: %s; triaged instead", len(alerts), wid, e)
                for service, loop in list(fixes.items()):
                    if loop == wid:
                        del fixes[service]
                continue
            self.state.owners.update(dict.fromkeys((a.fingerprint for a in alerts), wid))
            joined.update(a.fingerprint for a in alerts)
        self.state.counters.alerts_joined += len(joined)
        return [s for s in window if s.fingerprint not in joined], len(joined)

    def _recent_deploys(self) -> list[RecentDeploy]:
        """The deploys of the last ``attach_window`` (the engines attach alerts to these only)."""
        cutoff = workflow.now() - self.inp.options.attach_window
        return [d for d in self.state.recent_deploys if d.deployed_at >= cutoff]

    async def _triage(self, window: list[Signal], closed_by: str) -> TriageResult | None:
        """Triage with the configured engine; if that activity fails, with ``rules``; if that fails too (a bug),
        the window's signals are counted unassigned with the error as reason, never dropped. None when the result
        of more than one signal is too large for one payload (``TriageResultTooLarge``): the caller splits."""
        engines = list(dict.fromkeys([self.inp.options.engine, "rules"]))
        error: ActivityError | None = None
        for engine in engines:
            self.state.counters.triage_calls += 1
            try:
                return await workflow.execute_activity_method(
                    TriageActivities.group_signals,
                    GroupSignalsInput(
                        scope=self.inp.scope,
                        signals=window,
                        engine=engine,
                        recent_deploys=self._recent_deploys(),
                        incident_window=self.inp.options.incident_window,
                        background=self.state.alert_history,
                    ),
                    **options.call(Call.TRIAGE, f"triage {len(window)} signals with {engine} ({closed_by})"),
                )
            except ActivityError as e:
                if isinstance(e.cause, ApplicationError) and e.cause.type == RESULT_TOO_LARGE and len(window) > 1:
                    workflow.logger.warning("triage result of %d signals is too large; split in two", len(window))
                    return None
                error = e
                cause = e.cause.message if isinstance(e.cause, FailureError) else str(e)
                workflow.logger.warning("triage with %s failed: %s", engine, cause)
                if engine == "llm":
                    options.count(TRIAGE_FALLBACKS, reason="activity_failed")
        reason = f"triage failed: {error.cause.message if error and isinstance(error.cause, FailureError) else error}"
        return TriageResult(unassigned=[Unassigned(fingerprint=s.fingerprint, reason=reason[:500]) for s in window])

    def _loop_attributes(self, wi: WorkItem) -> TypedSearchAttributes | None:
        if not self.inp.options.loop_options.search_attributes:
            return None
        return TypedSearchAttributes([SearchAttributePair(k, v) for k, v in initial_attributes(self.inp.scope, wi)])

    async def _start_loop(self, wi: WorkItem, signals: list[Signal]) -> None:
        wid = loop_id(self.inp.scope, wi.id)
        c = self.state.counters
        if wi.kind in ALERT_KINDS:
            self.state.owners.update(dict.fromkeys(wi.signals, wid))
        for attempt in range(2):  # a loop that ends between our start and our signal is started anew, once
            try:
                await workflow.start_child_workflow(
                    RemediationWorkflow.run,
                    RemediationInput(
                        scope=self.inp.scope,
                        work_item=wi,
                        signals=signals,
                        options=self.inp.options.loop_options,
                        applied=self.state.applied if wi.kind is WorkItemKind.INCIDENT else [],
                    ),
                    id=wid,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    static_summary=markdown(wi.title, 200),  # the Temporal UI renders Markdown: escaped
                    static_details=static_details(wi, signals),  # the signals summary, escaped, <= 1.5 KiB
                    search_attributes=self._loop_attributes(wi),
                )
                c.loops_started += 1
                return
            except WorkflowAlreadyStartedError:
                pass
            try:
                await workflow.get_external_workflow_handle(wid).signal(
                    RemediationWorkflow.add_signals, MoreSignals(work_item=wi)
                )
                c.loops_updated += 1
                return
            except FailureError as e:
                if attempt:
                    c.undeliverable += 1
                    workflow.logger.warning("work item %s: loop %s could not be signalled: %s", wi.id, wid, e)

    async def _forward_refreshes(self) -> None:
        forwards, self._forwards = self._forwards, []
        for wid, signals in forwards:
            try:
                for part in self._messages(signals):
                    await workflow.get_external_workflow_handle(wid).signal(
                        RemediationWorkflow.refresh, Refresh(signals=part)
                    )
                    self.state.counters.refreshes_forwarded += len(part)
            except FailureError as e:
                self.state.counters.undeliverable += 1
                workflow.logger.warning("refresh of %d signal(s) for %s not delivered: %s", len(signals), wid, e)

    def _messages(self, signals: list[Signal]) -> list[list[Signal]]:
        """``signals`` in parts for signals to a loop: at most ``triage_max_bytes`` and ``SIGNALS_PER_MESSAGE``."""
        return batched(signals, max_bytes=self.inp.options.triage_max_bytes, max_count=SIGNALS_PER_MESSAGE)

    # --- continue-as-new -----------------------------------------------------------------------------------

    async def _continue_as_new(self) -> None:
        """Continue as new with everything received so far: nothing may stay in the queue, and no await may come
        between the last drain and ``continue_as_new`` (a signal delivered then would be lost). Closes the open
        window early while the carry would not fit in one payload."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            self._drain()
            if self._forwards:
                await self._forward_refreshes()
                continue
            self._evict()
            if len(self.state.pending) > 2 * self.inp.options.window_max_signals:  # a flood: not worth measuring
                await self._close_window("size")
                continue
            counters = self.state.counters.model_copy(update={"runs": self.state.counters.runs + 1})
            state = self.state.model_copy(update={"seen": zlib.compress(pack_seen(self.seen)), "counters": counters})
            carry = self.inp.model_copy(update={"state": state})
            if len(to_json(carry)) <= CARRY_MAX_BYTES:
                workflow.continue_as_new(carry)
            if self.state.pending:
                await self._close_window("carry")
            elif not self._shrink_memory():  # unreachable: what is left is options, counters and 20 windows
                workflow.continue_as_new(carry)

    def _shrink_memory(self) -> bool:
        """Make the carry smaller when nothing is pending and it still does not fit one payload (many alert owners
        or open fixes, a large dedup memory): the oldest half of the alert owners, else of the open fixes, else of
        the dedup memory, is dropped and counted. False when there was nothing left to drop."""
        c = self.state.counters
        owners, fixes = self.state.owners, self.state.open_fixes
        if owners:
            keep = len(owners) // 2
            self.state.owners = dict(list(owners.items())[len(owners) - keep :])
            c.owners_evicted += len(owners) - keep
        elif fixes:
            self.state.open_fixes = dict(list(fixes.items())[len(fixes) - len(fixes) // 2 :])
        elif self.seen:
            newest = sorted(self.seen.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[: len(self.seen) // 2]
            c.evicted += len(self.seen) - len(newest)
            self.seen = dict(newest)
        else:
            return False
        return True
