"""RemediationWorkflow on the Java test server, against the stand-in world (``world.py``): stages, escalation on
a stalled approval, the gate (facts read from the GitLab API only: forged webhooks never move it), continue-as-new,
and the status the Temporal UI shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic_core import to_json
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from fixloop.activities import merge_request as gitlab
    from fixloop.activities import verify
    from fixloop.core.gate import Approval, ApproverPolicy, MergeRequestState, MrState
    from fixloop.core.models import RecentDeploy, Signal, WorkItem, WorkItemKind, fingerprint
    from fixloop.core.triage import triage_rules
    from fixloop.core.verification import VerdictResult
    from fixloop.workflows.contracts.intake import intake_id
    from fixloop.workflows.contracts.loop import (
        AlertsJoined,
        Evidence,
        GateKind,
        LoopOptions,
        LoopState,
        MergeRequestEvent,
        OpenFix,
        Outcome,
        RemediationInput,
        Stage,
    )
    from fixloop.workflows.contracts.merge_request import MergeRequestStateInput
    from fixloop.workflows.options import PLAN_HEARTBEAT, VERIFY_HEARTBEAT
    from fixloop.workflows.remediation import ALERTS_MAX_BYTES, CARRY_MAX_BYTES, RemediationWorkflow
    from tests.conftest import signals
    from tests.workflows.histories import record
    from tests.workflows.world import (
        FIX_TITLE,
        HEAD,
        MERGE,
        MERGED_AT,
        REVERT_HEAD,
        REVERT_MERGE,
        World,
        approval,
        measured,
    )

ALPINE = "trivy/trivy-0.22-fulldb_alpine-39.json"
MISCONFIG = "trivy/dd-trivy_fs_misconfig_and_secrets.json"
DEMO_ALERTS = (
    "../../examples/demo/alerts/datadog-catalog-error-rate-triggered.json",
    "../../examples/demo/alerts/alertmanager-catalog-errors-firing.json",
)
SCOPE = "team/gitops"
HUMAN = approval("alice")
BOT = approval("fixloop-bot")


def _events(records: list) -> list[str]:
    """The events of Jira comments or MR notes: their dedup keys without the workflow id."""
    return [r.dedup_key.rsplit("/", 1)[1] for r in records]


AUDIT_7 = ["approved-7", "merged-7", "deployed-7"]  # the gate read back, then Flux's apply: on Jira and on !7


def _item(rel: str, kind: WorkItemKind) -> WorkItem:
    return next(w for w in triage_rules(signals(rel)).work_items if w.kind is kind)


async def _run(
    env: WorkflowEnvironment,
    task_queue: str,
    world: World,
    item: WorkItem,
    *,
    history: str | None = None,
    first_history: str | None = None,
    signals: list[Signal] | None = None,
    **options: object,
) -> LoopState:
    """The loop's final state; its last run's history recorded as ``history`` and its first run's as
    ``first_history`` (``tests.workflows.histories.record``) when given."""
    opts = LoopOptions(search_attributes=False, **options)  # the Java test server has no custom search attributes
    async with Worker(
        env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await env.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=opts, signals=signals or []),
            id=f"remediate/{SCOPE}/{item.id}/{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        state = await handle.result()
        if history:
            await record(env.client, handle.id, history)
        if first_history:
            await record(env.client, handle.id, first_history, run_id=handle.first_execution_run_id)
        return state


async def test_loop_runs_to_a_verified_close(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=3, approvals=[BOT, HUMAN], deploy_after_polls=2)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD), history="remediation-verified")

    assert (state.stage, state.outcome) == (Stage.DONE, Outcome.VERIFIED)
    assert world.calls == [
        "jira.open_work_item", "change.plan", "gitlab.open_merge_request", "jira.link", "verify.judge"
    ]  # fmt: skip
    assert [(link.key, link.url) for link in world.links] == [("OPS-1", state.merge_request.url)]
    assert (world.mr_polls, world.deploy_polls) == (3, 2)
    assert [c.resolution for c in world.closed] == ["done"] and "error rate" in world.closed[0].comment
    assert _events(world.comments) == AUDIT_7 and _events(world.notes) == [*AUDIT_7, "verified"]
    assert state.mr_state and state.mr_state.merge_sha == MERGE
    texts = [e.text for e in state.evidence]
    assert any(t.startswith("approved by alice at") for t in texts)
    assert not any(t.startswith("approved by") and "fixloop-bot" in t for t in texts)
    assert "approval by fixloop-bot does not count: fixloop's own user" in texts


async def test_the_long_activities_are_scheduled_with_their_heartbeat_timeouts(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """What the server holds for each activity the loop scheduled: planning and verification heartbeat (a dead
    worker is noticed within their heartbeat timeout), the short external calls do not."""
    world = World(merge_after_polls=1, approvals=[HUMAN])
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    async with Worker(
        env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await env.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=LoopOptions(search_attributes=False)),
            id=f"remediate/{SCOPE}/{item.id}/{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        assert (await handle.result()).outcome is Outcome.VERIFIED
        history = await handle.fetch_history()
    scheduled = {
        a.activity_type.name: a.heartbeat_timeout.ToTimedelta()  # 0: none
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        for a in [e.activity_task_scheduled_event_attributes]
    }
    assert scheduled["change.plan"] == PLAN_HEARTBEAT == timedelta(minutes=4)
    assert scheduled["verify.judge"] == VERIFY_HEARTBEAT == timedelta(minutes=2)
    assert {scheduled["jira.open_work_item"], scheduled["gitlab.open_merge_request"]} == {timedelta(0)}


async def test_what_the_merge_request_says_first_is_said_on_the_jira_issue(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """A planned change with callouts (a breaking bump, advisories the policy's max_jump leaves open:
    ``fixloop.core.change.mr.callouts``) comments them on the work item's Jira issue once the merge request is
    open, behind the patch ``comment-the-callouts``; a change without them comments nothing more (the test above)."""
    lines = [
        "Breaking: Werkzeug 0.11 \u2192 0.15.3 is a 0.x minor jump (skips 0.12 by the versions the advisories name; "
        "no release list was read: PyPI lookups are off): read its release notes before approving.",
        "Not fixed within max_jump: minor: celery: CVE-2021-23727 needs 5.2.2; they stay open on the work item.",
    ]
    world = World(merge_after_polls=1, approvals=[HUMAN], callouts=lines)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD), history="remediation-callouts")
    assert state.outcome is Outcome.VERIFIED
    assert _events(world.comments) == ["callouts", *AUDIT_7]
    (said,) = [c for c in world.comments if c.dedup_key.endswith("/callouts")]
    assert said.key == "OPS-1" and said.body == (
        f"Merge request !7 ({state.merge_request.url}):\n- {lines[0]}\n- {lines[1]}"  # type: ignore[union-attr]
    )


async def test_a_fix_takes_the_name_of_the_service_its_change_touches(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """Triage named no service (the scanned artifact is a tarball's path); the plan's change is to catalog: the
    loop's work item names catalog (its title, the status, the merge request's input) and the Jira summary follows,
    once, from the summary fixloop gave it."""
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    assert item.service is None and item.title.startswith("Rebuild testdata/fixtures/images/alpine-39.tar.gz on")
    world = World(merge_after_polls=1, approvals=[HUMAN], service="catalog")
    state = await _run(env, task_queue, world, item)

    assert state.outcome is Outcome.VERIFIED
    title = "Rebuild catalog on a patched base image (fixes 5 CVEs: 1 critical, 3 medium, 1 low)"
    assert state.title == title
    assert world.calls[:4] == ["jira.open_work_item", "change.plan", "jira.rename", "gitlab.open_merge_request"]
    assert [(r.key, r.summary, r.was) for r in world.renames] == [("OPS-1", title, item.title)]
    assert [(w.id, w.service, w.title) for w in world.opened] == [(item.id, "catalog", title)]
    assert f"the change is to catalog: {title}" in [e.text for e in state.evidence]


async def test_a_fix_whose_plan_names_no_service_keeps_its_name(env: WorkflowEnvironment, task_queue: str) -> None:
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    world = World(merge_after_polls=1, approvals=[HUMAN])  # the change's paths name no one service
    state = await _run(env, task_queue, world, item)
    assert state.outcome is Outcome.VERIFIED and state.title is None and world.renames == []
    assert [w.title for w in world.opened] == [item.title]


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
    stale = approval("alice", "d" * 40)  # approved an older head
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
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    state = await _run(env, task_queue, world, item)
    assert state.outcome is Outcome.MR_CLOSED and world.deploy_polls == 0
    assert world.deleted == [f"fixloop/{item.id}"]  # no orphan branch
    assert [c.labels for c in world.comments] == [["fixloop-mr-closed"]] and "!7" in world.comments[0].body


async def test_a_locked_merge_request_is_being_merged_not_closed(env: WorkflowEnvironment, task_queue: str) -> None:
    # GitLab's "locked" is the transient state of a merge in progress: the gate reads again, it does not end the loop
    locked = MergeRequestState(state=MrState.LOCKED, head_sha=HEAD, approvals=[HUMAN])
    world = World(mr_script=[locked, _merged(HUMAN)])
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.VERIFIED and world.mr_polls == 2 and world.deleted == []


async def test_failed_reconciliation_ends_the_loop(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], deploy_after_polls=1, deploy_fails=True)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.DEPLOY_FAILED and "judge" not in " ".join(world.calls)
    assert _events(world.comments) == ["approved-7", "merged-7", "deploy-failed"]  # no deploy record
    assert world.comments[-1].labels == ["fixloop-deploy-failed"]
    assert "kustomize build failed" in world.comments[-1].body


async def test_bot_approval_is_ignored_by_the_gate(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[BOT])  # merged, approved only by fixloop's own user
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        approval_escalate_after=timedelta(hours=2),
        approval_max_escalations=1,
    )
    assert (state.outcome, world.deploy_polls) == (Outcome.APPROVAL_EXPIRED, 0)
    texts = [e.text for e in state.evidence]
    assert any("merged without a human approval" in t for t in texts)
    assert not any("approved by" in t for t in texts)
    # the reminder reached the reviewer on the MR as well as Jira
    assert [n.iid for n in world.notes] == [7] and "Reminder" in world.notes[0].body


async def test_push_after_approval_re_gates(env: WorkflowEnvironment, task_queue: str) -> None:
    pushed = "c" * 40
    opened, merged = MrState.OPENED, MrState.MERGED
    world = World(
        mr_script=[
            MergeRequestState(state=opened, head_sha=HEAD, approvals=[HUMAN]),  # alice approves HEAD
            MergeRequestState(state=merged, head_sha=pushed, merge_sha=MERGE),  # a push, then merged
            MergeRequestState(state=merged, head_sha=pushed, merge_sha=MERGE),
            MergeRequestState(
                state=merged, head_sha=pushed, merge_sha=MERGE, approvals=[approval("bob", pushed)]
            ),
        ]
    )
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.VERIFIED and world.mr_polls == 4
    texts = [e.text for e in state.evidence]
    assert any(f"head moved to {pushed[:12]}: approvals reset" in t for t in texts)
    assert any(t.startswith(f"approved by bob at {pushed[:12]}") for t in texts)
    assert not any("alice" in t for t in texts if t.startswith("approved by"))


async def test_lost_webhook_is_recovered_by_the_poll(env: WorkflowEnvironment, task_queue: str) -> None:
    # no approve update ever arrives: GitLab's own state, polled, carries the loop through the gate
    world = World(merge_after_polls=2, approvals=[HUMAN])
    state = await _run(
        env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD), poll_interval=timedelta(minutes=15)
    )
    assert state.outcome is Outcome.VERIFIED and world.mr_polls == 2
    opened = next(e.at for e in state.evidence if e.stage is Stage.OPEN_MERGE_REQUEST)
    approved = next(e.at for e in state.evidence if e.text.startswith("approved by alice"))
    assert timedelta(minutes=30) <= approved - opened < timedelta(minutes=31)  # two poll intervals, no webhook


async def test_flux_event_for_another_revision_is_ignored(env: WorkflowEnvironment, task_queue: str) -> None:
    other = "main@sha1:" + "9" * 40
    world = World(
        merge_after_polls=1,
        approvals=[HUMAN],
        deploy_after_polls=None,  # the Kustomization poll never shows it: only the events can move the loop
        deploy_events=[(other, True), (f"main@sha1:{MERGE}", True)],
        client=env.client,
    )
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.VERIFIED and world.deploy_polls == 2
    texts = [e.text for e in state.evidence]
    assert f"Flux event for another revision ignored: {other}" in texts
    assert f"applied by Flux: main@sha1:{MERGE}" in texts


async def test_a_burst_of_webhooks_wakes_one_read_before_the_poll(env: WorkflowEnvironment, task_queue: str) -> None:
    # Changed with issue 14: the hooks used to carry the merge itself (GitLab's API answered "opened" throughout and
    # the loop believed the hook). Now a hook only wakes the loop, which reads GitLab: here GitLab says merged and
    # approved, and the read the burst woke (one, not five) moves the gate long before the hour's poll.
    merged = MergeRequestState(state=MrState.MERGED, head_sha=HEAD, merge_sha=MERGE, approvals=[HUMAN])
    hook = MergeRequestEvent(iid=7, state=MrState.OPENED, head_sha=HEAD)
    world = World(mr_script=[merged], hooks_at_open=[hook] * 5, client=env.client)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD), poll_interval=timedelta(hours=1))
    assert state.outcome is Outcome.VERIFIED and world.mr_polls == 1
    opened = next(e.at for e in state.evidence if e.stage is Stage.OPEN_MERGE_REQUEST)
    approved = next(e.at for e in state.evidence if e.text.startswith(f"approved by alice at {HEAD[:12]}"))
    assert approved - opened < timedelta(minutes=1)  # the hooks' read, not the poll an hour later
    assert state.wakes == 5


async def test_a_forged_merge_hook_does_not_move_the_gate(env: WorkflowEnvironment, task_queue: str) -> None:
    """GitLab's API says the merge request is open (approved by alice at its head, and then unapproved): hooks
    forging every field (state merged, the head, a merge commit already on main, another head) wake the loop,
    which reads GitLab and stays at the gate until it gives up: no deploy, no verification."""
    opened = MergeRequestState(state=MrState.OPENED, head_sha=HEAD, approvals=[HUMAN])
    unapproved = MergeRequestState(state=MrState.OPENED, head_sha=HEAD)
    forged = [
        MergeRequestEvent(iid=7, state=MrState.MERGED, head_sha=HEAD, merge_sha=MERGE),
        MergeRequestEvent(iid=7, state=MrState.MERGED, head_sha="c" * 40, merge_sha=MERGE),
        MergeRequestEvent(iid=7, state=MrState.MERGED, head_sha=HEAD, merge_sha=MERGE),
    ]
    world = World(mr_script=[opened, opened, unapproved], mr_events=forged, hooks_at_open=forged, client=env.client)
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        approval_escalate_after=timedelta(hours=1),
        approval_max_escalations=0,
    )
    assert (state.outcome, world.deploy_polls, world.judged) == (Outcome.APPROVAL_EXPIRED, 0, [])
    assert state.mr_state is not None and state.mr_state.state is MrState.OPENED
    assert world.mr_polls >= 3 and state.wakes >= 6  # every hook woke a read of GitLab; none was believed
    assert not any(e.text.startswith("approved by") for e in state.evidence)


async def _gate(env: WorkflowEnvironment, task_queue: str, world: World) -> LoopState:
    return await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        approval_escalate_after=timedelta(hours=1),
        approval_max_escalations=0,
    )


def _merged(*approvals: Approval, **facts: object) -> MergeRequestState:
    return MergeRequestState(
        state=MrState.MERGED, head_sha=HEAD, merge_sha=MERGE, approvals=list(approvals), **facts
    )


async def test_the_authors_approval_does_not_count(env: WorkflowEnvironment, task_queue: str) -> None:
    by_author = _merged(HUMAN, author_id=HUMAN.user_id, author="alice")  # alice opened it and approved it
    state = await _gate(env, task_queue, World(mr_script=[by_author]))
    assert (state.outcome, state.stage) == (Outcome.APPROVAL_EXPIRED, Stage.DONE)
    assert any(e.text == "approval by alice does not count: the merge request's author" for e in state.evidence)
    # unless the policy says authors' approvals count
    allowed = by_author.model_copy(update={"policy": ApproverPolicy(author_approvals_count=True)})
    assert (await _gate(env, task_queue, World(mr_script=[allowed]))).outcome is Outcome.VERIFIED


async def test_an_approver_outside_the_allowed_list_or_group_does_not_count(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    policy = ApproverPolicy(restricted=True)  # FIXLOOP_GITLAB_APPROVERS / _APPROVER_GROUP set
    outsider = _merged(approval("alice", allowed=False), policy=policy)
    unchecked = _merged(approval("alice"), policy=policy)  # allowed unknown: fails closed
    for read in (outsider, unchecked):
        state = await _gate(env, task_queue, World(mr_script=[read]))
        assert state.outcome is Outcome.APPROVAL_EXPIRED and any(
            e.text == "approval by alice does not count: not an allowed approver" for e in state.evidence
        )
    member = _merged(approval("alice", allowed=True), policy=policy)
    assert (await _gate(env, task_queue, World(mr_script=[member]))).outcome is Outcome.VERIFIED


async def test_without_reset_on_push_an_approval_from_before_a_push_does_not_count(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """The project keeps approvals on push: alice's approval, first seen at HEAD, is still listed after a push to
    ``pushed`` (GitLab binds no SHA to it) and must not count for the merged ``pushed``."""
    pushed = "c" * 40
    kept = {"reset_approvals_on_push": False}
    world = World(
        mr_script=[
            MergeRequestState(state=MrState.OPENED, head_sha=HEAD, approvals=[HUMAN], **kept),
            MergeRequestState(
                state=MrState.MERGED, head_sha=pushed, merge_sha=MERGE, approvals=[approval("alice", pushed)],
                **kept,
            ),
        ]
    )  # fmt: skip
    state = await _gate(env, task_queue, world)
    assert state.outcome is Outcome.APPROVAL_EXPIRED and world.deploy_polls == 0
    why = f"listed since before the head moved to {pushed[:12]} (approvals are not reset on push)"
    assert any(e.text == f"approval by alice does not count: {why}" for e in state.evidence)
    # the same approval first seen at the merged head counts (the setting unknown, as on CE: bound by observation)
    fresh = _merged(HUMAN, reset_approvals_on_push=None)
    assert (await _gate(env, task_queue, World(mr_script=[fresh]))).outcome is Outcome.VERIFIED


async def test_deploy_timeout_escalates_then_ends(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], deploy_after_polls=None)
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        deploy_escalate_after=timedelta(hours=1),
        deploy_max_escalations=1,
    )
    assert (state.outcome, state.escalations) == (Outcome.DEPLOY_EXPIRED, 1)
    assert _events(world.comments)[:2] == ["approved-7", "merged-7"]
    assert [c.labels for c in world.comments[2:]] == [["fixloop-stale-await-deploy"], ["fixloop-expired"]]
    assert verify.JUDGE not in world.calls


async def test_failed_verdict_opens_a_gated_revert(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], verdict=VerdictResult.FAIL, revert_merge_after_polls=2)
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    state = await _run(env, task_queue, world, item, history="remediation-reverted")
    assert state.outcome is Outcome.REVERTED
    (revert,) = world.reverts
    assert (revert.merge_sha, revert.original.iid) == (MERGE, 7)  # exactly the merge commit
    assert state.revert and state.revert.iid == 8 and state.reverted_sha == MERGE
    assert world.revert_polls == 2 and world.deploy_polls == 2  # the revert went through the gate and Flux
    assert world.statuses == ["In Progress", "To Do"]  # reopened
    assert _events(world.comments) == [*AUDIT_7, "verify-failed", "approved-8", "merged-8", "deployed-8", "reverted"]
    labels = {c.dedup_key.rsplit("/", 1)[1]: c.labels for c in world.comments}
    assert (labels["verify-failed"], labels["reverted"]) == (["fixloop-verify-failed"], ["fixloop-reverted"])
    assert "error rate" in world.comments[3].body and world.closed == []
    assert [link.title for link in world.links] == ["Merge request !7", "Revert merge request !8"]
    assert any("approved by carol" in e.text for e in state.evidence)


async def test_the_audit_trail_is_on_jira_and_the_merge_request(env: WorkflowEnvironment, task_queue: str) -> None:
    """Each event once on Jira and once on the merge request, as read back from GitLab and Flux: who approved which
    head (the bot's approval named as not counted), the merge commit and when, the revision Flux applied, where and
    when it was seen, and the verdict with every metric's numbers and units."""
    world = World(merge_after_polls=1, approvals=[BOT, HUMAN], metrics=measured(error_after=0.1))
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.VERIFIED
    comments = dict(zip(_events(world.comments), (c.body for c in world.comments), strict=True))
    notes = dict(zip(_events(world.notes), (n.body for n in world.notes), strict=True))
    assert list(comments) == AUDIT_7 and list(notes) == [*AUDIT_7, "verified"]  # each once
    assert {n.iid for n in world.notes} == {7}

    assert comments["approved-7"] == (
        f"Approved: merge request !7 was approved by alice at head {HEAD}, as read back from GitLab's approvals. "
        "Not counted: fixloop-bot: fixloop's own user."
    )
    assert f"approved by alice at head `{HEAD}`." in notes["approved-7"]
    assert comments["merged-7"] == (
        f"Merged: merge request !7 was merged as {MERGE} at {MERGED_AT.isoformat()}; fixloop now awaits Flux's apply."
    )
    assert f"merged as `{MERGE}` at {MERGED_AT.isoformat()}" in notes["merged-7"]
    applied = next(e.at for e in state.evidence if e.text.startswith("applied by Flux"))
    seen = applied.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert comments["deployed-7"] == (
        f"Deployed: Flux applied main@sha1:{MERGE} (Kustomization flux-system/apps-production), the merge of merge "
        f"request !7; seen Ready at {seen}."
    )
    deployed = notes["deployed-7"]
    assert f"`main@sha1:{MERGE}` applied (Kustomization flux-system/apps-production), seen Ready at {seen}" in deployed
    verified = notes["verified"]
    assert verified.startswith("fixloop verified this change after its deploy: **pass**.")
    for line in (
        "- error rate 0.4 errors/s \u2192 0.1 errors/s (-75 %): pass, critical",
        "- latency p95 120 ms \u2192 120 ms (+0.0 %): pass",
        "- request rate 40 req/s \u2192 40 req/s (+0.0 %): pass",
        "- score 100/100",
    ):
        assert line in verified.splitlines() and line in world.closed[0].comment.splitlines(), line


async def test_a_failed_verification_is_rolled_back_by_a_revert_titled_as_one(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """The error rate triples: the revert's title says it is a rollback and why in one line, its input carries the
    failed numbers with units and what it undoes, the original merge request is told ``Reverted by !8``, and while
    the revert waits at its gate the status query and the Temporal UI's details present a rollback gate."""
    world = World(merge_after_polls=1, approvals=[HUMAN], metrics=measured(error_after=1.2, latency_after=0.13))
    at_gate: list[tuple[LoopState, str]] = []
    real = world.merge_request_state

    async def revert_read(inp: MergeRequestStateInput) -> MergeRequestState:
        if inp.iid == 8 and not at_gate:  # the revert waits at its gate: what the query and the UI show now
            handle = env.client.get_workflow_handle(activity.info().workflow_id)
            status = await handle.query(RemediationWorkflow.status)
            metadata = await handle.query("__temporal_workflow_metadata")
            at_gate.append((status, metadata.current_details))
        return await real(inp)

    world.merge_request_state = activity.defn(name=gitlab.MERGE_REQUEST_STATE)(revert_read)  # type: ignore[method-assign]
    wid = f"remediate/{SCOPE}/{uuid.uuid4().hex[:6]}"
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    acts = world.activities()
    async with Worker(env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=acts):
        state = await env.client.execute_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=LoopOptions(search_attributes=False)),
            id=wid,
            task_queue=task_queue,
        )
        details = (await env.client.get_workflow_handle(wid).query("__temporal_workflow_metadata")).current_details
    assert state.outcome is Outcome.REVERTED
    why = "verification failed: error rate +200 %"
    title = f'Revert "{FIX_TITLE}" \u2014 {why}'
    (revert,) = world.reverts
    assert revert.why == why and state.revert_why == why
    assert state.revert is not None and state.revert.title == title and len(title) <= gitlab.REVERT_TITLE_MAX
    assert revert.metrics == [
        "error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %): fail, critical",
        "latency p95 120 ms \u2192 130 ms (+8.3 %): pass",
        "request rate 40 req/s \u2192 40 req/s (+0.0 %): pass",
        "score 67/100",
    ]
    assert revert.undoes == ["bump FROM alpine:3.9.4 -> 3.9.6"] and revert.original.title == FIX_TITLE
    # the original is told it is being rolled back, and why; the revert gets its own approval, merge and deploy
    on_7 = [n for n in world.notes if n.iid == 7]
    assert _events(on_7) == [*AUDIT_7, "verify-failed-7", "reverted-by-8"]
    url_8 = "https://gitlab.example.com/team/gitops/-/merge_requests/8"
    assert on_7[-1].body.startswith(f"Reverted by [!8]({url_8}): {why}.")
    assert "- error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %): fail, critical" in on_7[-2].body.splitlines()
    assert _events([n for n in world.notes if n.iid == 8]) == ["approved-8", "merged-8", "deployed-8"]
    approved_8 = next(c.body for c in world.comments if c.dedup_key.endswith("/approved-8"))
    assert approved_8.startswith(f"Approved: revert merge request !8 was approved by carol at head {REVERT_HEAD}")
    assert f"merged as {REVERT_MERGE}" in next(c.body for c in world.comments if c.dedup_key.endswith("/merged-8"))
    # at the revert's gate: a rollback gate, in the query and in the UI
    ((waiting, shown),) = at_gate
    assert waiting.stage is Stage.AWAIT_APPROVAL and waiting.gate is not None
    assert (waiting.gate.kind, waiting.gate.iid, waiting.gate.url, waiting.gate.title) == (
        GateKind.ROLLBACK, 8, url_8, title
    )  # fmt: skip
    assert waiting.gate.label() == f"rollback gate: {title}"
    (gate_line,) = [line for line in shown.splitlines() if "gate**" in line]
    assert gate_line.startswith('- **rollback gate**: Revert "Rebuild catalog on alpine 3.9.6') and url_8 in gate_line
    # when it is over: no gate, and the details keep the verdict's numbers and the revert
    assert state.gate is None
    lines = details.splitlines()
    assert f"- revert: [!8]({url_8}): {why}" in lines
    url_7 = "https://gitlab.example.com/team/gitops/-/merge_requests/7"
    assert f"- merge request: [!7]({url_7}): {FIX_TITLE}" in lines
    (verdict_line,) = [line for line in lines if line.startswith("- verdict")]
    assert verdict_line.startswith("- verdict: **fail**: error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %)")
    assert "latency p95 120 ms \u2192 130 ms (+8.3 %)" in verdict_line


