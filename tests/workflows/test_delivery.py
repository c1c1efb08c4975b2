"""Deployed means running (RemediationWorkflow on the time-skipping test server): a merged source change is followed
through its pipeline, the image in the registry, a tag merge request per environment (gated), Flux's apply, the
workload's rollout (judged by ``fixloop.core.rollout`` on Kubernetes objects) and the verification there, staging
before production. The stand-ins are ``tests/workflows/world.py``'s, with the build, promotion and rollout
activities added under their real names."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from fixloop.activities import build as ci
    from fixloop.activities import deploy as flux
    from fixloop.activities import merge_request as gitlab
    from fixloop.activities import plan as change
    from fixloop.activities import verify
    from fixloop.core.change.images import Delivery, ImageSpec, Target
    from fixloop.core.change.ops import BumpWorkloadImage
    from fixloop.core.gate import MergeRequestState, MrState
    from fixloop.core.models import WorkItemKind
    from fixloop.core.rollout import rollout
    from fixloop.core.triage import triage_rules
    from fixloop.core.verification import VerdictResult
    from fixloop.workflows.contracts.build import BuildState, BuildStateInput
    from fixloop.workflows.contracts.deploy import DeployState, DeployStateInput, RolloutState, RolloutStateInput
    from fixloop.workflows.contracts.loop import DeployEvent, LoopState, Outcome, Stage
    from fixloop.workflows.contracts.merge_request import MergeRequestRef, MergeRequestStateInput, OpenMergeRequestInput
    from fixloop.workflows.contracts.plan import PlanChangeInput, PlannedChange, PlanPromotionInput
    from fixloop.workflows.contracts.verify import JudgeInput, Verdict
    from tests.conftest import signals
    from tests.workflows.test_remediation import _events
    from tests.workflows.test_remediation import _run as run_loop
    from tests.workflows.world import MERGE, World, approval, measured

SCOPE = "team/gitops"
IMAGE = "registry.example/shop/catalog"
DIGEST = "sha256:" + "4d" * 32
ALPINE = "trivy/trivy-0.22-fulldb_alpine-39.json"
STAGING, PRODUCTION = "flux-system/apps-staging", "flux-system/apps-production"
DELIVERY = Delivery(
    image=ImageSpec(name="catalog", source="services/catalog", image=IMAGE),
    workload="catalog",
    targets=(
        Target(name="staging", kustomization="apps/staging/kustomization.yaml", flux=STAGING,
               namespace="shop-staging", current_tag="1.4.2", window=timedelta(minutes=5)),
        Target(name="production", kustomization="apps/production/kustomization.yaml", flux=PRODUCTION,
               namespace="shop-production", current_tag="1.4.2"),
    ),
    declared=True,
)  # fmt: skip
IIDS = {"staging": 20, "production": 21}
FLUX_APPLIED_BEFORE = timedelta(seconds=40)  # Flux's Ready transition, before the read that sees it applied


def deployment(replicas: int, ready: int, image: str, generation: int = 2) -> dict[str, Any]:
    """An apps/v1 Deployment as the API serves it mid-rollout or after it (kube-controller-manager's counts)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "catalog", "namespace": "shop-staging", "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "catalog", "image": image}]}},
        },
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}],
        },
    }


def pod(name: str, image: str, restarts: int = 0, waiting: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "catalog", "image": image}]},
        "status": {"containerStatuses": [{"name": "catalog", "restartCount": restarts, "state": state}]},
    }


