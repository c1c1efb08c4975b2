"""Stand-ins for Jira, GitLab, Flux and the metrics judge, registered under the real activity names.

Each records what the loop asked of it; the merge request and the deploy advance after a scripted number of
polls, so a test drives a loop through its stages on the time-skipping server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import activity

from activities import change, flux, gitlab, jira, verify

HEAD = "a" * 40
MERGE = "b" * 40


@dataclass
class World:
    located: bool = True
    merge_after_polls: int | None = None  # None: the MR is never merged
    approvals: list[gitlab.Approval] = field(default_factory=list)
    close_after_polls: int | None = None
    deploy_after_polls: int | None = 1
    deploy_fails: bool = False
    verdict: verify.VerdictResult = verify.VerdictResult.PASS
    calls: list[str] = field(default_factory=list)
    comments: list[jira.CommentInput] = field(default_factory=list)
    closed: list[jira.CloseWorkItemInput] = field(default_factory=list)
    links: list[jira.LinkInput] = field(default_factory=list)
    mr_polls: int = 0
    deploy_polls: int = 0

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
        ]

    @activity.defn(name=jira.OPEN_WORK_ITEM)
    async def open_work_item(self, inp: jira.OpenWorkItemInput) -> jira.IssueRef:
        self.calls.append(jira.OPEN_WORK_ITEM)
        return jira.IssueRef(key="OPS-1", url="https://jira.example.com/browse/OPS-1")

    @activity.defn(name=change.PLAN_CHANGE)
    async def plan(self, inp: change.PlanChangeInput) -> change.PlannedChange:
        self.calls.append(change.PLAN_CHANGE)
        if not self.located:
            return change.PlannedChange(located=False, reason="no Dockerfile or manifest runs this image")
        return change.PlannedChange(
            located=True, branch=f"fixloop/{inp.work_item.id}", operations=["bump FROM alpine:3.9.4 -> 3.9.6"]
        )

    @activity.defn(name=gitlab.OPEN_MERGE_REQUEST)
    async def open_merge_request(self, inp: gitlab.OpenMergeRequestInput) -> gitlab.MergeRequestRef:
        self.calls.append(gitlab.OPEN_MERGE_REQUEST)
        return gitlab.MergeRequestRef(
            project=inp.scope,
            iid=7,
            url=f"https://gitlab.example.com/{inp.scope}/-/merge_requests/7",
            branch=inp.change.branch or "?",
            head_sha=HEAD,
        )

    @activity.defn(name=gitlab.MERGE_REQUEST_STATE)
    async def merge_request_state(self, inp: gitlab.MergeRequestStateInput) -> gitlab.MergeRequestState:
        self.mr_polls += 1
        if self.close_after_polls is not None and self.mr_polls >= self.close_after_polls:
            return gitlab.MergeRequestState(state=gitlab.MrState.CLOSED, head_sha=HEAD)
        if self.merge_after_polls is not None and self.mr_polls >= self.merge_after_polls:
            return gitlab.MergeRequestState(
                state=gitlab.MrState.MERGED, head_sha=HEAD, merge_sha=MERGE, approvals=self.approvals
            )
        return gitlab.MergeRequestState(state=gitlab.MrState.OPENED, head_sha=HEAD)

    @activity.defn(name=flux.DEPLOY_STATE)
    async def deploy_state(self, inp: flux.DeployStateInput) -> flux.DeployState:
        self.deploy_polls += 1
        if self.deploy_after_polls is None or self.deploy_polls < self.deploy_after_polls:
            return flux.DeployState(revision="main@sha1:" + "c" * 40)
        revision = f"main@sha1:{inp.merge_sha}"
        if self.deploy_fails:
            return flux.DeployState(failed=True, revision=revision, message="kustomize build failed")
        return flux.DeployState(applied=True, revision=revision)

    @activity.defn(name=verify.JUDGE)
    async def judge(self, inp: verify.JudgeInput) -> verify.Verdict:
        self.calls.append(verify.JUDGE)
        return verify.Verdict(result=self.verdict, summary="error rate 0.4% -> 0.1%", evidence=["p=0.001"])

    @activity.defn(name=jira.COMMENT)
    async def comment(self, inp: jira.CommentInput) -> None:
        self.comments.append(inp)

    @activity.defn(name=jira.CLOSE_WORK_ITEM)
    async def close_work_item(self, inp: jira.CloseWorkItemInput) -> None:
        self.closed.append(inp)

    @activity.defn(name=jira.LINK)
    async def link(self, inp: jira.LinkInput) -> jira.LinkRef:
        self.calls.append(jira.LINK)
        self.links.append(inp)
        return jira.LinkRef(id=str(len(self.links)), created=True)
