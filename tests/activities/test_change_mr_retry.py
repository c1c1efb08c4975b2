"""``gitlab.open_merge_request`` retried after its worker died with the merge request opened, on the sandbox's GitLab
(which lists merge requests by ``source_branch`` in ``state=all`` as GitLab's API v4 does): the loop finds its own
MR again by the source branch in any state and the hidden loop marker its description begins with, so a person's
merge or close in between is kept (no second MR, no branch made again, no commit), while an earlier loop's closed MR
of the same work item does not stop a new loop from opening its own. Run as Temporal runs them: in an activity
context (``ActivityEnvironment``) whose workflow id and run id are the loop's."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment

from fixloop.core.change.mr import read_back
from fixloop.core.gate import MrState
from fixloop.core.models import WorkItem, WorkItemKind
from fixloop.integrations.gitlab.api import LOOP_MARKER_MAX, loop_marker
from fixloop.workflows.contracts.merge_request import MergeRequestRef, OpenMergeRequestInput, OpenRevertInput
from fixloop.workflows.contracts.plan import PlanChangeInput, PlannedChange
from tests.activities.sandbox_world import World
from tests.change.helpers import work_item

SCOPE = "platform/gitops"
RUN = "7d1c3e52-7a0e-4d0c-9a61-5f0b2c8e1a11"


def _loop(item: WorkItem, run: str = RUN) -> ActivityEnvironment:
    """An activity context of the loop of ``item`` (its workflow id), run ``run``."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"remediate/{SCOPE}/{item.id}", workflow_run_id=run)
    return env


async def _planned(w: World, report: str = "trivy/trivy-head_npm.json") -> tuple[WorkItem, PlannedChange]:
    item, signals = work_item(report, WorkItemKind.DEPENDENCY_BUMP)
    planned = await w.change.plan(PlanChangeInput(scope=SCOPE, work_item=item, signals=signals))
    assert planned.located, planned.reason
    return item, planned


async def _open(w: World, env: ActivityEnvironment, item: WorkItem, planned: PlannedChange) -> MergeRequestRef:
    inp = OpenMergeRequestInput(scope=SCOPE, work_item=item, change=planned, jira_key="OPS-1")
    return await env.run(w.gitlab.open_merge_request, inp)


def _of_branch(w: World, branch: str) -> list[Any]:
    """Every MR of ``branch`` as GitLab lists them (``state=all``), newest first."""
    return w.project().mergerequests.list(source_branch=branch, state="all", get_all=True)


def _merge(w: World, mr: MergeRequestRef) -> None:
    reviewer = w.project(w.reviewer_token).mergerequests.get(mr.iid)
    reviewer.approve(sha=mr.head_sha)
    reviewer.merge(sha=mr.head_sha)


async def test_the_loop_marks_its_merge_request_hidden_and_keeps_the_machine_block(world: World) -> None:
    item, planned = await _planned(world)
    mr = await _open(world, _loop(item), item, planned)
    description = world.bot.get_merge_request(mr.iid).description
    marker = f"<!-- fixloop:loop=remediate/{SCOPE}/{item.id} run={RUN} -->"
    assert description.splitlines()[0] == marker and description.count("fixloop:loop=") == 1
    assert description.removeprefix(marker + "\n") == planned.description
    block = read_back(description)  # fixloop's machine-readable block still ends it
    assert block is not None and block.get("work_item") == item.id


async def test_a_retry_after_a_person_merged_the_mr_returns_it_and_opens_no_second(world: World) -> None:
    item, planned = await _planned(world)
    env = _loop(item)
    mr = await _open(world, env, item, planned)  # the worker dies here, before Temporal records the result
    _merge(world, mr)
    main = world.bot.branch_head("main")
    assert world.bot.branch_head(mr.branch) is None  # GitLab removed the merged source branch

    again = await _open(world, env, item, planned)  # Temporal's retry of the same activity

    assert (again.iid, again.url, again.branch, again.head_sha, again.title) == (
        mr.iid, mr.url, mr.branch, mr.head_sha, mr.title
    )  # fmt: skip
    assert [m.iid for m in _of_branch(world, mr.branch)] == [mr.iid]
    assert world.bot.branch_head(mr.branch) is None and world.bot.branch_head("main") == main  # nothing pushed
    assert world.bot.get_merge_request(mr.iid).state == MrState.MERGED.value