@dataclass
class Delivered(World):
    """``World`` with a source change: the pipeline (running for ``build_polls`` reads, then ``build_result``), one
    tag merge request per environment (merged and approved by alice at once), Flux applying every revision at once,
    the rollout read from ``deployments`` (``environment -> [(Deployment, pods), ...]``, one per read, the last
    repeating; default: complete at once), and per environment a verdict (``verdicts``)."""

    build_polls: int = 1
    build_result: str = "built"
    deployments: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = field(default_factory=dict)
    verdicts: dict[str, VerdictResult] = field(default_factory=dict)
    automation_after: int | None = None  # Flux's image automation sets the tag after this many reads (None: no MRs)
    builds: list[BuildStateInput] = field(default_factory=list)
    promotions: list[PlanPromotionInput] = field(default_factory=list)
    opened: list[OpenMergeRequestInput] = field(default_factory=list)
    deploys: list[DeployStateInput] = field(default_factory=list)
    rollouts: list[RolloutStateInput] = field(default_factory=list)

    def activities(self) -> list:
        return [*super().activities(), self.build_state, self.plan_promotion, self.rollout_state]

    @activity.defn(name=change.PLAN_CHANGE)
    async def plan(self, inp: PlanChangeInput) -> PlannedChange:
        self.calls.append(change.PLAN_CHANGE)
        return PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}",
            operations=["services/catalog/Dockerfile: FROM alpine:3.9.4 -> alpine:3.9.6"],
            service="catalog",
            delivery=DELIVERY,
            title="Rebuild catalog on alpine 3.9.6",
        )

    @activity.defn(name=ci.BUILD_STATE)
    async def build_state(self, inp: BuildStateInput) -> BuildState:
        self.calls.append(ci.BUILD_STATE)
        self.builds.append(inp)
        if len(self.builds) == 1 and self.deploy_events:  # Flux's notification of the source merge, via the gateway
            handle = self.client.get_workflow_handle(activity.info().workflow_id)
            for revision, ready in self.deploy_events:
                await handle.signal("deploy_event", DeployEvent(revision=revision, ready=ready, message="from Flux"))
        if len(self.builds) < self.build_polls:
            return BuildState(state="running", pipeline_id=5, status="running")
        if self.build_result == "failed":
            return BuildState(
                state="failed", pipeline_id=5, status="failed", failed_jobs=["build-catalog"], failed_jobs_count=1,
                pipeline_url="https://gitlab.example.com/team/gitops/-/pipelines/5", message="pipeline 5 failed",
            )  # fmt: skip
        return BuildState(state="built", pipeline_id=5, status="success", tag="1.4.3", digest=DIGEST)

    @activity.defn(name=change.PLAN_PROMOTION)
    async def plan_promotion(self, inp: PlanPromotionInput) -> PlannedChange:
        self.calls.append(change.PLAN_PROMOTION)
        self.promotions.append(inp)
        target = inp.delivery.targets[inp.target]
        if self.automation_after is not None:  # no merge request: the automation's commit is awaited
            reads = sum(1 for p in self.promotions if p.target == inp.target)
            done = reads > self.automation_after
            return PlannedChange(located=False, running=done, base_sha=f"{inp.target + 1}".rjust(40, "d"))
        op = BumpWorkloadImage(path=target.kustomization, image=IMAGE, current="1.4.2", new=inp.tag)
        return PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}/{target.name}",
            operations=[op.describe()],
            changes=[op],
            service="catalog",
            delivery=inp.delivery,
            title=f"{'Promote' if inp.target else 'Deploy'} catalog {inp.tag} to {target.name} ({inp.work_item.title})",
        )

    @activity.defn(name=gitlab.OPEN_MERGE_REQUEST)
    async def open_merge_request(self, inp: OpenMergeRequestInput) -> MergeRequestRef:
        self.calls.append(gitlab.OPEN_MERGE_REQUEST)
        self.opened.append(inp)
        env = (inp.change.branch or "").rsplit("/", 1)[-1]
        iid = IIDS.get(env, 7)
        return MergeRequestRef(
            project=inp.scope,
            iid=iid,
            url=f"https://gitlab.example.com/{inp.scope}/-/merge_requests/{iid}",
            branch=inp.change.branch or "?",
            head_sha=f"{iid:x}".rjust(40, "a"),
            title=inp.change.title,
        )

    @activity.defn(name=gitlab.MERGE_REQUEST_STATE)
    async def merge_request_state(self, inp: MergeRequestStateInput) -> MergeRequestState:
        if inp.iid in IIDS.values():  # a tag merge request: approved by alice at its head, merged
            head = f"{inp.iid:x}".rjust(40, "a")
            merged = f"{inp.iid:x}".rjust(40, "c")
            return MergeRequestState(
                state=MrState.MERGED, head_sha=head, merge_sha=merged, approvals=[approval("alice", sha=head)],
                author="fixloop-bot", author_id=2, reset_approvals_on_push=True,
            )  # fmt: skip
        return await super().merge_request_state(inp)

    @activity.defn(name=flux.DEPLOY_STATE)
    async def deploy_state(self, inp: DeployStateInput) -> DeployState:
        self.deploys.append(inp)
        applied_at = activity.info().current_attempt_scheduled_time - FLUX_APPLIED_BEFORE  # Ready's transition
        return DeployState(
            applied=True, revision=f"main@sha1:{inp.merge_sha}", kustomization=inp.kustomization, applied_at=applied_at
        )

    @activity.defn(name=flux.ROLLOUT_STATE)
    async def rollout_state(self, inp: RolloutStateInput) -> RolloutState:
        self.rollouts.append(inp)
        env = inp.namespace.removeprefix("shop-")
        reads = self.deployments.get(env) or [(deployment(3, 3, inp.expected_image or IMAGE), [])]
        n = sum(1 for r in self.rollouts if r.namespace == inp.namespace)
        obj, pods = reads[min(n, len(reads)) - 1]
        verdict = rollout(copy.deepcopy(obj), pods, inp.expected_image, inp.previous_restarts)
        return RolloutState(workload=f"Deployment/{inp.namespace}/{inp.name}", verdict=verdict, pods=len(pods))

    @activity.defn(name=verify.JUDGE)
    async def judge(self, inp: JudgeInput) -> Verdict:
        self.calls.append(verify.JUDGE)
        self.judged.append(inp)
        result = self.verdicts.get(inp.policy.env or "", self.verdict)
        if result is VerdictResult.FAIL and self.metrics:  # the failing environment measures ``metrics``
            return self.measured_verdict(inp)
        return Verdict(result=result, summary=f"{inp.policy.env}: error rate 0.4% -> 0.1%", env=inp.policy.env)


