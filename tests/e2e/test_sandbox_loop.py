"""The whole RemediationWorkflow against the sandbox, on the real Temporal dev server and the real activities (the
worker built from the sandbox's ``FIXLOOP_*`` variables): a human approves and merges each merge request in GitLab,
the sandbox Flux applies it, verification reads the sandbox Datadog, and

- the alpine base image bump (a change the world model leaves healthy) is built by the sandbox CI, set in staging
  by a tag merge request, rolled out, verified there, promoted to production the same way and ends ``verified``:
  Jira Done, an MR note;
- the payments pin bump (pip-audit's fixes move Twisted 18 -> 20, a major upgrade the world model breaks: errors
  x3) fails in staging and ends in a revert merge request of exactly its staging tag change and its source change,
  approved and merged like any other, applied by Flux: ``reverted``, the Jira issue reopened with the evidence;
  production never runs it.

Verification waits out its window in real time here, so the test first sets a short one in the repository's
``fixloop.yaml`` (24 s of 2-second points each side), as a team would for a fast service.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import gitlab as python_gitlab
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from fixloop.app.worker import Integrations, build_worker
    from fixloop.core.models import Signal, WorkItem, WorkItemKind
    from fixloop.core.triage import triage_rules
    from fixloop.core.verification import VerdictResult
    from fixloop.integrations.datadog.api import DatadogSettings
    from fixloop.integrations.flux import FluxSettings
    from fixloop.integrations.gitlab.api import GitLabSettings
    from fixloop.integrations.jira import JiraClient, JiraSettings
    from fixloop.integrations.registry import RegistrySettings
    from fixloop.sandbox.app import Sandbox, create_app
    from fixloop.sandbox.config import SandboxConfig
    from fixloop.sandbox.seed import GITOPS_PROJECT
    from fixloop.sandbox.server import bind, endpoints, serve_in_thread
    from fixloop.workflows.contracts.loop import LoopOptions, LoopState, Outcome, RemediationInput, Stage, loop_id
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.activities.sandbox_world import configured
    from tests.conftest import signals
    from tests.devserver import dev  # noqa: F401 - the fixture

SHORT_WINDOW = "verification:\n  window: 24s\n  interval: 2s\n  kustomization: flux-system/apps-production\n"
DEADLINE = 120.0  # seconds of real time for a loop to reach a state


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str]]]:
    sock = bind()
    port = sock.getsockname()[1]
    config = SandboxConfig(
        state_dir=tmp_path / "sandbox", public_url=f"http://127.0.0.1:{port}", ci_duration=2, rollout_ready_s=1
    )
    sb = Sandbox.open(config)
    with serve_in_thread(create_app(sb), sock):
        yield sb, endpoints(sb)


class Reviewer:
    """The human at the gate: approves a merge request's head in GitLab and merges exactly that head."""

    def __init__(self, sb: Sandbox, env: dict[str, str]) -> None:
        token = sb.credentials.gitlab_reviewer_token.get_secret_value()
        self.project = python_gitlab.Gitlab(env["FIXLOOP_GITLAB_URL"], private_token=token).projects.get(GITOPS_PROJECT)

    @classmethod
    def with_short_window(cls, sb: Sandbox, env: dict[str, str]) -> Reviewer:
        """The reviewer of the sandbox's repository, once it verifies over short windows (``set_short_window``)."""
        reviewer = cls(sb, env)
        reviewer.set_short_window()
        return reviewer

    def set_short_window(self) -> None:
        policy = self.project.files.get("fixloop.yaml", ref="main").decode().decode()
        head, _, _ = policy.partition("verification:")
        self.project.commits.create(
            {
                "branch": "main",
                "commit_message": "Verify deploys over 24 s windows",
                "actions": [{"action": "update", "file_path": "fixloop.yaml", "content": head + SHORT_WINDOW}],
            }
        )

    def approve_and_merge(self, iid: int) -> None:
        mr = self.project.mergerequests.get(iid)
        head = mr.sha  # approve() replaces the object's attributes with the approvals answer
        mr.approve(sha=head)
        mr.merge(sha=head)


OPTIONS = LoopOptions(poll_interval=timedelta(milliseconds=300), verify_delay=timedelta(seconds=3))


def gated(s: LoopState) -> int | None:
    """The merge request a loop waits at the gate for (its revert, its environment's tag change, its fix), if any."""
    here = s.environments[s.target] if s.target < len(s.environments) else None
    mr = s.revert or (here.merge_request if here is not None else None) or s.merge_request
    return mr.iid if s.stage is Stage.AWAIT_APPROVAL and mr is not None else None


async def start_loop(
    client: Client, task_queue: str, item: WorkItem, found: list[Signal], options: LoopOptions = OPTIONS,
    run: str | None = None,
) -> WorkflowHandle[Any, LoopState]:
    """A loop of ``item`` on the platform/gitops scope, its id suffixed with ``run`` (default: a fresh one)."""
    return await client.start_workflow(
        RemediationWorkflow.run,
        RemediationInput(scope=GITOPS_PROJECT, work_item=item, signals=found, options=options),
        id=f"{loop_id(GITOPS_PROJECT, item.id)}/{run or uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
        static_summary=item.title,
    )  # fmt: skip


