"""A change touching several services (issue 22: a ``per-package`` bump across their manifests) on the Java test
server, against the stand-in world: after the deploy each service is judged on its own (``verify.judge`` once per
service, each told to the intake as deployed), every one must hold, and one failing fails the work item with one
revert of the merge commit, which undoes the change in every service."""

from __future__ import annotations

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from fixloop.core.models import WorkItem, WorkItemKind
    from fixloop.core.triage import triage_rules
    from fixloop.workflows.contracts.intake import intake_id
    from fixloop.workflows.contracts.loop import Outcome, Stage
    from tests.change.shared_pins import scans
    from tests.workflows.test_remediation import HUMAN, SCOPE, IntakeStandIn, _events, _run
    from tests.workflows.world import MERGE, World, measured

SERVICES = ["legacy-api", "payments"]


def werkzeug() -> WorkItem:
    """The ``per-package`` work item of Werkzeug 0.11: scanned in payments, pinned in legacy-api too."""
    result = triage_rules(scans(), grouping="per-package")
    (item,) = [w for w in result.work_items if w.kind is WorkItemKind.DEPENDENCY_BUMP and "Werkzeug" in w.title]
    assert item.service is None and item.grouping == "per-package"
    return item


async def test_every_touched_service_is_verified_and_all_passing_closes_the_item(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], services=SERVICES)
    world.metrics_of = {s: measured(error_after=0.38) for s in SERVICES}
    async with Worker(env.client, task_queue=f"{task_queue}-intake", workflows=[IntakeStandIn]):
        intake = await env.client.start_workflow(
            IntakeStandIn.run, None, id=intake_id(SCOPE), task_queue=f"{task_queue}-intake"
        )
        state = await _run(env, task_queue, world, werkzeug())
        told = await intake.query(IntakeStandIn.told)
    assert (state.stage, state.outcome) == (Stage.DONE, Outcome.VERIFIED)
    assert [j.service for j in world.judged] == SERVICES  # each on its own, after one deploy
    assert world.calls.count("verify.judge") == 2 and world.deploy_polls == 1
    assert [t for t in told if t[0] == "deployed"] == [("deployed", "legacy-api"), ("deployed", "payments")]
    assert state.verdict is not None and state.verdict.service == "legacy-api, payments"
    assert state.verdict.summary.startswith("2 services verified, each must hold: legacy-api: pass: ")
    (closed,) = world.closed
    lines = closed.comment.splitlines()
    assert "- legacy-api: error rate 0.4 errors/s \u2192 0.38 errors/s (-5.0 %): pass, critical" in lines
    assert "- payments: error rate 0.4 errors/s \u2192 0.38 errors/s (-5.0 %): pass, critical" in lines
    texts = [e.text for e in state.evidence]
    assert any(t.startswith("verdict of legacy-api: pass") for t in texts)
    assert any(t.startswith("verdict of payments: pass") for t in texts)


async def test_one_service_failing_fails_the_item_and_one_revert_undoes_it_for_all(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], services=SERVICES)
    world.metrics_of = {"legacy-api": measured(error_after=0.38), "payments": measured(error_after=1.2)}
    state = await _run(env, task_queue, world, werkzeug(), history="remediation-reverted-in-one-of-two-services")
    assert state.outcome is Outcome.REVERTED
    assert [j.service for j in world.judged] == SERVICES  # legacy-api holds, payments fails: the item fails
    (revert,) = world.reverts  # one revert, of exactly the merge commit: both services' files go back
    assert (revert.merge_sha, revert.original.iid) == (MERGE, 7)
    assert revert.why == "verification failed: payments: error rate +200 %" == state.revert_why
    assert "payments: error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %): fail, critical" in revert.metrics
    assert "legacy-api: error rate 0.4 errors/s \u2192 0.38 errors/s (-5.0 %): pass, critical" in revert.metrics
    assert world.deploy_polls == 2  # the fix's deploy, then the revert's; verified once, in both services
    assert world.calls.count("verify.judge") == 2
    assert _events(world.comments)[-5:] == ["verify-failed", "approved-8", "merged-8", "deployed-8", "reverted"]


async def test_a_change_to_one_service_is_judged_once_as_before(env: WorkflowEnvironment, task_queue: str) -> None:
    world = World(merge_after_polls=1, approvals=[HUMAN], services=["payments"], service="payments")
    state = await _run(env, task_queue, world, werkzeug())
    assert state.outcome is Outcome.VERIFIED
    assert [j.service for j in world.judged] == ["payments"]
    assert not any(e.text.startswith("verdict of ") for e in state.evidence)
