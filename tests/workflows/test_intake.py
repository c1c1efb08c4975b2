"""IntakeWorkflow on the Java test server: dedup, windows, continue-as-new, one loop per work item.

The triage activity is the real one (rules engine) on real reports; the child loops are a stand-in registered
under the name ``RemediationWorkflow`` that records what the intake sends it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowContinuedAsNewError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # this module is re-imported in the workflow sandbox
    from pydantic_core import to_json

    from fixloop.activities import triage as triage_module
    from fixloop.activities.triage import GROUP_SIGNALS, TriageActivities
    from fixloop.core.models import RecentDeploy, Signal, TriageResult, WorkItemKind, batched, fingerprint
    from fixloop.core.triage import triage_rules
    from fixloop.workflows.contracts.intake import (
        Finish,
        IntakeInput,
        IntakeOptions,
        IntakeState,
        IntakeStatus,
        SignalBatch,
    )
    from fixloop.workflows.contracts.loop import (
        AlertsJoined,
        LoopOptions,
        MoreSignals,
        OpenFix,
        Refresh,
        RemediationInput,
        loop_id,
    )
    from fixloop.workflows.contracts.triage import GroupSignalsInput
    from fixloop.workflows.intake import CARRY_MAX_BYTES, OWNERS_MAX, IntakeWorkflow, pack_seen, unpack_seen
    from tests.conftest import signals
    from tests.workflows.histories import record

ALPINE = "trivy/trivy-0.22-fulldb_alpine-39.json"
DEBIAN = "trivy/dd-trivy_legacy_many_vulns_debian-10.8.json"
LOCKFILES = "trivy/dd-trivy_legacy_mix_lockfiles.json"
ALERT = "datadog/inres-docs_query_alert_monitor_triggered_P1.json"


@workflow.defn(name="RemediationWorkflow")
class LoopStandIn:
    """Records the work item it was started with and every ``add_signals`` / ``refresh`` it gets."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.added_signals = 0
        self.refreshed = 0
        self.started_with: list[str] = []
        self.start_bytes = 0
        self.joined: list[str] = []
        self.applied: list[str] = []

    @workflow.run
    async def run(self, inp: RemediationInput) -> None:
        self.started_with = sorted(s.fingerprint for s in inp.signals)
        self.applied = [a.sha for a in inp.applied]
        self.start_bytes = len(to_json(inp))
        await workflow.wait_condition(lambda: False)

    @workflow.query
    def sizes(self) -> tuple[int, int, int]:
        """(bytes of the start input, signals it carried, fingerprints added since by ``add_signals``)."""
        return self.start_bytes, len(self.started_with), self.added_signals

    @workflow.query
    def signals_at_start(self) -> list[str]:
        return self.started_with

    @workflow.query
    def applied_at_start(self) -> list[str]:
        """The shas of the revisions Flux applied that the loop was started with (an incident's)."""
        return self.applied

    @workflow.signal
    def add_signals(self, more: MoreSignals) -> None:
        self.added.append(more.work_item.id)
        self.added_signals += len(more.work_item.signals)

    @workflow.signal
    def refresh(self, refresh: Refresh) -> None:
        self.refreshed += len(refresh.signals)

    @workflow.query
    def added_count(self) -> int:
        return len(self.added)

    @workflow.signal
    def join_alerts(self, joined: AlertsJoined) -> None:
        self.joined += [a.fingerprint for a in joined.signals]

    @workflow.query
    def joined_alerts(self) -> list[str]:
        return self.joined


def _worker(client: Client, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[IntakeWorkflow, LoopStandIn],
        activities=[TriageActivities().group_signals],
    )


def _options(**kw: object) -> IntakeOptions:
    """Intake options for the Java test server, which has no custom search attributes."""
    return IntakeOptions(loop_options=LoopOptions(search_attributes=False), **kw)


def _scope() -> str:
    return f"team/gitops-{uuid.uuid4().hex[:8]}"


async def _start(
    client: Client, task_queue: str, scope: str, batch: list[Signal], options: IntakeOptions, wid: str | None = None
) -> WorkflowHandle[IntakeWorkflow, IntakeState]:
    return await client.start_workflow(
        IntakeWorkflow.run,
        IntakeInput(scope=scope, options=options),
        id=wid or f"intake/{scope}",
        task_queue=task_queue,
        start_signal="receive",
        start_signal_args=[SignalBatch(signals=batch)],
    )