async def _run(env: WorkflowEnvironment, task_queue: str, world: World, **options: object) -> LoopState:
    item = next(w for w in triage_rules(signals(ALPINE)).work_items if w.kind is WorkItemKind.OS_REBUILD)
    return await run_loop(env, task_queue, world, item, **options)


async def test_staging_then_production_each_rolled_out_and_verified(env: WorkflowEnvironment, task_queue: str) -> None:
    world = Delivered(merge_after_polls=1, approvals=[approval("alice")], build_polls=3)
    state = await _run(env, task_queue, world, poll_interval=timedelta(minutes=1))

    assert (state.stage, state.outcome) == (Stage.DONE, Outcome.VERIFIED)
    # the source merge is built from its merge commit, the tag rule's base is what staging ran
    assert [(b.merge_sha, b.current_tag) for b in world.builds] == [(MERGE, "1.4.2")] * 3
    # one tag merge request per environment, in order, each after the previous environment passed
    assert [(p.target, p.tag, p.digest, p.source_sha, p.source_iid) for p in world.promotions] == [
        (0, "1.4.3", DIGEST, MERGE, 7), (1, "1.4.3", DIGEST, MERGE, 7),
    ]  # fmt: skip
    assert world.promotions[1].verdicts[0].startswith("staging: pass")
    # Flux is read on each environment's Kustomization for its own merge, never for the source merge
    assert [(d.kustomization, d.merge_sha[-2:]) for d in world.deploys] == [(STAGING, "14"), (PRODUCTION, "15")]
    assert {(r.namespace, r.expected_image) for r in world.rollouts} == {
        ("shop-staging", f"{IMAGE}:1.4.3"), ("shop-production", f"{IMAGE}:1.4.3"),
    }  # fmt: skip
    # each verification reads its environment; the alerts' monitors are production's only
    assert [(j.policy.env, j.policy.kustomization, j.policy.window) for j in world.judged] == [
        ("staging", STAGING, timedelta(minutes=5)),
        ("production", PRODUCTION, timedelta(minutes=10)),
    ]  # fmt: skip  (staging's own soak time, production the policy's window)
    assert [e.name for e in state.environments] == ["staging", "production"]
    assert all(e.verdict and e.verdict.result is VerdictResult.PASS for e in state.environments)
    assert [e.merge_request.iid for e in state.environments if e.merge_request] == [20, 21]
    # each baseline ends when Flux says it applied the tag; the after window starts once the rollout is complete
    for j, e in zip(world.judged, state.environments, strict=True):
        assert j.changed_at is not None and j.changed_at == e.changed_at and j.deployed_at == e.deployed_at
        assert j.deployed_at - j.changed_at >= FLUX_APPLIED_BEFORE, "the rollout between them is left out"
    # the audit trail: each merge request's approval, merge and deploy, each environment's verdict on its own MR
    assert _events(world.comments) == [
        "approved-7", "merged-7",
        "approved-20", "merged-20", "deployed-staging-20", "verified-staging",
        "approved-21", "merged-21", "deployed-production-21",
    ]  # fmt: skip
    assert [c.labels for c in world.comments if c.labels] == [["fixloop-verified-staging"]]
    assert [(n.iid, e) for n, e in zip(world.notes, _events(world.notes), strict=True)] == [
        (7, "approved-7"), (7, "merged-7"),
        (20, "approved-20"), (20, "merged-20"), (20, "deployed-staging-20"), (20, "verified-staging"),
        (21, "approved-21"), (21, "merged-21"), (21, "deployed-production-21"), (21, "verified-production"),
        (7, "verified"),
    ]  # fmt: skip
    deployed = next(n.body for n in world.notes if n.dedup_key.endswith("/deployed-staging-20"))
    assert f"`main@sha1:{'14'.rjust(40, 'c')}` applied in staging (Kustomization {STAGING})" in deployed
    assert "merged-7" in world.comments[1].dedup_key and "now awaits its build" in world.comments[1].body
    (closed,) = world.closed
    assert "Environments:\n- staging: pass" in closed.comment and "\n- production: pass" in closed.comment
    assert [link.title for link in world.links] == [
        "Merge request !7", "staging: merge request !20", "production: merge request !21",
    ]  # fmt: skip