async def test_the_revert_gate_counts_only_what_gitlab_shows(env: WorkflowEnvironment, task_queue: str) -> None:
    """The revert merge request goes through the same gate: approved only by its author (carol opened it) and by
    the bot, merged -> the revert is never applied; a forged merge hook for it changes nothing either."""
    world = World(
        merge_after_polls=1,
        approvals=[HUMAN],
        verdict=VerdictResult.FAIL,
        revert_approvals=[approval("carol", REVERT_HEAD), approval("fixloop-bot", REVERT_HEAD)],
    )
    carol_opened = {"author_id": 13, "author": "carol"}
    real = world.merge_request_state

    async def revert_by_carol(inp: MergeRequestStateInput) -> MergeRequestState:
        s = await real(inp)
        return s.model_copy(update=carol_opened) if inp.iid == 8 else s

    world.merge_request_state = activity.defn(name=gitlab.MERGE_REQUEST_STATE)(revert_by_carol)  # type: ignore[method-assign]
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        approval_escalate_after=timedelta(hours=1),
        approval_max_escalations=0,
    )
    assert state.outcome is Outcome.APPROVAL_EXPIRED and state.revert is not None
    assert world.revert_polls >= 1 and world.deploy_polls == 1  # only the fix was deployed
    texts = [e.text for e in state.evidence]
    assert "approval by carol does not count: the merge request's author" in texts
    assert "approval by fixloop-bot does not count: fixloop's own user" in texts