async def _settle(
    env: WorkflowEnvironment, handle: WorkflowHandle[IntakeWorkflow, IntakeState], quiet: timedelta
) -> None:
    """Let the open window's quiet period pass: a query returns once the intake has drained what it was sent, then
    the test server's clock jumps. (Its automatic time skipping stalls once a child with parent-close policy
    ABANDON is running: temporalio/sdk-java#1540, sdk-typescript#1101; an explicit sleep still skips.)"""
    await handle.query(IntakeWorkflow.status)
    await env.sleep(quiet)


async def _children(client: Client, scope: str, result: TriageResult) -> dict[str, int]:
    """For each work item of ``result``: how many ``add_signals`` its loop got (the loop must exist)."""
    out = {}
    for wi in result.work_items:
        handle = client.get_workflow_handle(loop_id(scope, wi.id))
        out[wi.id] = await handle.query(LoopStandIn.added_count)
    return out


async def test_redelivered_batch_is_deduplicated(env: WorkflowEnvironment, task_queue: str) -> None:
    batch = signals(ALPINE)
    scope = _scope()
    expected = triage_rules(batch)
    async with _worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, batch, _options())
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=batch))
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()
        children = await _children(env.client, scope, expected)
        await record(env.client, handle.id, "intake-deduplicated")

    c = state.counters
    assert (c.received, c.new, c.duplicates) == (2 * len(batch), len(batch), len(batch))
    assert c.windows == 1 and c.assigned + c.unassigned == len(batch)
    assert c.loops_started == len(expected.work_items) and c.loops_updated == 0
    assert set(children) == {wi.id for wi in expected.work_items} and set(children.values()) == {0}


async def test_windows_close_at_max_size_then_after_quiet_period(env: WorkflowEnvironment, task_queue: str) -> None:
    batch = signals(DEBIAN)  # 93 findings in one image
    scope = _scope()
    options = _options(window_max_signals=40, quiet_period=timedelta(minutes=5))
    async with _worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, batch, options)
        await _settle(env, handle, options.quiet_period)
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()

    closed = [(w.closed_by, w.signals) for w in state.windows]
    assert closed == [("size", 40), ("size", 40), ("quiet", len(batch) - 80)]
    # the quiet window closed one quiet period after the delivery (the size windows closed at once; time-skipped)
    assert state.windows[-1].closed_at - state.windows[0].closed_at >= options.quiet_period - timedelta(seconds=1)
    # every window of one image triages into the same work item ids: later windows update the running loops
    assert state.counters.loops_started == len(triage_rules(batch[:40]).work_items)
    assert state.counters.loops_started + state.counters.loops_updated == sum(w.work_items for w in state.windows)
    assert state.counters.assigned + state.counters.unassigned == len(batch)


async def test_continue_as_new_keeps_dedup_state(env: WorkflowEnvironment, task_queue: str) -> None:
    batch = signals(DEBIAN)
    scope = _scope()
    expected = triage_rules(batch)
    options = _options(max_run_events=1)  # continue as new after every delivery
    async with _worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, batch, options)
        with pytest.raises(WorkflowContinuedAsNewError):
            await handle.result(follow_runs=False)
        await record(env.client, handle.id, "intake-continued-as-new-first-run", run_id=handle.result_run_id)
        # the next run holds the dedup memory and the open window: the same batch again is all duplicates
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=batch))
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()

    c = state.counters
    # run 1 was seen to continue as new before the re-delivery was sent: whichever later run took it, the dedup
    # memory it found came through continue-as-new (a later run may or may not continue as new again)
    assert c.runs >= 2
    assert (c.new, c.duplicates) == (len(batch), len(batch))
    assert c.windows == 1 and c.loops_started == len(expected.work_items)


