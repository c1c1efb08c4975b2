"""The loop's texts from untrusted alerts, end to end: RemediationWorkflow on the time-skipping server with the
real Jira activities on the sandbox's Jira (the other stages are ``world.py``'s stand-ins). The joined alerts'
Jira comment (``_report_joined``) and the Temporal UI details (``_show``) carry the alert text inert; a plan on lines
an open MR already changes ends ``joined``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from fixloop.activities import merge_request as gitlab
    from fixloop.core.models import WorkItemKind
    from fixloop.core.parsing import clean
    from fixloop.core.triage import triage_rules
    from fixloop.workflows.contracts.loop import AlertsJoined, LoopOptions, Outcome, RemediationInput, loop_id
    from fixloop.workflows.contracts.merge_request import MergeRequestRef, OpenMergeRequestInput
    from fixloop.workflows.remediation import STATIC_DETAILS_MAX_BYTES, RemediationWorkflow, static_details
    from tests.activities.sandbox_world import World as Sandbox
    from tests.activities.sandbox_world import running_world
    from tests.change.markup_checks import jira_constructs, jira_reads, markdown_constructs
    from tests.conftest import signals
    from tests.workflows.test_intake import ALERT as INTAKE_ALERT
    from tests.workflows.test_intake import _options, _scope, _settle, _start, _worker
    from tests.workflows.world import HEAD, World, approval

SCOPE = "platform/gitops"
ALPINE = "trivy/trivy-0.22-fulldb_alpine-39.json"
PIP = "trivy/trivy-0.22-fulldb_pip.json"
DATADOG = "../../examples/demo/alerts/datadog-catalog-error-rate-triggered.json"
EVIL = "h1. [evil|http://x] [~admin] {html}<script>x</script>{html} !x.png! https://evil.example"
MD_EVIL = "Bump [x](http://y) ![](http://y/i.png) <img src=x> @all"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with running_world(tmp_path / "sandbox") as w:
        yield w


async def test_joined_alerts_reach_jira_inert_and_the_ui_details_are_escaped(
    env: WorkflowEnvironment, task_queue: str, sandbox: Sandbox
) -> None:
    alerts = [a.model_copy(update={"title": EVIL}) for a in signals(DATADOG)]
    item = next(w for w in triage_rules(signals(ALPINE)).work_items if w.kind is WorkItemKind.OS_REBUILD)
    item = item.model_copy(update={"title": MD_EVIL})
    world = World(
        merge_after_polls=2,
        approvals=[approval("alice")],
        joins=[AlertsJoined(signals=alerts)],
        service="catalog",
        client=env.client,
    )
    stand_ins = [a for a in world.activities() if a not in (world.open_work_item, world.comment)]
    real = [sandbox.jira.open_work_item, sandbox.jira.comment]
    wid = f"remediate/{SCOPE}/{item.id}/{uuid.uuid4().hex[:6]}"
    async with Worker(env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=stand_ins + real):
        state = await env.client.execute_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=LoopOptions(search_attributes=False)),
            id=wid,
            task_queue=task_queue,
        )
        metadata = await env.client.get_workflow_handle(wid).query("__temporal_workflow_metadata")

    assert state.outcome is Outcome.VERIFIED and state.issue is not None
    bodies = [c.body for c in sandbox.jira_client.jira.comments(state.issue.key)]
    (joined,) = [b for b in bodies if "joined this work item" in b]
    assert jira_constructs(joined.rsplit("\n\nfixloop-ref: ", 1)[0]) == [], joined
    assert f"\n- {EVIL} (datadog, monitor " in jira_reads(joined)  # readable as the alert said it

    details = metadata["currentDetails"] if isinstance(metadata, dict) else metadata.current_details
    title_line = details.splitlines()[0]
    assert title_line.startswith("**") and title_line.endswith("**")
    assert markdown_constructs(title_line[2:-2]) == [], title_line
    for line in details.splitlines()[1:]:
        assert "](http://y" not in line and "<img" not in line


async def test_a_plan_on_lines_an_open_mr_changes_ends_joined_and_says_so(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """``gitlab.open_merge_request`` answers with the open MR of another work item (``joined``): the loop records
    it, notes the MR, comments on its own Jira issue and on the MR's, links it, and ends ``joined`` without a gate."""
    world = World()

    @activity.defn(name=gitlab.OPEN_MERGE_REQUEST)
    async def joined(inp: OpenMergeRequestInput) -> MergeRequestRef:
        world.calls.append(gitlab.OPEN_MERGE_REQUEST)
        return MergeRequestRef(
            project=inp.scope, iid=3, url="https://gitlab.example.com/team/gitops/-/merge_requests/3",
            branch="fixloop/wi-older", head_sha=HEAD, joined=True, work_item_id="wi-older", jira_key="OPS-9",
            overlap=["services/payments/requirements.txt"],
        )  # fmt: skip

    item = next(w for w in triage_rules(signals(PIP)).work_items if w.kind is WorkItemKind.DEPENDENCY_BUMP)
    acts = [a for a in world.activities() if a != world.open_merge_request] + [joined]
    async with Worker(env.client, task_queue=task_queue, workflows=[RemediationWorkflow], activities=acts):
        state = await env.client.execute_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=LoopOptions(search_attributes=False)),
            id=f"remediate/{SCOPE}/{item.id}/{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
    assert state.outcome is Outcome.JOINED and state.merge_request is not None and state.merge_request.iid == 3
    assert gitlab.MERGE_REQUEST_STATE not in world.calls  # no gate of its own
    (note,) = world.notes
    assert note.iid == 3 and f"fixloop work item {item.id} (Jira OPS-1) also fixes" in note.body
    assert [(c.key, c.labels) for c in world.comments] == [("OPS-1", ["fixloop-joined"]), ("OPS-9", [])]
    assert "merge request !3 (work item wi-older) already changes" in world.comments[0].body
    assert [link.title for link in world.links] == ["Merge request !3 (joined)"]
    assert any("joined merge request !3" in e.text for e in state.evidence)


