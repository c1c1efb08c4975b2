"""Stand-ins for Jira, GitLab, Flux and the metrics judge, registered under the real activity names.

Each records what the loop asked of it (``verify.judge`` judges ``metrics`` with ``fixloop.core.verification`` when
a test sets them, see ``measured``); the merge request and the deploy advance after a scripted number of
polls (reads), so a test drives a loop through its stages on the time-skipping server. The merge request reads
answer as GitLab's API would (approvals with user ids; authored by the bot; approvals reset on push) unless a test
says otherwise; ``users`` are the GitLab users ``gitlab.check_user`` knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from fixloop.activities import deploy as flux
from fixloop.activities import investigate, verify
from fixloop.activities import merge_request as gitlab
from fixloop.activities import plan as change
from fixloop.activities import work_item as jira
from fixloop.core.gate import Approval, MergeRequestState, MrState, UserFacts
from fixloop.core.verification import (
    ERROR_RATE,
    LATENCY_P95,
    REQUEST_RATE,
    MetricResult,
    VerdictResult,
    VerificationPolicy,
    compare,
    judge,
    score,
)
from fixloop.workflows.contracts.deploy import DeployState, DeployStateInput
from fixloop.workflows.contracts.investigate import CandidateCulprit, CulpritInput, CulpritOutput
from fixloop.workflows.contracts.loop import AlertsJoined, DeployEvent, MergeRequestEvent
from fixloop.workflows.contracts.merge_request import (
    CheckUserInput,
    DeleteBranchInput,
    MergeRequestRef,
    MergeRequestStateInput,
    NoteInput,
    OpenMergeRequestInput,
    OpenRevertInput,
)
from fixloop.workflows.contracts.plan import PlanChangeInput, PlannedChange, PlanRemediationInput
from fixloop.workflows.contracts.verify import JudgeInput, Verdict
from fixloop.workflows.contracts.work_item import (
    CloseWorkItemInput,
    CommentInput,
    IssueRef,
    LinkInput,
    LinkRef,
    OpenWorkItemInput,
    RenameInput,
    SetStatusInput,
)

HEAD = "a" * 40
MERGE = "b" * 40
REVERT_HEAD = "e" * 40
REVERT_MERGE = "f" * 40
USER_IDS = {"fixloop-bot": 2, "alice": 11, "bob": 12, "carol": 13, "dave": 14, "mallory": 66}
BOT_ID = USER_IDS["fixloop-bot"]
REVIEWER = Approval(by="carol", sha=REVERT_HEAD, user_id=USER_IDS["carol"])
MERGED_AT = datetime(2024, 6, 1, 12, 0, 5, tzinfo=UTC)
FIX_TITLE = "Rebuild catalog on alpine 3.9.6 (fixes CVE-2019-14697 and 3 more)"


def measured(error_after: float = 0.4, latency_after: float = 0.12) -> list[MetricResult]:
    """The default checks (``fixloop.core.verification``) compared on 20 points a side, as ``verify.judge`` would
    from Datadog: error rate 0.4 errors/s, latency p95 120 ms and request rate 40 req/s before (each point within
    4 % of it), ``error_after`` and ``latency_after`` (in s) after, the request rate unchanged."""
    policy = VerificationPolicy()
    jitter = [(-1) ** i * 0.01 * (i % 5) for i in range(policy.points)]

    def points(mean: float) -> list[float]:
        return [mean * (1 + j) for j in jitter]

    return [
        compare(points(0.4), points(error_after), ERROR_RATE, policy),
        compare(points(0.12), points(latency_after), LATENCY_P95, policy),
        compare(points(40.0), points(40.0), REQUEST_RATE, policy),
    ]


def approval(by: str, sha: str = HEAD, **more: Any) -> Approval:
    """An approval as the GitLab API lists it (``approved_by[].user.{id,username}``), at head ``sha``."""
    return Approval(by=by, sha=sha, user_id=USER_IDS[by], bot=by == "fixloop-bot", **more)


def human_users() -> dict[str, UserFacts]:
    out = {u: UserFacts(username=u, user_id=i, state="active") for u, i in USER_IDS.items()}
    out["fixloop-bot"] = out["fixloop-bot"].model_copy(update={"bot": True})
    return out


def as_read(s: MergeRequestState) -> MergeRequestState:
    """``s`` with what a read of GitLab carries besides: the author (the bot) and ``reset_approvals_on_push``."""
    fill = {"author_id": BOT_ID, "author": "fixloop-bot", "reset_approvals_on_push": True}
    return s.model_copy(update={k: v for k, v in fill.items() if k not in s.model_fields_set})


@dataclass
class World:
    located: bool = True
    merge_after_polls: int | None = None  # None: the MR is never merged
    approvals: list[Approval] = field(default_factory=list)
    close_after_polls: int | None = None
    deploy_after_polls: int | None = 1
    deploy_fails: bool = False
    verdict: VerdictResult = VerdictResult.PASS
    verification: Any = None  # the PlannedChange's VerificationPolicy (None: the default)
    calls: list[str] = field(default_factory=list)
    issues_opened: list[OpenWorkItemInput] = field(default_factory=list)  # each jira.open_work_item's input
    comments: list[CommentInput] = field(default_factory=list)
    closed: list[CloseWorkItemInput] = field(default_factory=list)
    links: list[LinkInput] = field(default_factory=list)
    mr_script: list[MergeRequestState] | None = None  # poll n answers script[n - 1] (the last repeats)
    revert_merge_after_polls: int | None = 1  # the revert MR (!8) is merged, approved by REVIEWER, after n polls
    revert_closes: bool = False
    deploy_events: list[tuple[str, bool]] = field(default_factory=list)  # signalled from the first deploy polls
    mr_events: list[MergeRequestEvent] = field(default_factory=list)  # signalled from the first MR polls
    hooks_at_open: list[MergeRequestEvent] = field(default_factory=list)  # signalled once the MR is opened (link)
    users: dict[str, UserFacts] = field(default_factory=human_users)  # gitlab.check_user's GitLab
    checked_users: list[str] = field(default_factory=list)
    read_at: list[Any] = field(default_factory=list)  # when each merge request read was scheduled (server time)
    revert_approvals: list[Approval] = field(default_factory=lambda: [REVIEWER])
    joins: list[AlertsJoined] = field(default_factory=list)  # the intake's join_alerts, from the first MR polls
    service: str | None = None  # the PlannedChange's service
    callouts: list[str] = field(default_factory=list)  # the PlannedChange's callouts (breaking bumps, max_jump)
    client: Any = None  # a Temporal client, for deploy_events
    notes: list[NoteInput] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    reverts: list[OpenRevertInput] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    judged: list[JudgeInput] = field(default_factory=list)
    mr_polls: int = 0
    revert_polls: int = 0
    deploy_polls: int = 0
    culprits: dict[str, Any] = field(default_factory=dict)  # investigate.culprit: entity -> its Culprit (else none)
    culprit_asked: list[CulpritInput] = field(default_factory=list)
    remediation: str | None = None  # change.plan_remediation's action (None: no safe action)
    remediations: list[PlanRemediationInput] = field(default_factory=list)
    renames: list[RenameInput] = field(default_factory=list)  # jira.rename: the summaries given
    opened: list[Any] = field(default_factory=list)  # the work item of each gitlab.open_merge_request
    metrics: list[MetricResult] = field(default_factory=list)  # set: verify.judge judges them (else ``verdict``)
    services: list[str] = field(default_factory=list)  # the PlannedChange's services (a change to several)
    metrics_of: dict[str, list[MetricResult]] = field(default_factory=dict)  # verify.judge's metrics per service

    def activities(self) -> list:
        return [
            self.open_work_item,
            self.plan,
            self.open_merge_request,
            self.merge_request_state,
            self.deploy_state,
            self.judge,
            self.comment,
            self.close_work_item,
            self.link,
            self.note,
            self.delete_branch,
            self.open_revert_merge_request,
            self.set_status,
            self.check_user,
            self.culprit,
            self.plan_remediation,
            self.rename,
        ]

    @activity.defn(name=change.PLAN_REMEDIATION)
    async def plan_remediation(self, inp: PlanRemediationInput) -> PlannedChange:
        self.calls.append(change.PLAN_REMEDIATION)
        self.remediations.append(inp)
        if self.remediation is None:
            return PlannedChange(located=False, reason="No rule matches inventory's alerts.")
        return PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}",
            operations=[f"{self.remediation} inventory"],
            base_sha="c" * 40,
            title=f"Incident: {self.remediation} inventory",
            service="inventory",
            action=self.remediation,
            verification=self.verification,
        )

    @activity.defn(name=investigate.CULPRIT)
    async def culprit(self, inp: CulpritInput) -> CulpritOutput:
        self.calls.append(investigate.CULPRIT)
        self.culprit_asked.append(inp)
        return CulpritOutput(
            candidates=[
                CandidateCulprit(entity=c.entity, culprit=self.culprits.get(c.entity), commits_read=2)
                for c in inp.candidates
            ]
        )

    @activity.defn(name=jira.OPEN_WORK_ITEM)
    async def open_work_item(self, inp: OpenWorkItemInput) -> IssueRef:
        self.calls.append(jira.OPEN_WORK_ITEM)
        self.issues_opened.append(inp)
        return IssueRef(key="OPS-1", url="https://jira.example.com/browse/OPS-1")

    @activity.defn(name=change.PLAN_CHANGE)
    async def plan(self, inp: PlanChangeInput) -> PlannedChange:
        self.calls.append(change.PLAN_CHANGE)
        if not self.located:
            return PlannedChange(located=False, reason="no Dockerfile or manifest runs this image")
        return PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}",
            operations=["bump FROM alpine:3.9.4 -> 3.9.6"],
            verification=self.verification,
            service=self.service,
            services=self.services,
            title=FIX_TITLE,
            callouts=self.callouts,
        )

    @activity.defn(name=gitlab.OPEN_MERGE_REQUEST)
    async def open_merge_request(self, inp: OpenMergeRequestInput) -> MergeRequestRef:
        self.calls.append(gitlab.OPEN_MERGE_REQUEST)
        self.opened.append(inp.work_item)
        return MergeRequestRef(
            project=inp.scope,
            iid=7,
            url=f"https://gitlab.example.com/{inp.scope}/-/merge_requests/7",
            branch=inp.change.branch or "?",
            head_sha=HEAD,
            title=inp.change.title,
        )

    @activity.defn(name=gitlab.MERGE_REQUEST_STATE)
    async def merge_request_state(self, inp: MergeRequestStateInput) -> MergeRequestState:
        self.read_at.append(activity.info().current_attempt_scheduled_time)
        return as_read(await self._merge_request_state(inp))

    async def _merge_request_state(self, inp: MergeRequestStateInput) -> MergeRequestState:
        if inp.iid == 8:  # the revert merge request
            self.revert_polls += 1
            if self.revert_closes:
                return MergeRequestState(state=MrState.CLOSED, head_sha=REVERT_HEAD)
            if self.revert_merge_after_polls is not None and self.revert_polls >= self.revert_merge_after_polls:
                merged = MrState.MERGED
                return MergeRequestState(
                    state=merged, head_sha=REVERT_HEAD, merge_sha=REVERT_MERGE, approvals=self.revert_approvals,
                    merged_at=MERGED_AT,
                )  # fmt: skip
            return MergeRequestState(state=MrState.OPENED, head_sha=REVERT_HEAD)
        self.mr_polls += 1
        if self.mr_polls <= len(self.mr_events):  # GitLab's webhook arrives (through the gateway)
            handle = self.client.get_workflow_handle(activity.info().workflow_id)
            await handle.signal("merge_request_event", self.mr_events[self.mr_polls - 1])
        if self.mr_polls <= len(self.joins):  # alerts on the service join (from the intake)
            handle = self.client.get_workflow_handle(activity.info().workflow_id)
            await handle.signal("join_alerts", self.joins[self.mr_polls - 1])
        if self.mr_script:
            return self.mr_script[min(self.mr_polls, len(self.mr_script)) - 1]
        if self.close_after_polls is not None and self.mr_polls >= self.close_after_polls:
            return MergeRequestState(state=MrState.CLOSED, head_sha=HEAD)
        if self.merge_after_polls is not None and self.mr_polls >= self.merge_after_polls:
            return MergeRequestState(
                state=MrState.MERGED, head_sha=HEAD, merge_sha=MERGE, approvals=self.approvals, merged_at=MERGED_AT
            )
        return MergeRequestState(state=MrState.OPENED, head_sha=HEAD)

    @activity.defn(name=flux.DEPLOY_STATE)
    async def deploy_state(self, inp: DeployStateInput) -> DeployState:
        self.deploy_polls += 1
        if self.deploy_polls <= len(self.deploy_events):  # Flux's notification arrives (through the gateway)
            revision, ready = self.deploy_events[self.deploy_polls - 1]
            handle = self.client.get_workflow_handle(activity.info().workflow_id)
            await handle.signal("deploy_event", DeployEvent(revision=revision, ready=ready, message="from Flux"))
        if self.deploy_after_polls is None or self.deploy_polls < self.deploy_after_polls:
            return DeployState(revision="main@sha1:" + "c" * 40)
        revision = f"main@sha1:{inp.merge_sha}"
        if self.deploy_fails:
            return DeployState(failed=True, revision=revision, message="kustomize build failed")
        return DeployState(applied=True, revision=revision)

    @activity.defn(name=verify.JUDGE)
    async def judge(self, inp: JudgeInput) -> Verdict:
        self.calls.append(verify.JUDGE)
        self.judged.append(inp)
        if inp.service in self.metrics_of:
            return self.measured_verdict(inp, self.metrics_of[inp.service])
        if self.metrics:
            return self.measured_verdict(inp)
        return Verdict(result=self.verdict, summary="error rate 0.4% -> 0.1%", evidence=["p=0.001"])

    def measured_verdict(self, inp: JudgeInput, metrics: list[MetricResult] | None = None) -> Verdict:
        """The verdict of ``metrics`` (default: ``self.metrics``) as ``verify.judge`` gives it
        (``fixloop.core.verification.judge``)."""
        metrics = self.metrics if metrics is None else metrics
        result, summary, evidence = judge(metrics, inp.policy, subject=inp.service or "catalog")
        return Verdict(
            result=result, summary=summary, evidence=evidence, metrics=metrics, score=score(metrics),
            env=inp.policy.env, service=inp.service,
        )  # fmt: skip

    @activity.defn(name=jira.COMMENT)
    async def comment(self, inp: CommentInput) -> None:
        self.comments.append(inp)

    @activity.defn(name=jira.CLOSE_WORK_ITEM)
    async def close_work_item(self, inp: CloseWorkItemInput) -> None:
        self.closed.append(inp)

    @activity.defn(name=jira.LINK)
    async def link(self, inp: LinkInput) -> LinkRef:
        self.calls.append(jira.LINK)
        self.links.append(inp)
        if len(self.links) == 1 and self.hooks_at_open:  # GitLab's webhooks, before the loop's first read
            handle = self.client.get_workflow_handle(activity.info().workflow_id)
            for event in self.hooks_at_open:
                await handle.signal("merge_request_event", event)
        return LinkRef(id=str(len(self.links)), created=True)

    @activity.defn(name=gitlab.NOTE)
    async def note(self, inp: NoteInput) -> None:
        self.notes.append(inp)

    @activity.defn(name=gitlab.DELETE_BRANCH)
    async def delete_branch(self, inp: DeleteBranchInput) -> bool:
        self.deleted.append(inp.branch)
        return True

    @activity.defn(name=gitlab.OPEN_REVERT_MERGE_REQUEST)
    async def open_revert_merge_request(self, inp: OpenRevertInput) -> MergeRequestRef:
        self.calls.append(gitlab.OPEN_REVERT_MERGE_REQUEST)
        self.reverts.append(inp)
        return MergeRequestRef(
            project=inp.original.project,
            iid=8,
            url=inp.original.url.rsplit("/", 1)[0] + "/8",
            branch=gitlab.revert_branch(inp.work_item.id, inp.merge_sha),
            head_sha=REVERT_HEAD,
            title=gitlab.revert_title(inp.original.title, inp.original.iid, inp.why),
        )

    @activity.defn(name=gitlab.CHECK_USER)
    async def check_user(self, inp: CheckUserInput) -> UserFacts:
        self.checked_users.append(inp.username)
        return self.users.get(inp.username) or UserFacts(username=inp.username)

    @activity.defn(name=jira.SET_STATUS)
    async def set_status(self, inp: SetStatusInput) -> bool:
        self.statuses.append(inp.status)
        return True

    @activity.defn(name=jira.RENAME)
    async def rename(self, inp: RenameInput) -> bool:
        self.calls.append(jira.RENAME)
        self.renames.append(inp)
        return True