async def test_same_storm_twice_starts_one_loop_per_work_item(env: WorkflowEnvironment, task_queue: str) -> None:
    storm = signals(ALPINE) + signals(DEBIAN) + signals(LOCKFILES) + signals(ALERT)
    scope = _scope()
    expected = triage_rules(storm)
    assert len(expected.work_items) >= 4
    options = _options()
    async with _worker(env.client, task_queue):
        # two intakes of the same scope (replicas, or one re-created) each get the whole storm, concurrently
        first = await _start(env.client, task_queue, scope, storm, options, wid=f"intake/{scope}")
        second = await _start(env.client, task_queue, scope, storm, options, wid=f"intake/{scope}/again")
        await first.query(IntakeWorkflow.status)
        await _settle(env, second, options.quiet_period)
        for handle in (first, second):
            await handle.signal(IntakeWorkflow.finish, Finish())
        one, two = await first.result(), await second.result()
        children = await _children(env.client, scope, expected)
        started = {  # each loop starts with its work item's own signals (what planning reads)
            wi.id: await env.client.get_workflow_handle(loop_id(scope, wi.id)).query(LoopStandIn.signals_at_start)
            for wi in expected.work_items
        }

    assert started == {wi.id: sorted(set(wi.signals)) for wi in expected.work_items}
    assert one.counters.loops_started + two.counters.loops_started == len(expected.work_items)
    assert one.counters.loops_updated + two.counters.loops_updated == len(expected.work_items)
    assert children == {wi.id: 1 for wi in expected.work_items}


def test_dedup_memory_packs_and_unpacks() -> None:
    seen = {bytes.fromhex(f"{i:016x}"): 29_000_000 + i for i in range(1000)}
    packed = pack_seen(seen)
    assert len(packed) == 12 * len(seen)
    assert unpack_seen(packed) == seen
    with pytest.raises(ValueError, match="not a multiple"):
        unpack_seen(packed[:-1])


async def query_when(handle: WorkflowHandle, query: Any, done: Callable[[Any], bool], what: str) -> Any:
    """``query``'s answer once ``done`` holds for it (polled, bounded: 200 polls 50 ms apart)."""
    for _ in range(200):
        answer = await handle.query(query)
        if done(answer):
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError(f"the workflow never {what}: {answer}")


async def status_when(
    handle: WorkflowHandle[IntakeWorkflow, IntakeState], done: Callable[[IntakeStatus], bool], what: str
) -> IntakeStatus:
    """The intake's status once ``done`` holds for it."""
    return await query_when(handle, IntakeWorkflow.status, done, what)


async def _windows_closed(handle: WorkflowHandle[IntakeWorkflow, IntakeState], n: int) -> IntakeStatus:
    """The intake's status once it has closed ``n`` windows (the timer that closes one fires in a later workflow
    task than the skipped time)."""
    return await status_when(handle, lambda s: s.counters.windows >= n, f"closed {n} window(s)")


async def _open_catalog_fix(
    env: WorkflowEnvironment, task_queue: str, scope: str, options: IntakeOptions
) -> tuple[WorkflowHandle[IntakeWorkflow, IntakeState], str, str]:
    """An intake that triaged the alpine report (catalog's rebuild) and was told its loop's MR is open: (the
    intake, the work item id, the loop id)."""
    report = signals(ALPINE)
    (fix,) = triage_rules(report).work_items
    fix_loop = loop_id(scope, fix.id)
    handle = await _start(env.client, task_queue, scope, report, options)
    await _settle(env, handle, options.quiet_period)
    await handle.signal(IntakeWorkflow.fixing, OpenFix(work_item_id=fix.id, service="catalog", loop=fix_loop))
    return handle, fix.id, fix_loop


