"""An incident's loop on the Java test server (issue 16): its Jira issue carries the ranked root cause and the alert
timeline, the culprit change of its top candidate is looked up and said on the issue with its author and merge
request, later alerts join it with one Jira comment per batch, and it ends ``recovered`` once every alert of it has
recovered (or ``tracked`` after its escalations). Real alert payloads (tests/test_incidents.py's storm) and the
rules engine's incident work item; Jira, GitLab and Flux are the stand-ins of ``world.py``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from fixloop.activities.work_item import issue_description
    from fixloop.core.culprit import AppliedRevision, ChangeCommit, Culprit, FileChange, MergeRequestRef
    from fixloop.core.models import Signal, Transition, WorkItem, WorkItemKind, signal_bytes
    from fixloop.core.triage import triage_rules
    from fixloop.core.verification import VerdictResult
    from fixloop.workflows.contracts.loop import (
        AlertsJoined,
        LoopOptions,
        LoopState,
        Outcome,
        Refresh,
        RemediationInput,
        Stage,
    )
    from fixloop.workflows.remediation import PLAN_SIGNALS_MAX_BYTES, RemediationWorkflow, culprit_candidates
    from tests.test_incidents import DD_DEMO, DD_INRES, T0, _topo, am_errors, dd, storm
    from tests.workflows.histories import record
    from tests.workflows.test_intake import query_when
    from tests.workflows.world import World, approval

SCOPE = "team/gitops"
SHA = "3f9a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c"
APPLIED = AppliedRevision(sha=SHA, at=T0 - timedelta(minutes=12), revision=f"main@sha1:{SHA}", source="event")


def _incident(alerts: list[Signal]) -> WorkItem:
    (wi,) = triage_rules(alerts, topology=_topo()).work_items
    assert wi.kind is WorkItemKind.INCIDENT
    return wi


def _culprit() -> Culprit:
    commit = ChangeCommit(
        sha=SHA,
        title="inventory: DB pool size 2",
        author_name="Dana Developer",
        author_username="dana",
        authored_at=T0 - timedelta(minutes=30),
        committed_at=T0 - timedelta(minutes=29),
        merge_request=MergeRequestRef(iid=7, title="Smaller DB pool", author_username="dana", merged_by_username="bob"),
        files=[FileChange(path="apps/base/inventory/deployment.yaml", added=1, removed=1)],
    )
    return Culprit(
        commit=commit,
        applied_at=T0 - timedelta(minutes=12),
        applied_revision=f"main@sha1:{SHA}",
        before_onset_seconds=720,
        evidence="a person's change by Dana Developer (@dana), merged in !7, applied 12 min before the onset",
        candidates=1,
    )


async def _start(
    env: WorkflowEnvironment,
    task_queue: str,
    wi: WorkItem,
    alerts: list[Signal],
    applied: list[AppliedRevision] | None = None,
    **opts: object,
):
    options = LoopOptions(search_attributes=False, **opts)
    return await env.client.start_workflow(
        RemediationWorkflow.run,
        RemediationInput(scope=SCOPE, work_item=wi, signals=alerts, options=options, applied=applied or []),
        id=f"remediate/{SCOPE}/{wi.id}/{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
    )


async def _when(handle: WorkflowHandle, done: Callable[[LoopState], bool], what: str) -> LoopState:
    return await query_when(handle, RemediationWorkflow.status, done, what)


def _recovered(alerts: list[Signal]) -> list[Signal]:
    return [a.model_copy(update={"transition": Transition.RECOVERED}) for a in alerts]


def test_the_incident_issue_shows_the_top_three_candidates_their_evidence_and_the_timeline() -> None:
    alerts = storm()
    wi = _incident(alerts)
    text = issue_description(SCOPE, wi)
    assert wi.incident is not None and [c.entity for c in wi.incident.candidates][0] == "inventory"
    assert "Likely root cause, best first:" in text
    assert "1. inventory (service), score" in text and "\n2. " in text and "\n3. " in text
    assert "   - itself: 2 metric(s) alerting, 3 alert(s), first at +0s" in text
    assert "Alert timeline:" in text and text.count("\n+") == 6
    assert culprit_candidates(wi) == ["inventory", "catalog", "storefront"]


async def test_an_incident_names_its_culprit_change_joins_later_alerts_once_per_batch_and_ends_recovered(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    alerts = storm()
    wi = _incident(alerts)
    world = World(culprits={"inventory": _culprit()})
    later = [dd(DD_DEMO, "catalog", 400), am_errors("storefront", 410)]  # a second wave, one intake batch
    async with Worker(
        env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await _start(env, task_queue, wi, alerts, applied=[APPLIED])
        state = await _when(handle, lambda s: s.stage is Stage.AWAIT_RECOVERY, "waited for recovery")
        await handle.signal(RemediationWorkflow.join_alerts, AlertsJoined(signals=later))
        await _when(handle, lambda s: len(s.alerts) == 2, "joined the later alerts")
        await handle.signal(RemediationWorkflow.refresh, Refresh(signals=_recovered(alerts)))
        mid = await _when(handle, lambda s: len(s.recovered_alerts) == 6, "saw the storm recover")
        assert mid.stage is Stage.AWAIT_RECOVERY  # the later alerts still fire
        await handle.signal(RemediationWorkflow.refresh, Refresh(signals=_recovered(later)))
        final = await handle.result()
        await record(env.client, handle.id, "incident-recovered")

    assert world.calls[:3] == ["jira.open_work_item", "investigate.culprit", "change.plan_remediation"]
    (planned,) = world.remediations
    assert planned.investigation == state.investigation and len(planned.signals) == 6
    (asked,) = world.culprit_asked
    assert [c.entity for c in asked.candidates] == ["inventory", "catalog", "storefront"]
    assert all(c.paths == [] for c in asked.candidates)  # the activity finds each workload's paths
    assert asked.onset == T0 and asked.lookback_seconds == 86_400
    assert asked.applied == [APPLIED]  # what the intake heard from Flux, with the Kustomization's status
    assert state.investigation is not None and state.investigation.candidates[0].culprit.commit.sha == SHA
    culprit, no_action, joined, recovered = world.comments
    assert no_action.labels == ["fixloop-no-action"]
    assert no_action.body == "fixloop opened no merge request for this incident: No rule matches inventory's alerts."
    assert culprit.labels == ["fixloop-culprit"]
    assert culprit.body.startswith("Changes Flux applied before the onset, per likely root cause (best first):")
    said = "inventory: a person's change by Dana Developer (@dana), merged in !7, applied 12 min before the onset"
    assert said in culprit.body
    assert "catalog: no commit touching its files was applied in the 24 h 0 min before the onset" in culprit.body
    assert joined.body.startswith("2 later alert(s) on catalog, storefront joined this incident:")
    assert joined.labels == ["fixloop-alert"]
    assert recovered.labels == ["fixloop-recovered"] and recovered.body.startswith("All 8 alert(s)")
    assert (final.stage, final.outcome) == (Stage.DONE, Outcome.RECOVERED)
    texts = [e.text for e in final.evidence]
    assert any(
        t.startswith(f"culprit change of inventory: {SHA[:12]} inventory: DB pool size 2 by Dana") for t in texts
    )
    assert "every alert of the incident recovered (8)" in texts


async def test_an_incident_whose_alerts_keep_firing_escalates_then_ends_tracked(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    alerts = [dd(DD_INRES, "inventory", 5)]
    wi = _incident(alerts)
    world = World()
    async with Worker(
        env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await _start(
            env, task_queue, wi, alerts, incident_escalate_after=timedelta(hours=2), incident_max_escalations=1
        )
        final = await handle.result()

    assert (final.stage, final.outcome) == (Stage.DONE, Outcome.TRACKED)
    labels = [c.labels for c in world.comments]
    assert labels == [[], ["fixloop-no-action"], ["fixloop-stale-await-recovery"], ["fixloop-expired"]]
    assert world.comments[0].body.startswith("Changes Flux applied before the onset")
    assert "inventory: no commit touching its files was applied" in world.comments[0].body
    # one escalation after 2 h, then one more period
    assert final.evidence[-1].text.startswith("gave up waiting for the incident's alerts to recover after 4:00:00")


def _fixing(action: str, **more: object) -> World:
    """A world whose planner proposes ``action``; a human approves, the MR is merged and applied at once."""
    return World(
        culprits={"inventory": _culprit()},
        remediation=action,
        merge_after_polls=1,
        approvals=[approval("alice")],
        deploy_after_polls=1,
        **more,
    )


async def _run(
    env: WorkflowEnvironment,
    task_queue: str,
    world: World,
    wi: WorkItem,
    alerts: list[Signal],
    history: str | None = None,
) -> LoopState:
    """The loop's final state; its history recorded as ``history`` (``tests.workflows.histories.record``)."""
    async with Worker(
        env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await _start(env, task_queue, wi, alerts, applied=[APPLIED])
        final = await handle.result()
        if history:
            await record(env.client, handle.id, history)
        return final


async def test_an_incident_fix_is_gated_deployed_and_verified_by_its_monitors_recovering(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """incident -> remediation MR -> a human's approval of the merged head -> Flux applied -> the incident's Datadog
    monitors must recover and inventory's metrics not regress -> verified; its services stay the loop's for the
    cool-down, then the intake is told the incident ended."""
    alerts = storm()
    wi = _incident(alerts)
    world = _fixing("revert")
    final = await _run(env, task_queue, world, wi, alerts, history="incident-fix-verified")

    assert (final.stage, final.outcome) == (Stage.DONE, Outcome.VERIFIED)
    assert world.calls[:4] == [
        "jira.open_work_item",
        "investigate.culprit",
        "change.plan_remediation",
        "gitlab.open_merge_request",
    ]
    (judged,) = world.judged
    monitors = sorted({int(a.monitor_id) for a in alerts if a.source.value == "datadog"})
    assert judged.service == "inventory" and judged.monitor_ids == monitors
    assert [c.resolution for c in world.closed] == ["done"]
    assert final.plan is not None and final.plan.action == "revert"
    done = next(e for e in final.evidence if e.text.startswith("verdict pass"))
    assert final.evidence[-1].at - done.at >= timedelta(minutes=30)  # the cool-down before the loop ends


async def test_an_incident_fix_whose_monitors_do_not_recover_is_reverted_through_a_second_gate(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    alerts = storm()
    world = _fixing("memory", verdict=VerdictResult.FAIL)
    final = await _run(env, task_queue, world, _incident(alerts), alerts)

    assert (final.stage, final.outcome) == (Stage.DONE, Outcome.REVERTED)
    (revert,) = world.reverts
    assert revert.original.iid == final.merge_request.iid  # the remediation's own merge is reverted
    assert final.revert is not None and final.revert.iid != final.merge_request.iid


async def test_the_planner_is_handed_the_earliest_alerts_within_its_byte_budget(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """A storm of 60 alerts of about 12 KiB each (tags filled to their bound) is over the planner's 512 KiB: the
    planner gets the earliest that fit, so its input stays under Temporal's payload limit."""
    tags = ["service:inventory", *(f"team:{'x' * 180}-{i}" for i in range(63))]  # TAGS_MAX of about TAG_MAX
    alerts = [Signal.model_validate({**dd(DD_INRES, "inventory", i).model_dump(), "tags": tags}) for i in range(60)]
    assert sum(signal_bytes(a) for a in alerts) > PLAN_SIGNALS_MAX_BYTES
    world = World()
    async with Worker(
        env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await _start(env, task_queue, _incident(alerts), alerts, incident_max_escalations=0)
        await handle.result()
    (planned,) = world.remediations
    assert 0 < len(planned.signals) < len(alerts)
    assert sum(signal_bytes(s) + 1 for s in planned.signals) + 2 <= PLAN_SIGNALS_MAX_BYTES
    assert [s.fingerprint for s in planned.signals] == [a.fingerprint for a in alerts[: len(planned.signals)]]