async def test_a_loop_started_by_the_intake_has_an_inert_ui_summary(env: WorkflowEnvironment, task_queue: str) -> None:
    """The intake starts the loop of an alert whose title is Markdown (a link, an image, HTML, a mention): the
    loop's static summary in the Temporal UI carries it escaped, readable, bounded."""
    alert = signals(INTAKE_ALERT)[0].model_copy(update={"title": MD_EVIL})
    scope = _scope()
    options = _options()
    async with _worker(env.client, task_queue):
        handle = await _start(env.client, task_queue, scope, [alert], options)
        await _settle(env, handle, options.quiet_period * 2)
        (item,) = triage_rules([alert]).work_items
        described = await env.client.get_workflow_handle(loop_id(scope, item.id)).describe()
        summary = await described.static_summary()
        details = await described.static_details()
    assert summary is not None and MD_EVIL[:4] in summary
    assert markdown_constructs(summary) == [], summary
    # its static details: the signals summary, set at the start, every value escaped
    assert details == static_details(item, [alert]), details
    head, blank, *lines = details.splitlines()
    kind = item.kind.value.replace("_", " ")
    assert head == f"**{kind}**, severity {item.severity.value}, 1 signal(s), triaged by rules"
    assert blank == "" and "- signals: 1 datadog alert" in lines
    assert f"- monitor: {item.monitor_id}" in lines and any(line.startswith("- Bump \\[x\\]") for line in lines)
    _inert(details)


def _inert(details: str) -> None:
    """Every line of static details renders no Markdown construct but its own bold head and list markers."""
    head, *lines = details.splitlines()
    assert head.startswith("**") and markdown_constructs(head.replace("**", "", 2)) == [], head
    for line in lines:
        assert markdown_constructs(line.removeprefix("- ")) == [], line
        assert not re.search(r"(?<!\\)\]\(", line) and not re.search(r"(?<!\\)<img", line)  # escaped: inert


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=_TEXT, advisories=st.lists(_TEXT, max_size=200), service=_TEXT, titles=st.lists(_TEXT, max_size=20))
def test_static_details_are_inert_and_bounded_whatever_the_work_item(
    title: str, advisories: list[str], service: str, titles: list[str]
) -> None:
    """Whatever a scanner or an alert put into a work item (Markdown, HTML, mentions, 4-byte characters, hundreds of
    advisories), its static details stay inert Markdown within ``STATIC_DETAILS_MAX_BYTES``."""
    base = signals(DATADOG)[0]
    alerts = [base.model_copy(update={"title": clean(t, 300) or "x"}) for t in titles] or [base]
    (item,) = [w for w in triage_rules(alerts).work_items][:1] or triage_rules([base]).work_items
    item = item.model_copy(
        update={"title": clean(title, 300) or "x", "service": clean(service, 512), "advisories": [
            clean(a, 512) or "x" for a in advisories
        ]}
    )  # fmt: skip
    details = static_details(item, alerts)
    assert len(details.encode()) <= STATIC_DETAILS_MAX_BYTES
    _inert(details)