async def test_a_retry_after_a_person_closed_the_mr_returns_it_closed(world: World) -> None:
    item, planned = await _planned(world)
    env = _loop(item)
    mr = await _open(world, env, item, planned)
    closing = world.project(world.reviewer_token).mergerequests.get(mr.iid)
    closing.state_event = "close"
    closing.save()
    head = world.bot.branch_head(mr.branch)

    again = await _open(world, env, item, planned)

    assert again.iid == mr.iid and [m.iid for m in _of_branch(world, mr.branch)] == [mr.iid]
    assert world.bot.get_merge_request(mr.iid).state == MrState.CLOSED.value  # not reopened
    assert world.bot.branch_head(mr.branch) == head  # no commit


async def test_an_earlier_loops_closed_mr_of_the_work_item_does_not_stop_a_new_loop(world: World) -> None:
    """The same work item in a new loop (a later run, e.g. the finding back after its MR was declined): the closed MR
    carries the earlier run's marker, so the new loop opens its own; a retry of the new loop finds that one."""
    item, planned = await _planned(world)
    first = await _open(world, _loop(item), item, planned)
    closing = world.project(world.reviewer_token).mergerequests.get(first.iid)
    closing.state_event = "close"
    closing.save()

    later = _loop(item, run="0b9a4f6e-3c1d-4e2f-8a7b-6c5d4e3f2a1b")
    second = await _open(world, later, item, planned)
    assert second.iid != first.iid
    assert world.bot.get_merge_request(second.iid).state == MrState.OPENED.value
    assert "run=0b9a4f6e-3c1d-4e2f-8a7b-6c5d4e3f2a1b -->" in world.bot.get_merge_request(second.iid).description
    assert await _open(world, later, item, planned) == second  # its own retry: the same, still open
    assert sorted(m.iid for m in _of_branch(world, planned.branch or "")) == sorted([first.iid, second.iid])


async def test_an_open_mr_of_the_branch_is_taken_over_and_marked(world: World) -> None:
    """An open MR of the branch opened without a marker (by a worker before markers, or by hand from the branch)
    is still the one MR of the branch: a loop adopts it and marks its description."""
    item, planned = await _planned(world)
    unmarked = await world.gitlab.open_merge_request(  # outside an activity: no marker
        OpenMergeRequestInput(scope=SCOPE, work_item=item, change=planned, jira_key="OPS-1")
    )
    assert not world.bot.get_merge_request(unmarked.iid).description.startswith("<!--")
    adopted = await _open(world, _loop(item), item, planned)
    assert adopted == unmarked
    assert world.bot.get_merge_request(unmarked.iid).description.startswith("<!-- fixloop:loop=")


async def test_a_retried_revert_after_a_person_merged_it_returns_that_revert(world: World) -> None:
    item, planned = await _planned(world)
    env = _loop(item)
    mr = await _open(world, env, item, planned)
    _merge(world, mr)
    merge_sha = world.bot.get_merge_request(mr.iid).merged_commit_sha
    assert merge_sha
    why = "verification failed"
    ask = OpenRevertInput(scope=SCOPE, work_item=item, original=mr, merge_sha=merge_sha, why=why, reason=why)
    revert = await env.run(world.gitlab.open_revert_merge_request, ask)
    _merge(world, revert)
    again = await env.run(world.gitlab.open_revert_merge_request, ask)
    assert again.iid == revert.iid and [m.iid for m in _of_branch(world, revert.branch)] == [revert.iid]
    assert world.bot.get_merge_request(revert.iid).state == MrState.MERGED.value


@given(workflow_id=st.text(max_size=600), run_id=st.text(max_size=60))
def test_a_loop_marker_is_one_bounded_hidden_comment_whatever_the_ids(workflow_id: str, run_id: str) -> None:
    marker = loop_marker(workflow_id, run_id)
    assert marker.startswith("<!-- fixloop:loop=") and marker.endswith(" -->") and len(marker) <= LOOP_MARKER_MAX
    assert marker.count("-->") == 1 and "\n" not in marker and marker.count(" run=") == 1
    assert loop_marker(workflow_id, run_id + "x") != marker  # the run (up to 64 characters) always fits whole


def test_the_marker_of_a_real_loop_is_its_ids() -> None:
    wid = "remediate/platform/gitops/catalog-os-rebuild-3f9a1c2b7d4e5f60"
    assert loop_marker(wid, RUN) == f"<!-- fixloop:loop={wid} run={RUN} -->"