async def review_until_done(reviewer: Reviewer, handles: list[WorkflowHandle[Any, Any]]) -> None:
    """The human at the gate of every loop: each merge request a loop waits for (its fix, a tag change, a revert) is
    approved and merged once, until every loop is done (bounded by ``DEADLINE`` without progress)."""
    approved: set[int] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        states = [await h.query(RemediationWorkflow.status) for h in handles]
        if all(s.stage is Stage.DONE for s in states):
            return
        for s in states:
            iid = gated(s)
            if iid is not None and iid not in approved:
                approved.add(iid)
                reviewer.approve_and_merge(iid)
                deadline = loop.time() + DEADLINE
        stuck = [f"{s.stage.value}: {s.evidence[-1:]}" for s in states if s.stage is not Stage.DONE]
        assert loop.time() < deadline, stuck
        await asyncio.sleep(0.2)


def sandbox_integrations(env: dict[str, str]) -> Integrations:
    """Every system the worker talks to, configured from the sandbox's ``FIXLOOP_*`` variables."""
    return Integrations(
        jira=configured(JiraSettings, env),
        gitlab=configured(GitLabSettings, env),
        registry=configured(RegistrySettings, env),
        flux=configured(FluxSettings, env),
        datadog=configured(DatadogSettings, env),
    )


def item_of(report: str, kind: WorkItemKind) -> tuple[WorkItem, list[Signal]]:
    found = signals(report)
    return next(w for w in triage_rules(found).work_items if w.kind is kind), found


async def test_one_loop_verifies_and_one_is_reverted(
    dev: WorkflowEnvironment,  # noqa: F811
    sandbox: tuple[Sandbox, dict[str, str]],
) -> None:
    sb, env = sandbox
    reviewer = Reviewer.with_short_window(sb, env)
    integrations = sandbox_integrations(env)
    alpine, alpine_signals = item_of("trivy/trivy-0.22-fulldb_alpine-39.json", WorkItemKind.OS_REBUILD)
    pins, pin_signals = item_of(
        "pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", WorkItemKind.DEPENDENCY_BUMP
    )
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    handles = {}
    async with build_worker(dev.client, task_queue, integrations=integrations):
        for name, item, found in (("alpine", alpine, alpine_signals), ("pins", pins, pin_signals)):
            handles[name] = await start_loop(dev.client, task_queue, item, found)
        await review_until_done(reviewer, list(handles.values()))  # every gated MR: fixes, tag changes, revert
        passed, reverted = [await h.result() for h in (handles["alpine"], handles["pins"])]

    jira = JiraClient(configured(JiraSettings, env))
    # the healthy change: built, set in staging, rolled out, verified there, promoted, verified in production
    assert passed.outcome is Outcome.VERIFIED, passed.evidence[-3:]
    assert passed.verdict is not None and passed.verdict.result is VerdictResult.PASS
    assert passed.build is not None and (passed.build.state, passed.build.tag) == ("built", "1.4.3")
    assert [(e.name, e.tag) for e in passed.environments] == [("staging", "1.4.3"), ("production", "1.4.3")]
    for e in passed.environments:
        assert e.rollout and e.rollout.verdict.state.value == "complete" and e.verdict and e.verdict.env == e.name
    for env_name in ("staging", "production"):
        kustomization = reviewer.project.files.get(f"apps/{env_name}/kustomization.yaml", ref="main").decode()
        assert b'newTag: "1.4.3"' in kustomization
    assert passed.issue is not None and jira.get_issue(passed.issue.key).status == "Done"
    assert passed.merge_request is not None
    notes = reviewer.project.mergerequests.get(passed.merge_request.iid).notes.list(get_all=True)
    assert any("fixloop verified this change" in n.body for n in notes)
    # the broken change fails in staging: the revert MR undoes its tag change there and the source change behind
    # it (exactly those merge commits), Flux applied it, and production never ran it
    assert reverted.outcome is Outcome.REVERTED, reverted.evidence[-3:]
    assert reverted.verdict is not None and reverted.verdict.result is VerdictResult.FAIL
    assert "error rate" in reverted.verdict.summary and reverted.verdict.env == "staging"
    assert [e.name for e in reverted.environments] == ["staging"]
    assert reverted.mr_state is not None and reverted.revert is not None and reverted.reverted_sha is not None
    history = reviewer.project.commits.list(ref_name="main", per_page=30, get_all=False)  # its branch is gone
    messages = "\n".join(c.message for c in history)
    assert f"This reverts commit {reverted.reverted_sha}" in messages
    assert f"This reverts commit {reverted.source_sha}" in messages
    requirements = reviewer.project.files.get("services/payments/requirements.txt", ref="main").decode().decode()
    assert "Twisted==18.9.0" in requirements and "Twisted==20" not in requirements
    production = reviewer.project.files.get("apps/production/kustomization.yaml", ref="main").decode().decode()
    staging = reviewer.project.files.get("apps/staging/kustomization.yaml", ref="main").decode().decode()
    assert 'newTag: "1.9.1"' in production.split("shop/payments", 1)[1].split("name:", 1)[0]
    assert 'newTag: "1.9.1"' in staging.split("shop/payments", 1)[1].split("name:", 1)[0]
    assert reverted.issue is not None and jira.get_issue(reverted.issue.key).status == "To Do"  # reopened
    comments = [c.body for c in jira.jira.comments(reverted.issue.key)]
    assert any("Verification failed" in c and "error rate" in c for c in comments)
    assert any("was merged and applied by Flux" in c for c in comments)