async def test_closed_revert_ends_declined(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], verdict=VerdictResult.FAIL, revert_closes=True)
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    state = await _run(env, task_queue, world, item)
    assert state.outcome is Outcome.REVERT_DECLINED
    assert world.deleted == [gitlab.revert_branch(item.id, MERGE)]
    assert [c.labels for c in world.comments][-1] == ["fixloop-revert-declined"]


async def test_verification_waits_for_its_window(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN])
    state = await _run(
        env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD), verify_delay=timedelta(minutes=3)
    )
    (judged,) = world.judged
    assert state.deployed_at == judged.deployed_at and judged.policy.window == timedelta(minutes=10)
    verdict_at = next(e.at for e in state.evidence if e.text.startswith("verdict"))
    assert verdict_at - state.deployed_at >= timedelta(minutes=13)
    assert _events(world.notes) == [*AUDIT_7, "verified"]


async def test_unlocated_fix_is_explained_on_jira(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(located=False)
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))
    assert state.outcome is Outcome.NOT_LOCATED
    assert [c.labels for c in world.comments] == [[]] and "no Dockerfile" in world.comments[0].body
    assert world.calls == ["jira.open_work_item", "change.plan"]


async def test_risk_digest_gets_a_jira_issue_only(env: WorkflowEnvironment, task_queue: str) -> None:
    """The digest's issue lists its findings, most severe first: all a person gets for a digest."""
    world = World()
    item = _item(MISCONFIG, WorkItemKind.RISK_DIGEST)
    state = await _run(env, task_queue, world, item, signals=signals(MISCONFIG))
    assert (state.outcome, world.calls) == (Outcome.TRACKED, ["jira.open_work_item"])
    assert state.issue and state.issue.key == "OPS-1"
    (opened,) = world.issues_opened
    own = sorted((s for s in signals(MISCONFIG) if s.fingerprint in item.signals), key=lambda s: -s.severity.rank)
    assert opened.findings_total == len(item.signals) == len(opened.findings) > 1
    assert set(opened.findings) == {s.title for s in own} and opened.findings[0] in {
        s.title for s in own if s.severity is own[0].severity
    }


