"""RemediationWorkflow on the Java test server, against the stand-in world (``world.py``): stages, escalation on
a stalled approval, the gate, continue-as-new, and the status the Temporal UI shows."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from activities.gitlab import Approval
    from activities.triage import triage_rules
    from fixloop.models import WorkItem, WorkItemKind
    from tests.conftest import signals
    from tests.workflows.world import HEAD, MERGE, World
    from workflows.remediation import LoopOptions, LoopState, Outcome, RemediationInput, RemediationWorkflow, Stage

ALPINE = "trivy/trivy-0.22-fulldb_alpine-39.json"
MISCONFIG = "trivy/dd-trivy_fs_misconfig_and_secrets.json"
SCOPE = "team/gitops"
HUMAN = Approval(by="alice", sha=HEAD)
BOT = Approval(by="fixloop-bot", sha=HEAD, bot=True)


def _item(rel: str, kind: WorkItemKind) -> WorkItem:
    return next(w for w in triage_rules(signals(rel)).work_items if w.kind is kind)


async def _run(env: WorkflowEnvironment, task_queue: str, world: World, item: WorkItem, **options: object) -> LoopState:
    opts = LoopOptions(search_attributes=False, **options)  # the Java test server has no custom search attributes
    async with Worker(
        env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        return await env.client.execute_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=opts),
            id=f"remediate/{SCOPE}/{item.id}/{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )


async def test_loop_runs_to_a_verified_close(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=3, approvals=[BOT, HUMAN], deploy_after_polls=2)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))

    assert (state.stage, state.outcome) == (Stage.DONE, Outcome.VERIFIED)
    assert world.calls == [
        "jira.open_work_item", "change.plan", "gitlab.open_merge_request", "jira.link", "verify.judge"
    ]  # fmt: skip
    assert [(link.key, link.url) for link in world.links] == [("OPS-1", state.merge_request.url)]
    assert (world.mr_polls, world.deploy_polls) == (3, 2)
    assert [c.resolution for c in world.closed] == ["done"] and "error rate" in world.closed[0].comment
    assert world.comments == []
    assert state.mr_state and state.mr_state.merge_sha == MERGE
    texts = [e.text for e in state.evidence]
    assert any("approved by alice" in t for t in texts) and not any("fixloop-bot" in t for t in texts)


async def test_stalled_approval_escalates_then_ends(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=None)
    escalate_after = timedelta(hours=4)
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        poll_interval=timedelta(minutes=30),
        approval_escalate_after=escalate_after,
        approval_max_escalations=2,
    )

    assert (state.stage, state.outcome, state.escalations) == (Stage.DONE, Outcome.APPROVAL_EXPIRED, 2)
    labels = [c.labels for c in world.comments]
    assert labels == [["fixloop-stale-await-approval"]] * 2 + [["fixloop-expired"]]
    assert len({c.dedup_key for c in world.comments}) == 3
    assert all(c.key == "OPS-1" for c in world.comments)
    # two escalations, then one more period: 12 hours waited, polled every 30 minutes
    opened = next(e.at for e in state.evidence if e.stage is Stage.OPEN_MERGE_REQUEST)
    hours = [round((e.at - opened) / timedelta(hours=1), 2) for e in state.evidence if e.text.startswith("escalated")]
    assert hours == [4, 8]
    assert round((state.evidence[-1].at - opened) / timedelta(hours=1), 2) == 12
    assert world.mr_polls >= 3 * 4 * 2 - 3
    assert world.calls[-2:] == ["gitlab.open_merge_request", "jira.link"]  # never deployed, never judged


async def test_merge_without_a_human_approval_does_not_pass_the_gate(env: WorkflowEnvironment, task_queue: str) -> None:
    stale = Approval(by="alice", sha="d" * 40)  # approved an older head
    world = World(merge_after_polls=1, approvals=[BOT, stale])
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        approval_escalate_after=timedelta(hours=1),
        approval_max_escalations=0,
    )
    assert state.outcome is Outcome.APPROVAL_EXPIRED and world.deploy_polls == 0


async def test_closed_merge_request_ends_the_loop(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(close_after_polls=2)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.MR_CLOSED and world.deploy_polls == 0


async def test_failed_reconciliation_ends_the_loop(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], deploy_after_polls=1, deploy_fails=True)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.DEPLOY_FAILED and "judge" not in " ".join(world.calls)


async def test_unlocated_fix_is_explained_on_jira(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(located=False)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.NOT_LOCATED
    assert [c.labels for c in world.comments] == [[]] and "no Dockerfile" in world.comments[0].body
    assert world.calls == ["jira.open_work_item", "change.plan"]


async def test_risk_digest_gets_a_jira_issue_only(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World()
    state = await _run(env, task_queue, world, _item(MISCONFIG, WorkItemKind.RISK_DIGEST))
    assert (state.outcome, world.calls) == (Outcome.TRACKED, ["jira.open_work_item"])
    assert state.issue and state.issue.key == "OPS-1"


async def test_long_wait_continues_as_new_with_its_state(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=40, approvals=[HUMAN], deploy_after_polls=1)
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        max_run_events=60,
        poll_interval=timedelta(hours=1),
    )
    assert state.outcome is Outcome.VERIFIED
    assert state.runs >= 3
    assert world.calls.count("jira.open_work_item") == 1 and world.calls.count("gitlab.open_merge_request") == 1