async def test_a_failed_pipeline_ends_build_failed(env: WorkflowEnvironment, task_queue: str) -> None:
    world = Delivered(merge_after_polls=1, approvals=[approval("alice")], build_result="failed")
    state = await _run(env, task_queue, world)
    assert state.outcome is Outcome.BUILD_FAILED
    assert _events(world.comments) == ["approved-7", "merged-7", "build-failed"]
    comment = world.comments[-1]
    assert comment.labels == ["fixloop-build-failed"] and "failed job(s) build-catalog" in comment.body
    assert "pipelines/5" in comment.body
    assert world.promotions == [] and world.deploys == [] and verify.JUDGE not in world.calls


async def test_flux_applying_the_source_merge_alone_is_not_a_deploy(env: WorkflowEnvironment, task_queue: str) -> None:
    """Flux would answer "applied" for the merged Dockerfile commit at once, and its events say so: the loop does not
    ask, waits for the build (which never finishes here) and never verifies."""
    world = Delivered(
        merge_after_polls=1,
        approvals=[approval("alice")],
        build_polls=10**6,
        deploy_events=[(f"main@sha1:{MERGE}", True)],
    )
    world.client = env.client
    state = await _run(
        env, task_queue, world, deploy_escalate_after=timedelta(hours=1), deploy_max_escalations=1,
        poll_interval=timedelta(minutes=10),
    )  # fmt: skip
    assert state.outcome is Outcome.BUILD_EXPIRED
    assert world.deploys == [] and verify.JUDGE not in world.calls and state.deployed_at is None
    assert state.deploy is None and len(world.builds) > 1  # the event set nothing; the build was polled on
    assert _events(world.comments)[:2] == ["approved-7", "merged-7"]
    assert [c.labels for c in world.comments[2:]] == [["fixloop-stale-await-build"], ["fixloop-expired"]]


async def test_two_of_three_ready_never_verifies_and_escalates(env: WorkflowEnvironment, task_queue: str) -> None:
    staging = [(deployment(3, 2, f"{IMAGE}:1.4.3"), [pod(f"catalog-{i}", f"{IMAGE}:1.4.3") for i in range(3)])]
    world = Delivered(merge_after_polls=1, approvals=[approval("alice")], deployments={"staging": staging})
    state = await _run(
        env, task_queue, world, deploy_escalate_after=timedelta(hours=1), deploy_max_escalations=1,
        poll_interval=timedelta(minutes=10),
    )  # fmt: skip
    assert state.outcome is Outcome.ROLLOUT_STUCK
    assert verify.JUDGE not in world.calls and len(world.promotions) == 1
    assert _events(world.comments)[:5] == ["approved-7", "merged-7", "approved-20", "merged-20", "deployed-staging-20"]
    assert [c.labels for c in world.comments[5:]] == [
        ["fixloop-stale-await-rollout"], ["fixloop-expired"], ["fixloop-rollout-stuck"],
    ]  # fmt: skip
    assert "(2/3 ready, 3 updated)" in world.comments[-1].body
    assert "2 of 3 replicas ready" in world.comments[-1].body


async def test_a_crash_looping_container_is_stuck_at_once(env: WorkflowEnvironment, task_queue: str) -> None:
    image = f"{IMAGE}:1.4.3"
    pods = [pod("catalog-0", image), pod("catalog-1", image, restarts=4, waiting="CrashLoopBackOff")]
    world = Delivered(
        merge_after_polls=1, approvals=[approval("alice")], deployments={"staging": [(deployment(2, 2, image), pods)]}
    )
    state = await _run(env, task_queue, world)
    assert state.outcome is Outcome.ROLLOUT_STUCK and verify.JUDGE not in world.calls
    assert _events(world.comments)[-1] == "rollout-stuck-staging" and len(world.comments) == 6
    comment = world.comments[-1]
    assert "container catalog of pod catalog-1 waiting in CrashLoopBackOff after 4 restarts" in comment.body
    assert state.environments[0].rollout and state.environments[0].rollout.verdict.state.value == "stuck"