async def test_alerts_on_a_service_with_an_open_fix_join_that_loop(env: WorkflowEnvironment, task_queue: str) -> None:
    """The catalog rebuild's loop told the intake its merge request is open: catalog's alerts (the demo's real
    Datadog and Alertmanager payloads) join it; no investigation starts. Once the loop ends, a new alert on catalog
    is triaged again (an investigation of its own)."""
    alerts = signals("../../examples/demo/alerts/datadog-catalog-error-rate-triggered.json") + signals(
        "../../examples/demo/alerts/alertmanager-catalog-errors-firing.json"
    )
    assert {a.service for a in alerts} == {"catalog"}
    options = _options()
    async with _worker(env.client, task_queue):
        handle, fix_id, fix_loop = await _open_catalog_fix(env, task_queue, _scope(), options)
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=alerts))
        await _settle(env, handle, options.quiet_period)
        mid = await _windows_closed(handle, 2)
        joined = await env.client.get_workflow_handle(fix_loop).query(LoopStandIn.joined_alerts)
        # the loop ended: the next alert on catalog is no longer part of that fix
        await handle.signal(
            IntakeWorkflow.fixing, OpenFix(work_item_id=fix_id, service="catalog", loop=fix_loop, open=False)
        )
        later = signals(ALERT)[0].model_copy(update={"service": "catalog", "fingerprint": "f" * 32})
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=[later]))
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()

    assert sorted(joined) == sorted(a.fingerprint for a in alerts)
    assert mid.counters.alerts_joined == 2 and mid.counters.loops_started == 1
    assert mid.counters.assigned == len(signals(ALPINE)) + 2  # joined alerts are accounted for as assigned
    assert state.owners == {**{a.fingerprint: fix_loop for a in alerts}, **state.owners}
    c = state.counters
    assert (c.loops_started, c.alerts_joined, c.assigned + c.unassigned) == (2, 2, len(signals(ALPINE)) + 3)
    assert state.open_fixes == {}


async def test_an_alert_after_the_fix_deployed_is_a_deploy_regression(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    alert = signals("../../examples/demo/alerts/datadog-catalog-error-rate-triggered.json")
    options = _options()
    async with _worker(env.client, task_queue):
        handle, fix_id, fix_loop = await _open_catalog_fix(env, task_queue, _scope(), options)
        now = (await handle.describe()).start_time + options.quiet_period * 2
        await handle.signal(
            IntakeWorkflow.deployed, RecentDeploy(work_item_id=fix_id, service="catalog", deployed_at=now)
        )
        stamped = [a.model_copy(update={"observed_at": now + timedelta(seconds=30)}) for a in alert]
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=stamped))
        await _settle(env, handle, options.quiet_period)
        await _windows_closed(handle, 2)
        joined = await env.client.get_workflow_handle(fix_loop).query(LoopStandIn.joined_alerts)
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()

    assert joined == [] and state.counters.alerts_joined == 0
    regression = triage_rules(stamped, recent_deploys=state.recent_deploys).work_items
    assert [w.kind for w in regression] == [WorkItemKind.DEPLOY_REGRESSION]
    assert state.counters.loops_started == 2


# ---------------------------------------------------------------- byte budgets (issue 14, finding 2)

TRIAGE_INPUTS: list[tuple[int, int]] = []  # (signals, bytes) of every triage activity input, in this process


@activity.defn(name=GROUP_SIGNALS)
async def recording_group_signals(inp: GroupSignalsInput) -> TriageResult:
    """The real triage activity, recording the size of each input it gets."""
    TRIAGE_INPUTS.append((len(inp.signals), len(to_json(inp))))
    return await TriageActivities().group_signals(inp)


def _recording_worker(client: Client, task_queue: str) -> Worker:
    return Worker(
        client, task_queue=task_queue, workflows=[IntakeWorkflow, LoopStandIn], activities=[recording_group_signals]
    )


def _storm(n: int) -> list[Signal]:
    """``n`` findings of one Debian image: the real report's findings repeated under new advisory ids."""
    base = signals(DEBIAN)
    out = []
    for i in range(n):
        s = base[i % len(base)]
        ids = {"fingerprint": fingerprint("storm", i, s.fingerprint), "advisory_id": f"{s.advisory_id}-{i}"}
        out.append(s.model_copy(update=ids))
    return out


async def _deliver(handle: WorkflowHandle[IntakeWorkflow, IntakeState], storm: list[Signal]) -> None:
    for part in batched(storm, max_bytes=1 << 20, max_count=500):
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=part))


