"""IntakeWorkflow with a topology on the Java test server (issue 16, scope 2): a storm of real alerts over three
connected services is one incident work item and one loop; the same storm again starts no second loop; an alert on
an entity missing from the topology is its own work item and loop. The triage activity is the real one (rules
engine) handed the ``topology:`` section of tests/test_incidents.py; the loops are test_intake's stand-in."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # this module is re-imported in the workflow sandbox
    from fixloop.activities.triage import GROUP_SIGNALS, TriageActivities
    from fixloop.core import incidents
    from fixloop.core.culprit import AppliedRevision
    from fixloop.core.models import TriageResult, WorkItemKind
    from fixloop.core.rca import Background
    from fixloop.core.triage import triage_rules
    from fixloop.workflows.contracts.intake import Finish, FluxApplied, SignalBatch
    from fixloop.workflows.contracts.loop import Stage, loop_id
    from fixloop.workflows.contracts.triage import GroupSignalsInput
    from fixloop.workflows.intake import IntakeWorkflow
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.test_incidents import DD_DEMO, DD_INRES, T0, _topo, am_pod_memory, dd, storm
    from tests.workflows.histories import record
    from tests.workflows.test_intake import LoopStandIn, _options, _scope, _settle, _start, query_when, status_when
    from tests.workflows.world import World


def _worker(client: Client, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[IntakeWorkflow, LoopStandIn],
        activities=[TriageActivities(topology=_topo()).group_signals],
    )


async def test_a_storm_over_connected_services_is_one_incident_loop_and_again_none(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    alerts = storm()  # inventory's pods and monitor, then catalog, then storefront: 6 alerts, 5 investigations today
    stray = dd(DD_DEMO, "search", 30)  # within the storm's window, on a service the topology does not know
    assert len(triage_rules([*alerts, stray]).work_items) == 6
    expected = triage_rules([*alerts, stray], topology=_topo()).work_items
    (incident,) = [w for w in expected if stray.fingerprint not in w.signals]
    (alone,) = [w for w in expected if stray.fingerprint in w.signals]
    scope = _scope()
    options = _options()
    async with _worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, [*alerts, stray], options)
        await _settle(env, handle, options.quiet_period)
        first = await status_when(handle, lambda s: s.counters.loops_started >= 2, "started 2 loops")
        # the same storm delivered again (a webhook retried, a second replica): duplicates, no second loop
        second = await _start(env.client, task_queue, scope, alerts, options, wid=f"intake/{scope}/again")
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=alerts))
        await _settle(env, second, options.quiet_period)
        for h in (handle, second):
            await h.signal(IntakeWorkflow.finish, Finish())
        one, two = await handle.result(), await second.result()
        started = {
            w.id: await env.client.get_workflow_handle(loop_id(scope, w.id)).query(LoopStandIn.signals_at_start)
            for w in (incident, alone)
        }

    assert incident.kind is WorkItemKind.INCIDENT and alone.kind is WorkItemKind.INCIDENT
    assert started == {incident.id: sorted(a.fingerprint for a in alerts), alone.id: [stray.fingerprint]}
    assert first.counters.loops_started == 2 and first.counters.assigned == 7
    assert (one.counters.new, one.counters.duplicates, one.counters.loops_started) == (7, 6, 2)
    # the second intake triaged the storm into the same incident id: it updated the running loop, started none
    assert (two.counters.loops_started, two.counters.loops_updated) == (0, 1)
    assert one.counters.assigned + one.counters.unassigned == 7


class RecordingTriage:
    """The real triage activity on the test topology, recording the alert history each call was handed."""

    def __init__(self) -> None:
        self.inner = TriageActivities(topology=_topo())
        self.histories: list[Background | None] = []

    @activity.defn(name=GROUP_SIGNALS)
    async def group_signals(self, inp: GroupSignalsInput) -> TriageResult:
        self.histories.append(inp.background)
        return await self.inner.group_signals(inp)


async def test_each_triage_ranks_with_the_alert_history_of_the_windows_before_it(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """The first storm's (entity, metric) keys are remembered; the second window's triage is handed them (one past
    storm), so a chronic alert weighs less in the next ranking."""
    first = storm()
    second = [dd(DD_DEMO, "catalog", 4000), dd(DD_INRES, "inventory", 4010)]
    triage = RecordingTriage()
    scope, options = _scope(), _options()
    async with Worker(
        env.client, task_queue=task_queue, workflows=[IntakeWorkflow, LoopStandIn], activities=[triage.group_signals]
    ):
        handle = await _start(env.client, task_queue, scope, first, options)
        await _settle(env, handle, options.quiet_period)
        await status_when(handle, lambda s: s.counters.windows >= 1, "closed the first window")
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=second))
        await _settle(env, handle, options.quiet_period)
        await status_when(handle, lambda s: s.counters.windows >= 2, "closed the second window")
        await handle.signal(IntakeWorkflow.finish, Finish())
        final = await handle.result()

    none, one = triage.histories
    assert none is None
    assert one is not None and one.storms == 1
    assert sorted(one.counts) == incidents.alert_keys(first, _topo()) and set(one.counts.values()) == {1}
    assert final.alert_history is not None and final.alert_history.storms == 2
    again = set(incidents.alert_keys(second, _topo())) & set(one.counts)
    assert sorted(k.split("\x1f")[0] for k in again) == ["catalog", "inventory"]  # both monitors alerted in both
    assert {final.alert_history.counts[k] for k in again} == {2}


async def test_an_incident_loop_starts_with_the_revisions_flux_applied_before_it(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """The gateway tells the intake each revision Flux applied (``flux_applied``, replays included); the intake keeps
    them once each, oldest first, and hands them to the incident loop it starts (not to other loops)."""
    older = AppliedRevision(sha="a" * 40, at=T0 - timedelta(minutes=30), revision="main@sha1:" + "a" * 40)
    newer = AppliedRevision(sha="b" * 40, at=T0 - timedelta(minutes=5), revision="main@sha1:" + "b" * 40)
    scope, options = _scope(), _options()
    alerts = storm()
    async with _worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, [], options)
        await handle.signal(IntakeWorkflow.flux_applied, FluxApplied(revisions=[newer]))
        await handle.signal(IntakeWorkflow.flux_applied, FluxApplied(revisions=[older, newer]))
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=alerts))
        await _settle(env, handle, options.quiet_period)
        await status_when(handle, lambda s: s.counters.loops_started >= 1, "started the incident loop")
        (wi,) = triage_rules(alerts, topology=_topo()).work_items
        loop = env.client.get_workflow_handle(loop_id(scope, wi.id))
        applied = await loop.query(LoopStandIn.applied_at_start)
        await handle.signal(IntakeWorkflow.finish, Finish())
        final = await handle.result()
        await record(env.client, handle.id, "intake-incident-with-flux-applied")
    assert applied == ["a" * 40, "b" * 40]
    assert [a.sha for a in final.applied] == ["a" * 40, "b" * 40]


async def test_flap_guard_a_second_storm_on_the_service_while_its_incident_mr_is_open_joins_it(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """The incident's loop (the real one, on world.py's stand-ins) has its remediation MR open and waiting for a
    review; a second storm on inventory an hour later joins that loop (one Jira comment for the batch): no second
    incident, no second merge request."""
    world = World(remediation="revert", merge_after_polls=None)
    scope, options = _scope(), _options()
    first, second = storm(), [dd(DD_INRES, "inventory", 3600), am_pod_memory("inventory", "inventory-7d9c-c", 3610)]
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[IntakeWorkflow, RemediationWorkflow],
        activities=[TriageActivities(topology=_topo()).group_signals, *world.activities()],
    ):
        handle = await _start(env.client, task_queue, scope, first, options)
        await _settle(env, handle, options.quiet_period)
        (wi,) = triage_rules(first, topology=_topo()).work_items
        await status_when(handle, lambda s: s.counters.loops_started >= 1, "started the incident loop")
        loop = env.client.get_workflow_handle(loop_id(scope, wi.id))
        await query_when(loop, RemediationWorkflow.status, lambda s: s.stage is Stage.AWAIT_APPROVAL, "opened its MR")
        await handle.signal(IntakeWorkflow.receive, SignalBatch(signals=second))
        await _settle(env, handle, options.quiet_period)
        state = await query_when(loop, RemediationWorkflow.status, lambda s: len(s.alerts) == 2, "joined the storm")
        status = await handle.query(IntakeWorkflow.status)

    assert status.counters.loops_started == 1 and status.counters.alerts_joined == 2
    assert world.calls.count("gitlab.open_merge_request") == 1
    assert sorted(a.fingerprint for a in state.alerts) == sorted(a.fingerprint for a in second)
    joined = [c for c in world.comments if c.labels == ["fixloop-alert"]]
    assert len(joined) == 1 and joined[0].body.startswith("2 later alert(s) on inventory joined this incident:")