async def test_restarts_growing_between_two_reads_is_stuck(env: WorkflowEnvironment, task_queue: str) -> None:
    image = f"{IMAGE}:1.4.3"
    reads = [(deployment(1, 0, image), [pod("catalog-0", image, restarts=n)]) for n in (1, 2)]
    world = Delivered(merge_after_polls=1, approvals=[approval("alice")], deployments={"staging": reads})
    state = await _run(env, task_queue, world, poll_interval=timedelta(minutes=1))
    assert state.outcome is Outcome.ROLLOUT_STUCK
    assert world.rollouts[1].previous_restarts == {"catalog-0/catalog": 1}
    assert _events(world.comments)[-1] == "rollout-stuck-staging"
    assert "restarted 1 times since the last read (1 -> 2)" in world.comments[-1].body


async def test_a_staging_failure_reverts_there_and_never_reaches_production(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    world = Delivered(
        merge_after_polls=1, approvals=[approval("alice")], verdicts={"staging": VerdictResult.FAIL},
        revert_merge_after_polls=1, metrics=measured(error_after=1.2),
    )  # fmt: skip
    state = await _run(env, task_queue, world)
    assert state.outcome is Outcome.REVERTED
    (revert,) = world.reverts
    assert (revert.original.iid, revert.merge_sha[-2:], revert.also) == (20, "14", [MERGE])
    assert "in staging" in revert.reason and revert.why == "verification failed in staging: error rate +200 %"
    # the revert is a rollback of the staging merge request, and both merge requests it reverts are told so
    staging_title = world.opened[1].change.title or ""
    assert state.revert is not None and state.revert.title == gitlab.revert_title(staging_title, 20, revert.why)
    assert state.revert.title.startswith('Revert "Deploy catalog 1.4.3 to staging (') and len(state.revert.title) <= 120
    assert state.revert.title.endswith('\u2026" \u2014 verification failed in staging: error rate +200 %')
    reverted_by = [(n.iid, n.body.split(":", 1)[0]) for n in world.notes if n.dedup_key.endswith("/reverted-by-8")]
    assert [iid for iid, _ in reverted_by] == [20, 7]
    assert all(what.startswith("Reverted by [!8](") for _, what in reverted_by)
    assert "deployed-staging-8" in _events(world.notes)  # the revert's own deploy, in staging
    assert [p.target for p in world.promotions] == [0]  # production's merge request never opened
    assert [d.kustomization for d in world.deploys] == [STAGING, STAGING]  # the tag change, then its revert
    assert [j.policy.env for j in world.judged] == ["staging"]
    assert [e.name for e in state.environments] == ["staging"]


async def test_flux_image_automation_sets_the_tag_and_its_commit_is_deployed(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    image = DELIVERY.image.model_copy(update={"delivery": "flux-image-automation"})  # type: ignore[union-attr]
    world = Delivered(merge_after_polls=1, approvals=[approval("alice")], automation_after=2)
    world.plan = _with_delivery(world, DELIVERY.model_copy(update={"image": image}))  # type: ignore[method-assign]
    state = await _run(env, task_queue, world, poll_interval=timedelta(minutes=1))
    assert state.outcome is Outcome.VERIFIED
    assert [o.change.branch for o in world.opened] == [world.opened[0].change.branch]  # the fix's MR only
    # each environment: the head that set the tag is what Flux must apply
    assert [(d.kustomization, d.merge_sha) for d in world.deploys] == [
        (STAGING, "1".rjust(40, "d")),
        (PRODUCTION, "2".rjust(40, "d")),
    ]
    assert [e.commit for e in state.environments] == ["1".rjust(40, "d"), "2".rjust(40, "d")]
    assert [j.policy.env for j in world.judged] == ["staging", "production"]


def _with_delivery(world: Delivered, delivery: Delivery) -> Any:
    @activity.defn(name=change.PLAN_CHANGE)
    async def plan(inp: PlanChangeInput) -> PlannedChange:
        world.calls.append(change.PLAN_CHANGE)
        return PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}",
            operations=["FROM"],
            service="catalog",
            delivery=delivery,
        )

    return plan