async def test_long_wait_continues_as_new_with_its_state(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=40, approvals=[HUMAN], deploy_after_polls=1)
    state = await _run(
        env,
        task_queue,
        world,
        _item(ALPINE, WorkItemKind.OS_REBUILD),
        max_run_events=60,
        poll_interval=timedelta(hours=1),
        history="remediation-continued-as-new-last-run",
        first_history="remediation-continued-as-new-first-run",
    )
    assert state.outcome is Outcome.VERIFIED
    assert state.runs >= 3
    assert world.calls.count("jira.open_work_item") == 1 and world.calls.count("gitlab.open_merge_request") == 1


async def test_alerts_joined_at_the_gate_must_recover(env: WorkflowEnvironment, task_queue: str) -> None:
    """The intake sends catalog's alerts into the open fix: Jira is told once, and the verification asks for the
    Datadog monitor among them (the Alertmanager alert names none). The loop told the intake it is fixing catalog
    (no intake runs here: recorded as not delivered, never failing the loop)."""
    alerts = [a for rel in DEMO_ALERTS for a in signals(rel)]
    world = World(
        merge_after_polls=2,
        approvals=[HUMAN],
        joins=[AlertsJoined(signals=alerts), AlertsJoined(signals=alerts)],  # the second is a re-delivery
        service="catalog",
        client=env.client,
    )
    state = await _run(env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD))

    assert state.outcome is Outcome.VERIFIED
    assert [a.fingerprint for a in state.alerts] == [a.fingerprint for a in alerts]
    (judged,) = world.judged
    assert judged.monitor_ids == [41000005] and judged.service == "catalog"
    # the Alertmanager alert is looked up by its labels (the recorded webhook's), once however often it came
    labels = {"env": "production", "job": "catalog", "monitor": "master", "service": "catalog", "severity": "critical"}
    assert judged.alerts == [{"alertname": "CatalogHighErrorRate", **labels}]
    (joined,) = [c for c in world.comments if "joined this work item" in c.body]
    assert joined.labels == ["fixloop-alert"] and "monitor(s) 41000005 to have recovered" in joined.body
    texts = [e.text for e in state.evidence]
    assert any("could not be told of the open fix" in t for t in texts)


