"""A base-image chain through the sandbox, on the real Temporal dev server and the real activities (the worker built
from the sandbox's ``FIXLOOP_*`` variables): the repository (``tests/sandbox/chain.py``) builds ``base-python`` FROM
debian 10.2 and ``legacy-api`` and ``payments`` FROM ``base-python:1.3.0``; Snyk scanned legacy-api (debian 10).

- the fix lands in the base's Dockerfile (debian 10.2 -> 10.13), through the human gate;
- the sandbox CI builds ``base-python:1.3.1`` (its dependents' FROM tag + 1) and the registry lists it; nothing is
  promoted for the base (it runs nowhere);
- only then does the loop open the dependents' merge requests (FROM ``base-python:1.3.1``), one child loop each,
  which go through the gate, their own builds (FROM the new base, which now exists), a tag merge request per
  environment, the rollout and the verification, staging then production;
- one Jira issue for all of it: no second one is opened, it links every merge request, and is closed Done with one
  line per image once both dependents verified.

Verification waits out its window in real time here: the test first sets a short one in the repository's
``fixloop.yaml`` (``tests/e2e/test_sandbox_loop.py``'s).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from fixloop.activities import build as ci
    from fixloop.app.worker import build_worker
    from fixloop.core.models import WorkItemKind
    from fixloop.integrations.jira import JiraClient, JiraSettings
    from fixloop.sandbox.app import Sandbox, create_app
    from fixloop.sandbox.config import SandboxConfig
    from fixloop.sandbox.registry import registry_store
    from fixloop.sandbox.server import bind, endpoints, serve_in_thread
    from fixloop.workflows.contracts.loop import LoopState, Outcome, Stage
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.activities.sandbox_world import configured
    from tests.devserver import dev  # noqa: F401 - the fixture
    from tests.e2e.test_sandbox_loop import DEADLINE, Reviewer, gated, item_of, sandbox_integrations, start_loop
    from tests.sandbox.chain import BASE, BASE_DOCKERFILE, seed_chain

SNYK_LEGACY = "snyk/synthetic_snyk-container_debian-10_file-dockerfile.json"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str]]]:
    sock = bind()
    port = sock.getsockname()[1]
    state = tmp_path / "sandbox"
    seed_chain(state, datetime.now().astimezone())  # the repository the sandbox opens: the seed and the chain
    config = SandboxConfig(state_dir=state, public_url=f"http://127.0.0.1:{port}", ci_duration=2, rollout_ready_s=1)
    sb = Sandbox.open(config)
    with serve_in_thread(create_app(sb), sock):
        yield sb, endpoints(sb)


async def review_chain(
    reviewer: Reviewer, client: Client, root: WorkflowHandle[Any, Any]
) -> dict[str, LoopState]:
    """The human at the gate of the base's loop and of each dependent's loop (found in the base's ``chain``): every
    merge request a loop waits for is approved and merged once, until the base's loop is done (bounded by
    ``DEADLINE`` without progress). The last status of every loop, by workflow id."""
    handles: dict[str, WorkflowHandle[Any, Any]] = {root.id: root}
    approved: set[int] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        states = {wid: await h.query(RemediationWorkflow.status) for wid, h in handles.items()}
        for record in states[root.id].chain:
            if record.started and record.loop and record.loop not in handles:
                handles[record.loop] = client.get_workflow_handle(record.loop)
                deadline = loop.time() + DEADLINE
        if states[root.id].stage is Stage.DONE:
            return states
        for s in states.values():
            iid = gated(s)
            if iid is not None and iid not in approved:
                approved.add(iid)
                reviewer.approve_and_merge(iid)
                deadline = loop.time() + DEADLINE
        stuck = [f"{wid}: {s.stage.value}: {s.evidence[-1:]}" for wid, s in states.items() if s.stage is not Stage.DONE]
        assert loop.time() < deadline, stuck
        await asyncio.sleep(0.2)


async def history_order(handle: WorkflowHandle[Any, Any]) -> tuple[int, int]:
    """``(event id of the last completed gitlab.build_state, event id of the first child workflow started)``."""
    scheduled: dict[int, str] = {}
    built, first_child = 0, 0
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.HasField("activity_task_completed_event_attributes"):
            if scheduled.get(event.activity_task_completed_event_attributes.scheduled_event_id) == ci.BUILD_STATE:
                built = event.event_id
        elif event.HasField("start_child_workflow_execution_initiated_event_attributes") and not first_child:
            first_child = event.event_id
    return built, first_child


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_the_base_is_fixed_built_then_its_dependents_rebuilt_on_its_tag_under_one_issue(
    dev: WorkflowEnvironment,  # noqa: F811
    sandbox: tuple[Sandbox, dict[str, str]],
) -> None:
    item, found = item_of(SNYK_LEGACY, WorkItemKind.OS_REBUILD)  # Snyk scanned legacy-api, debian 10
    sb, env = sandbox
    reviewer = Reviewer.with_short_window(sb, env)
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    async with build_worker(dev.client, task_queue, integrations=sandbox_integrations(env)):
        root = await start_loop(dev.client, task_queue, item, found)
        states = await review_chain(reviewer, dev.client, root)
        final = await root.result()
        built_event, first_child_event = await history_order(root)

    project = reviewer.project
    # the base: fixed in its own Dockerfile, merged, built on its dependents' tag + 1, promoted nowhere
    assert final.outcome is Outcome.VERIFIED, [r.line() for r in final.chain] + [e.text for e in final.evidence[-3:]]
    assert final.plan is not None and final.plan.operations == [
        f"{BASE_DOCKERFILE}: FROM debian:10.2 -> debian:10.13 (stage 0)"
    ]
    assert final.build is not None and (final.build.state, final.build.tag) == ("built", "1.3.1")
    assert final.environments == [] and final.merge_request is not None
    base_push = registry_store(sb).data["pushed"]["shop/base-python"]["1.3.1"]
    assert base_push["source"] == final.source_sha  # CI built the tag from the base's merge commit

    # then its dependents, each in its own loop: rebuilt FROM the new tag, built, set in staging then production
    (base, legacy, payments) = final.chain
    assert (base.name, base.tag, base.merge_request and base.merge_request.iid) == (
        "base-python", "1.3.1", final.merge_request.iid
    )  # fmt: skip
    assert [(r.name, r.from_tag, r.outcome, r.tag) for r in (legacy, payments)] == [
        ("legacy-api", "1.3.0", Outcome.VERIFIED, "2.0.8"),
        ("payments", "1.3.0", Outcome.VERIFIED, "1.9.2"),
    ]
    children = {r.name: states[r.loop or ""] for r in (legacy, payments)}
    for name, child in children.items():
        assert child.outcome is Outcome.VERIFIED and child.merge_request is not None
        assert [(e.name, e.verdict and e.verdict.result.value) for e in child.environments] == [
            ("staging", "pass"), ("production", "pass")
        ]  # fmt: skip
        dockerfile = project.files.get(f"services/{name}/Dockerfile", ref="main").decode().decode()
        assert f"FROM {BASE}:1.3.1\n" in dockerfile
        for env_name in ("staging", "production"):
            text = project.files.get(f"apps/{env_name}/kustomization.yaml", ref="main").decode().decode()
            assert f'newTag: "{children[name].build.tag}"' in text.split(f"shop/{name}\n", 1)[1].split("name:")[0]  # type: ignore[union-attr]
    assert "FROM debian:10.13\n" in project.files.get(BASE_DOCKERFILE, ref="main").decode().decode()

    # in order: no dependent's merge request before the base's tag was in the registry
    assert 0 < built_event < first_child_event
    pushed_at = _at(base_push["pushed_at"])
    base_mr = project.mergerequests.get(final.merge_request.iid)
    for child in children.values():
        assert child.merge_request is not None
        opened = _at(project.mergerequests.get(child.merge_request.iid).created_at)
        assert opened >= pushed_at >= _at(base_mr.merged_at), (opened, pushed_at, base_mr.merged_at)

    # one Jira issue: the base's, shared by the dependents' loops, linking every merge request, closed with the chain
    jira = JiraClient(configured(JiraSettings, env))
    assert [i.key for i in jira.jira.search_issues("labels = fixloop", fields="labels")] == [final.issue.key]  # type: ignore[union-attr]
    assert all(child.issue == final.issue for child in children.values())
    assert final.issue is not None and jira.get_issue(final.issue.key).status == "Done"
    linked = {r.object.url for r in jira.jira.remote_links(final.issue.key)}
    source_mrs = [final.merge_request, *(c.merge_request for c in children.values())]
    tag_mrs = [e.merge_request for c in children.values() for e in c.environments]
    assert {m.url for m in [*source_mrs, *tag_mrs] if m is not None} <= linked and len(tag_mrs) == 4
    comments = [c.body for c in jira.jira.comments(final.issue.key)]
    summary = next(c for c in comments if "Base-image chain of base-python" in c)
    lines = [ln.removeprefix("\\") for ln in summary.splitlines() if ln.startswith("\\- ")]  # Jira-escaped list
    assert [ln.split(":", 1)[0] for ln in lines] == ["- base-python", "- legacy-api", "- payments"], summary
    assert "built 2.0.8" in lines[1] and "verified" in lines[1] and "built 1.3.1" in lines[0]