async def test_a_10000_signal_work_item_is_triaged_in_byte_bounded_chunks(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """10,000 findings of one image (one rebuild, one digest): windows of 1,000 (~1 MB of signals each) are triaged
    in chunks of at most ``triage_max_bytes``; each loop starts with one chunk's signals (bounded), the rest reach it
    by ``add_signals`` and are counted; every signal is accounted for."""
    storm = _storm(10_000)
    scope = _scope()
    budget = 256 * 1024
    options = _options(window_max_signals=1_000, triage_max_bytes=budget)
    TRIAGE_INPUTS.clear()
    async with _recording_worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, storm[:1], options)
        await _deliver(handle, storm[1:])
        await _settle(env, handle, options.quiet_period)
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()
        items = triage_rules(storm[:100]).work_items  # the same grouping keys: the same work item ids
        loops = {wi.id: await env.client.get_workflow_handle(loop_id(scope, wi.id)).query(LoopStandIn.sizes)
                 for wi in items}  # fmt: skip

    c = state.counters
    assert c.received == c.new == c.assigned + c.unassigned == 10_000
    assert c.windows == 10 and c.triage_calls == len(TRIAGE_INPUTS) >= 10 * 1_000_000 // budget
    overhead = 1_024  # scope, engine, recent deploys (none here), the object's keys
    assert max(size for _, size in TRIAGE_INPUTS) <= budget + overhead
    assert sum(n for n, _ in TRIAGE_INPUTS) == 10_000
    assert sum(started + added for _, started, added in loops.values()) == c.assigned  # the rest: add_signals
    assert all(start_bytes <= budget + 64 * 1024 for start_bytes, _, _ in loops.values())
    assert c.loops_started == len(items) and c.loops_updated == c.triage_calls * len(items) - len(items)


async def test_a_triage_result_too_large_for_a_payload_is_triaged_again_in_halves(
    env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The activity refuses a result over RESULT_MAX_BYTES (lowered here to 3 KB, so the real one of 120 Debian
    findings is over it); the intake triages the chunk again in halves until each result fits, losing nothing."""
    monkeypatch.setattr(triage_module, "RESULT_MAX_BYTES", 3_000)
    storm = _storm(120)
    assert len(triage_rules(storm).model_dump_json()) > 2 * 3_000
    scope = _scope()
    options = _options()
    TRIAGE_INPUTS.clear()
    async with _recording_worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, storm, options)
        await _settle(env, handle, options.quiet_period)
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()

    c = state.counters
    assert c.assigned + c.unassigned == c.new == 120 and c.unassigned == len(triage_rules(storm).unassigned)
    sizes = [n for n, _ in TRIAGE_INPUTS]
    assert sizes[0] == 120 and 60 in sizes and c.triage_calls == len(sizes) >= 3  # 120, then halves


async def test_continue_as_new_fits_one_payload_with_a_full_owner_memory(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """An intake of a 200-character scope remembering OWNERS_MAX alert owners (~2.8 MB of loop ids) continues as new
    with a carry under CARRY_MAX_BYTES: the oldest owners are dropped and counted, nothing pending is lost."""
    scope = "team/" + "g" * 195
    owners = {fingerprint("alert", i): loop_id(scope, f"wi-{i:024x}") for i in range(OWNERS_MAX)}
    state = IntakeState(owners=owners)
    assert len(state.model_dump_json()) > 2_000_000
    batch = signals(ALPINE)
    options = _options(max_run_events=1)  # continue as new at the first chance
    async with _worker(env.client, task_queue):
        handle = await env.client.start_workflow(
            IntakeWorkflow.run,
            IntakeInput(scope=scope, options=options, state=state),
            id=f"intake/{scope}",
            task_queue=task_queue,
            start_signal="receive",
            start_signal_args=[SignalBatch(signals=batch)],
        )
        with pytest.raises(WorkflowContinuedAsNewError):
            await handle.result(follow_runs=False)
        latest = env.client.get_workflow_handle_for(IntakeWorkflow.run, f"intake/{scope}")
        history = await latest.fetch_history()
        carry = history.events[0].workflow_execution_started_event_attributes.input.payloads[0].data
        await latest.signal(IntakeWorkflow.finish, Finish())
        final = await latest.result()

    assert len(carry) <= CARRY_MAX_BYTES
    c = final.counters
    assert c.owners_evicted >= OWNERS_MAX // 2 and len(final.owners) <= OWNERS_MAX - c.owners_evicted
    assert c.new == len(batch) == c.assigned + c.unassigned  # the window closed before the carry ("carry")