def _wide(alert: Signal, i: int) -> Signal:
    """A real alert widened to about the 16 KiB a signal may take (64 tags of 200 characters), made distinct."""
    tags = [f"team:{i}-{n}-" + "x" * 180 for n in range(64)]
    return alert.model_copy(update={"fingerprint": fingerprint("wide", alert.fingerprint, i), "tags": tags})


async def test_joined_alerts_are_kept_within_their_byte_budget(env: WorkflowEnvironment, task_queue: str) -> None:
    """Alerts joined at the gate (here 3 x 40 widened real Datadog alerts) stay within ``ALERTS_MAX_BYTES`` in the
    loop's state, newest kept, the rest counted; the loop still continues as new and verifies."""
    (alert,) = signals(DEMO_ALERTS[0])
    batches = [[_wide(alert, 40 * b + i) for i in range(40)] for b in range(3)]
    world = World(
        merge_after_polls=30,
        approvals=[HUMAN],
        joins=[AlertsJoined(signals=batch) for batch in batches],
        service="catalog",
        client=env.client,
    )
    state = await _run(
        env, task_queue, world, _item(ALPINE, WorkItemKind.OS_REBUILD), max_run_events=60,
        poll_interval=timedelta(hours=1),
    )  # fmt: skip
    assert state.outcome is Outcome.VERIFIED and state.runs >= 2
    assert len(to_json(state.alerts)) <= ALERTS_MAX_BYTES
    assert state.alerts and state.alerts[-1].fingerprint == batches[-1][-1].fingerprint  # the newest are kept
    assert len(state.alerts) + state.alerts_dropped == 120


