"""A base-image chain in the RemediationWorkflow (time-skipping test server, stand-in activities under their real
names): the base's merged change is built, then, and only then, each dependent's rebuild is planned and its own
loop started (a child workflow on the chain's Jira issue) through the gate, its build, a tag merge request per
environment and the verification; the base's loop ends with their outcomes, one Jira line per image. The stand-ins
are ``test_delivery.py``'s ``Delivered`` world with a merge request per branch (each merged at once, approved by
alice at its head), builds per image and the dependents' planning."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from fixloop.activities import build as ci
    from fixloop.activities import merge_request as gitlab
    from fixloop.activities import plan as change
    from fixloop.activities import verify
    from fixloop.activities import work_item as jira
    from fixloop.core.change.images import Delivery, Dependent, ImageSpec, Target
    from fixloop.core.change.ops import BumpBaseImage, BumpWorkloadImage
    from fixloop.core.gate import MergeRequestState, MrState
    from fixloop.core.markup import markdown
    from fixloop.core.verification import VerdictResult
    from fixloop.workflows.contracts.build import BuildState, BuildStateInput
    from fixloop.workflows.contracts.loop import LoopState, Outcome, Stage, loop_id
    from fixloop.workflows.contracts.merge_request import MergeRequestRef, MergeRequestStateInput, OpenMergeRequestInput
    from fixloop.workflows.contracts.plan import PlanChangeInput, PlanDependentInput, PlannedChange, PlanPromotionInput
    from fixloop.workflows.contracts.verify import JudgeInput, Verdict
    from tests.workflows.histories import record
    from tests.workflows.test_delivery import DIGEST, SCOPE, STAGING, Delivered
    from tests.workflows.test_delivery import _run as run_loop
    from tests.workflows.world import approval, measured

REGISTRY = "registry.example/shop"
BASE = ImageSpec(name="base-python", source="services/base-python", image=f"{REGISTRY}/base-python")
SPECS = {n: ImageSpec(name=n, source=f"services/{n}", image=f"{REGISTRY}/{n}") for n in ("legacy-api", "payments")}
RUNNING = {"legacy-api": "2.0.7", "payments": "1.9.1"}
BUILT = {"base-python": "1.3.1", "legacy-api": "2.0.8", "payments": "1.9.2"}
DEPENDENTS = tuple(
    Dependent(name=n, image=s.image, dockerfile=f"{s.source}/Dockerfile", stage=0, current=f"{BASE.image}:1.3.0",
              tag="1.3.0")
    for n, s in SPECS.items()
)  # fmt: skip


def targets(current: str | None) -> tuple[Target, ...]:
    return (
        Target(name="staging", kustomization="apps/staging/kustomization.yaml", flux=STAGING, namespace="shop-staging",
               current_tag=current),
        Target(name="production", kustomization="apps/production/kustomization.yaml",
               flux="flux-system/apps-production", namespace="shop-production", current_tag=current),
    )  # fmt: skip


BASE_DELIVERY = Delivery(image=BASE, targets=targets(None), declared=True, dependents=DEPENDENTS, base_tag="1.3.0")


@dataclass
class Chained(Delivered):
    """``Delivered`` for a chain: the fix changes base-python's Dockerfile; each branch gets its own merge request
    (iids from 30 up; the revert's stays 8), merged at once and approved by alice at its head; CI builds ``BUILT``;
    ``change.plan_dependent`` plans each dependent's FROM bump (not located for those in ``unplannable``); the
    verification fails for the services in ``failing`` (in staging). ``events`` is the order of builds, plans and
    merge requests across all the loops."""

    unplannable: set[str] = field(default_factory=set)
    cut: tuple[str, ...] = ()  # dependents over the cap, named in the base's delivery
    failing: set[str] = field(default_factory=set)
    nested: bool = False  # legacy-api is a base itself (of payments), its dependents planned at depth 2
    events: list[tuple[str, str]] = field(default_factory=list)
    dependents_planned: list[PlanDependentInput] = field(default_factory=list)
    iids: dict[str, int] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)  # the workflow id of each merge request's loop

    def activities(self) -> list:
        return [*super().activities(), self.plan_dependent]

    @activity.defn(name=change.PLAN_CHANGE)
    async def plan(self, inp: PlanChangeInput) -> PlannedChange:
        self.calls.append(change.PLAN_CHANGE)
        op = BumpBaseImage(path="services/base-python/Dockerfile", stage=0, current="debian:10.2", new="debian:10.13")
        return PlannedChange(
            located=True, branch=f"fixloop/{inp.work_item.id}", operations=[op.describe()], changes=[op],
            base_sha="d" * 40, service="base-python",
            delivery=BASE_DELIVERY.model_copy(update={"dependents_cut": self.cut}),
            title="Rebuild base-python on debian 10.13",
        )  # fmt: skip

    @activity.defn(name=change.PLAN_DEPENDENT)
    async def plan_dependent(self, inp: PlanDependentInput) -> PlannedChange:
        self.calls.append(change.PLAN_DEPENDENT)
        self.events.append(("plan", inp.dependent.name))
        self.dependents_planned.append(inp)
        if inp.dependent.name in self.unplannable:
            return PlannedChange(located=False, reason=f"{inp.dependent.dockerfile}: no stage is FROM it any more")
        spec = SPECS[inp.dependent.name]
        op = BumpBaseImage(path=inp.dependent.dockerfile, stage=0, current=inp.dependent.current,
                           new=f"{inp.base.image}:{inp.tag}")  # fmt: skip
        delivery = Delivery(image=spec, workload=spec.name, targets=targets(RUNNING[spec.name]), declared=True)
        if self.nested and spec.name == "legacy-api":  # legacy-api is the base of payments
            nested = Dependent(name="payments", image=SPECS["payments"].image, stage=0, tag="2.0.7",
                               dockerfile="services/payments/Dockerfile", current=f"{spec.image}:2.0.7")  # fmt: skip
            delivery = Delivery(
                image=spec, targets=targets(None), declared=True, dependents=(nested,), base_tag="2.0.7"
            )
        return PlannedChange(
            located=True, branch=f"fixloop/{inp.work_item.id}", operations=[op.describe()], changes=[op],
            base_sha="d" * 40, service=spec.name, delivery=delivery, title=inp.work_item.title,
        )  # fmt: skip

    @activity.defn(name=gitlab.OPEN_MERGE_REQUEST)
    async def open_merge_request(self, inp: OpenMergeRequestInput) -> MergeRequestRef:
        self.calls.append(gitlab.OPEN_MERGE_REQUEST)
        self.opened.append(inp)
        branch = inp.change.branch or "?"
        self.events.append(("mr", branch))
        self.started.append(activity.info().workflow_id)
        iid = self.iids.setdefault(branch, 30 + len(self.iids))
        return MergeRequestRef(
            project=inp.scope, iid=iid, url=f"https://gitlab.example.com/{inp.scope}/-/merge_requests/{iid}",
            branch=branch, head_sha=f"{iid:x}".rjust(40, "a"), title=inp.change.title,
        )  # fmt: skip

    @activity.defn(name=gitlab.MERGE_REQUEST_STATE)
    async def merge_request_state(self, inp: MergeRequestStateInput) -> MergeRequestState:
        if inp.iid == 8:  # a revert: Delivered's (approved by carol, merged after a poll)
            return await super(Delivered, self).merge_request_state(inp)
        head, merged = f"{inp.iid:x}".rjust(40, "a"), f"{inp.iid:x}".rjust(40, "c")
        return MergeRequestState(
            state=MrState.MERGED, head_sha=head, merge_sha=merged, approvals=[approval("alice", sha=head)],
            author="fixloop-bot", author_id=2, reset_approvals_on_push=True,
        )  # fmt: skip

    @activity.defn(name=ci.BUILD_STATE)
    async def build_state(self, inp: BuildStateInput) -> BuildState:
        self.builds.append(inp)
        self.events.append(("built", inp.image.name))
        return BuildState(state="built", pipeline_id=5, status="success", tag=BUILT[inp.image.name], digest=DIGEST)

    @activity.defn(name=change.PLAN_PROMOTION)
    async def plan_promotion(self, inp: PlanPromotionInput) -> PlannedChange:
        self.promotions.append(inp)
        image, target = inp.delivery.image, inp.delivery.targets[inp.target]
        assert image is not None and target.current_tag is not None
        op = BumpWorkloadImage(path=target.kustomization, image=image.image, current=target.current_tag, new=inp.tag)
        return PlannedChange(
            located=True, branch=f"fixloop/{inp.work_item.id}/{target.name}", operations=[op.describe()],
            changes=[op], base_sha="d" * 40, service=image.name, delivery=inp.delivery,
            title=f"Deploy {image.name} {inp.tag} to {target.name}",
        )  # fmt: skip

    @activity.defn(name=verify.JUDGE)
    async def judge(self, inp: JudgeInput) -> Verdict:
        self.judged.append(inp)
        if inp.service in self.failing and inp.policy.env == "staging":
            return self.measured_verdict(inp)
        return Verdict(result=VerdictResult.PASS, summary=f"{inp.service}: error rate 0.4% -> 0.1%", env=inp.policy.env)


async def _run(env: WorkflowEnvironment, task_queue: str, world: Chained, **options: object) -> LoopState:
    return await run_loop(env, task_queue, world, poll_interval=timedelta(minutes=1), **options)


async def test_the_base_is_built_then_each_dependent_loop_rebuilds_on_its_tag(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    world = Chained(merge_after_polls=1, approvals=[approval("alice")])
    state = await _run(env, task_queue, world, history="remediation-base-image-chain")
    legacy_loop, payments_loop = (loop_id(SCOPE, p.work_item.id) for p in world.dependents_planned)
    await record(env.client, legacy_loop, "remediation-base-image-dependent")

    assert (state.stage, state.outcome) == (Stage.DONE, Outcome.VERIFIED)
    # the base's build starts from the tag its dependents FROM; no tag merge request for the base itself
    assert (world.builds[0].image.name, world.builds[0].current_tag) == ("base-python", "1.3.0")
    assert state.environments == [] and all(p.delivery.image != BASE for p in world.promotions)
    # in order: the base's merge request, its build, then the dependents planned and their merge requests opened
    # (between the dependents no order: each loop goes on as soon as it is started)
    assert world.events[:3] == [
        ("mr", f"fixloop/{world.opened[0].work_item.id}"), ("built", "base-python"), ("plan", "legacy-api"),
    ]  # fmt: skip
    assert [e for e in world.events if e[0] == "plan"] == [("plan", "legacy-api"), ("plan", "payments")]
    assert [(p.tag, p.digest, p.source_iid, p.jira_key) for p in world.dependents_planned] == [
        ("1.3.1", DIGEST, 30, "OPS-1"), ("1.3.1", DIGEST, 30, "OPS-1")
    ]  # fmt: skip
    # each dependent: its own loop (a child, the loop id of its work item), build, then staging and production
    assert legacy_loop.startswith(f"remediate/{SCOPE}/legacy-api-os-rebuild-")
    assert set(world.started) == {world.started[0], legacy_loop, payments_loop}
    assert [r.loop for r in state.chain[1:]] == [legacy_loop, payments_loop]
    assert {(b.image.name, b.current_tag) for b in world.builds[1:]} == {("legacy-api", "2.0.7"), ("payments", "1.9.1")}
    assert sorted((p.delivery.image.name, p.target, p.tag) for p in world.promotions if p.delivery.image) == [
        ("legacy-api", 0, "2.0.8"), ("legacy-api", 1, "2.0.8"), ("payments", 0, "1.9.2"), ("payments", 1, "1.9.2"),
    ]  # fmt: skip
    assert sorted((j.service, j.policy.env) for j in world.judged) == [
        ("legacy-api", "production"), ("legacy-api", "staging"), ("payments", "production"), ("payments", "staging"),
    ]  # fmt: skip
    # one Jira issue: opened once, every merge request linked to it, closed once by the base's loop
    assert world.calls.count(jira.OPEN_WORK_ITEM) == 1 and {link.key for link in world.links} == {"OPS-1"}
    assert len(world.links) == 1 + 2 * 3  # the base's MR; each dependent's MR and its two tag MRs
    (closed,) = world.closed
    lines = closed.comment.splitlines()
    assert lines[0] == "Base-image chain of base-python (every image verified):"
    assert lines[1] == (
        "- base-python: !30, built 1.3.1; verified (a base image: it runs through the images built FROM it)"
    )
    assert lines[2].startswith("- legacy-api: !3")
    assert ", FROM base-python 1.3.0, built 2.0.8; verified (staging: pass" in lines[2]
    assert lines[3].startswith("- payments: !3") and "built 1.9.2; verified" in lines[3] and len(lines) == 4
    assert [(r.name, r.outcome) for r in state.chain] == [
        ("base-python", Outcome.VERIFIED), ("legacy-api", Outcome.VERIFIED), ("payments", Outcome.VERIFIED),
    ]  # fmt: skip
    chain_notes = [n for n in world.notes if n.dedup_key.endswith("/chain")]
    assert [n.iid for n in chain_notes] == [30]
    assert chain_notes[0].body.splitlines()[2:] == [f"- {markdown(r.line(), 700)}" for r in state.chain]
    started = next(c for c in world.comments if c.dedup_key.endswith("/chain-started"))
    assert started.labels == ["fixloop-base-image"] and "- payments: FROM base-python 1.3.0; running" in started.body


async def test_a_dependent_that_fails_or_cannot_be_planned_leaves_the_issue_open(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    world = Chained(
        merge_after_polls=1, approvals=[approval("alice")], failing={"payments"}, metrics=measured(error_after=1.2),
    )  # fmt: skip
    state = await _run(env, task_queue, world)
    assert state.outcome is Outcome.DEPENDENTS_FAILED
    assert [(r.name, r.outcome) for r in state.chain] == [
        ("base-python", Outcome.DEPENDENTS_FAILED), ("legacy-api", Outcome.VERIFIED), ("payments", Outcome.REVERTED),
    ]  # fmt: skip
    assert world.closed == []  # nobody closes the chain's issue: not the dependents' loops, not the base's
    (done,) = [c for c in world.comments if c.dedup_key.endswith("/chain-done")]
    assert done.labels == ["fixloop-chain-failed"]
    assert "- payments: !" in done.body and "; reverted (staging" in done.body

    world = Chained(merge_after_polls=1, approvals=[approval("alice")], unplannable={"legacy-api"}, cut=("storefront",))
    state = await _run(env, f"{task_queue}-2", world)
    assert state.outcome is Outcome.DEPENDENTS_FAILED
    (legacy,) = [r for r in state.chain if r.name == "legacy-api"]
    assert (legacy.started, legacy.outcome, legacy.merge_request) == (False, None, None)
    assert legacy.line() == (
        "legacy-api: FROM base-python 1.3.0; not started (services/legacy-api/Dockerfile: no stage is FROM it any more)"
    )
    assert state.chain[-1].line() == "storefront: not started (not followed: over the 2 dependents followed)"
    assert [(r.name, r.outcome) for r in state.chain[1:3]] == [("legacy-api", None), ("payments", Outcome.VERIFIED)]
    assert {b.image.name for b in world.builds} == {"base-python", "payments"}  # legacy-api was never changed


async def test_a_dependent_that_is_a_base_itself_rebuilds_its_own_dependents(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """Depth 2: legacy-api is built FROM base-python and payments FROM legacy-api (here: its delivery says so). The
    base's loop starts legacy-api's, whose own build then starts payments' (a grandchild); the base's Jira lines
    name all three."""
    world = Chained(merge_after_polls=1, approvals=[approval("alice")], nested=True)
    world.plan = _only_legacy(world)  # type: ignore[method-assign]
    state = await _run(env, task_queue, world)
    assert state.outcome is Outcome.VERIFIED, [r.line() for r in state.chain]
    assert [(r.name, r.base, r.outcome) for r in state.chain] == [
        ("base-python", None, Outcome.VERIFIED), ("legacy-api", "base-python", Outcome.VERIFIED),
        ("payments", "legacy-api", Outcome.VERIFIED),
    ]  # fmt: skip
    legacy_loop, payments_loop = (loop_id(SCOPE, p.work_item.id) for p in world.dependents_planned)
    assert world.started[1:] == [legacy_loop, *[payments_loop] * 3]  # payments' MR and its 2 tag MRs
    assert [(b.image.name, b.current_tag) for b in world.builds] == [
        ("base-python", "1.3.0"), ("legacy-api", "2.0.7"), ("payments", "1.9.1")
    ]  # fmt: skip
    assert [(p.dependent.name, p.base.name, p.tag) for p in world.dependents_planned] == [
        ("legacy-api", "base-python", "1.3.1"), ("payments", "legacy-api", "2.0.8")
    ]  # fmt: skip
    assert len(world.closed) == 1


def _only_legacy(world: Chained):  # noqa: ANN202 - an activity
    """base-python's plan with legacy-api as its only dependent."""

    @activity.defn(name=change.PLAN_CHANGE)
    async def plan(inp: PlanChangeInput) -> PlannedChange:
        planned = await Chained.plan(world, inp)
        assert planned.delivery is not None
        delivery = planned.delivery.model_copy(update={"dependents": DEPENDENTS[:1]})
        return planned.model_copy(update={"delivery": delivery})

    return plan
