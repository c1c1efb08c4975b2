"""The whole RemediationWorkflow against the sandbox, on the real Temporal dev server and the real activities (the
worker built from the sandbox's ``FIXLOOP_*`` variables): a human approves and merges each merge request in GitLab,
the sandbox Flux applies it, verification reads the sandbox Datadog, and

- the alpine base image bump (a change the world model leaves healthy) ends ``verified``: Jira Done, an MR note;
- the payments pin bump (pip-audit's fixes move Twisted 18 -> 20, a major upgrade the world model breaks: errors
  x3) ends in a revert merge request of exactly the merge commit, approved and merged like any other, applied by
  Flux: ``reverted``, the Jira issue reopened with the evidence.

Verification waits out its window in real time here, so the test first sets a short one in the repository's
``fixloop.yaml`` (24 s of 2-second points each side), as a team would for a fast service.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import gitlab as python_gitlab
import pytest
from temporalio import workflow
from temporalio.client import WorkflowHandle
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
    from fixloop.workflows.contracts.loop import LoopOptions, LoopState, Outcome, RemediationInput, loop_id
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
    sb = Sandbox.open(SandboxConfig(state_dir=tmp_path / "sandbox", public_url=f"http://127.0.0.1:{port}"))
    with serve_in_thread(create_app(sb), sock):
        yield sb, endpoints(sb)


class Reviewer:
    """The human at the gate: approves a merge request's head in GitLab and merges exactly that head."""

    def __init__(self, sb: Sandbox, env: dict[str, str]) -> None:
        token = sb.credentials.gitlab_reviewer_token.get_secret_value()
        self.project = python_gitlab.Gitlab(env["FIXLOOP_GITLAB_URL"], private_token=token).projects.get(GITOPS_PROJECT)

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


async def until(handle: WorkflowHandle[Any, Any], done: Callable[[LoopState], bool]) -> LoopState:
    """The loop's ``status`` once ``done(status)`` holds (a real server in real time: the query is polled, bounded
    by ``DEADLINE``)."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:
        status = await handle.query(RemediationWorkflow.status)
        if done(status):
            return status
        assert asyncio.get_running_loop().time() < deadline, f"stuck at {status.stage.value}: {status.evidence[-1:]}"
        await asyncio.sleep(0.2)


def item_of(report: str, kind: WorkItemKind) -> tuple[WorkItem, list[Signal]]:
    found = signals(report)
    return next(w for w in triage_rules(found).work_items if w.kind is kind), found


async def test_one_loop_verifies_and_one_is_reverted(
    dev: WorkflowEnvironment,  # noqa: F811
    sandbox: tuple[Sandbox, dict[str, str]],
) -> None:
    sb, env = sandbox
    reviewer = Reviewer(sb, env)
    reviewer.set_short_window()
    integrations = Integrations(
        jira=configured(JiraSettings, env),
        gitlab=configured(GitLabSettings, env),
        registry=configured(RegistrySettings, env),
        flux=configured(FluxSettings, env),
        datadog=configured(DatadogSettings, env),
    )
    alpine, alpine_signals = item_of("trivy/trivy-0.22-fulldb_alpine-39.json", WorkItemKind.OS_REBUILD)
    pins, pin_signals = item_of(
        "pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", WorkItemKind.DEPENDENCY_BUMP
    )
    options = LoopOptions(poll_interval=timedelta(milliseconds=300), verify_delay=timedelta(seconds=3))
    scope, task_queue = GITOPS_PROJECT, f"tq-{uuid.uuid4().hex[:12]}"
    handles = {}
    async with build_worker(dev.client, task_queue, integrations=integrations):
        for name, item, found in (("alpine", alpine, alpine_signals), ("pins", pins, pin_signals)):
            handles[name] = await dev.client.start_workflow(
                RemediationWorkflow.run,
                RemediationInput(scope=scope, work_item=item, signals=found, options=options),
                id=f"{loop_id(scope, item.id)}/{uuid.uuid4().hex[:6]}",
                task_queue=task_queue,
                static_summary=item.title,
            )
        for handle in handles.values():  # the human gate, for both loops
            status = await until(handle, lambda s: s.merge_request is not None)
            assert status.merge_request is not None
            reviewer.approve_and_merge(status.merge_request.iid)
        status = await until(handles["pins"], lambda s: s.revert is not None)  # the failed verdict's revert
        assert status.revert is not None
        reviewer.approve_and_merge(status.revert.iid)
        passed, reverted = [await h.result() for h in (handles["alpine"], handles["pins"])]

    jira = JiraClient(configured(JiraSettings, env))
    # the healthy change: verified, the Jira issue done, the MR told
    assert passed.outcome is Outcome.VERIFIED, passed.evidence[-3:]
    assert passed.verdict is not None and passed.verdict.result is VerdictResult.PASS
    assert passed.issue is not None and jira.get_issue(passed.issue.key).status == "Done"
    assert passed.merge_request is not None
    notes = reviewer.project.mergerequests.get(passed.merge_request.iid).notes.list(get_all=True)
    assert any("fixloop verified this change" in n.body for n in notes)
    # the broken change: the verdict names the error rate, the revert is exactly the merge commit, Flux applied it
    assert reverted.outcome is Outcome.REVERTED, reverted.evidence[-3:]
    assert reverted.verdict is not None and reverted.verdict.result is VerdictResult.FAIL
    assert "error rate" in reverted.verdict.summary
    assert reverted.mr_state is not None and reverted.revert is not None and reverted.reverted_sha is not None
    revert_commit = reviewer.project.commits.get(reverted.revert.head_sha)
    assert f"This reverts commit {reverted.reverted_sha}" in revert_commit.message
    requirements = reviewer.project.files.get("services/payments/requirements.txt", ref="main").decode().decode()
    assert "Twisted==18.9.0" in requirements and "Twisted==20" not in requirements
    assert reverted.issue is not None and jira.get_issue(reverted.issue.key).status == "To Do"  # reopened
    comments = [c.body for c in jira.jira.comments(reverted.issue.key)]
    assert any("Verification failed" in c and "error rate" in c for c in comments)
    assert any("was merged and applied by Flux" in c for c in comments)