def test_the_continue_as_new_carry_fits_whatever_the_loop_holds() -> None:
    """A loop holding a start larger than the intake sends (~1.7 MiB of signals), 50 joined alerts of 16 KiB and
    100 evidence lines carries at most ``CARRY_MAX_BYTES`` into its next run; what was dropped is counted."""
    (alert,) = signals(DEMO_ALERTS[0])
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    start = [_wide(s, i) for i, s in enumerate(signals(ALPINE) * 10)]  # ~1.7 MiB: more than the intake sends
    loop = RemediationWorkflow(RemediationInput(scope=SCOPE, work_item=item, signals=start))
    loop.state.alerts = [_wide(alert, i) for i in range(50)]
    loop.state.evidence = [Evidence(at=datetime.now(UTC), stage=Stage.AWAIT_APPROVAL, text="e" * 2_000)] * 100
    loop.state.stage = Stage.AWAIT_APPROVAL
    assert len(to_json(loop.inp.model_copy(update={"state": loop.state}))) > 2 * 1024 * 1024  # would not fit
    carry = loop._carry()
    assert len(to_json(carry)) <= CARRY_MAX_BYTES
    assert carry.state is not None and carry.state.alerts_dropped + carry.state.carry_dropped > 0
    assert carry.work_item == item and carry.state.stage is Stage.AWAIT_APPROVAL


@workflow.defn(name="IntakeWorkflow")
class IntakeStandIn:
    """Records the ``fixing`` and ``deployed`` signals a loop sends its scope's intake."""

    def __init__(self) -> None:
        self.services: list[tuple[str, str]] = []

    @workflow.run
    async def run(self, _: object) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal
    def fixing(self, fix: OpenFix) -> None:
        self.services.append(("fixing", fix.service))

    @workflow.signal
    def deployed(self, deploy: RecentDeploy) -> None:
        self.services.append(("deployed", deploy.service))

    @workflow.query
    def told(self) -> list[tuple[str, str]]:
        return self.services


async def test_the_intake_is_told_the_deployed_service_the_fix_touched(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """A fix (findings only: no service of its own) tells its intake the service its change touches, for the open
    MR and for the deploy, so alerts on that service after the deploy become this loop's deploy_regression (not the
    image reference, which no alert names)."""
    item = _item(ALPINE, WorkItemKind.OS_REBUILD)
    assert item.service is None and item.artifact
    world = World(merge_after_polls=1, approvals=[HUMAN], service="catalog")
    async with Worker(env.client, task_queue=f"{task_queue}-intake", workflows=[IntakeStandIn]):
        intake = await env.client.start_workflow(
            IntakeStandIn.run, None, id=intake_id(SCOPE), task_queue=f"{task_queue}-intake"
        )
        state = await _run(env, task_queue, world, item)
        told = await intake.query(IntakeStandIn.told)  # the test server goes with the test: no terminate
    assert state.outcome is Outcome.VERIFIED
    assert ("deployed", "catalog") in told and ("fixing", "catalog") in told
