"""Replay: every recorded history (tests/fixtures/histories, see its README) replays on today's workflow code, so a
change to the commands a running workflow issues cannot reach a worker unnoticed (ARCHITECTURE.md, Style: the
``workflow.patched`` rule). The guard is checked too: a RemediationWorkflow that issues an extra timer, or another
activity, at its start (a subclass registered under the same name, never committed as the workflow) fails replay
with a ``NondeterminismError``; the same extra timer behind ``workflow.patched`` replays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

with workflow.unsafe.imports_passed_through():
    from fixloop.activities import work_item as jira
    from fixloop.workflows import options
    from fixloop.workflows.contracts.loop import LoopState, RemediationInput
    from fixloop.workflows.contracts.work_item import CommentInput
    from fixloop.workflows.intake import IntakeWorkflow
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.workflows.histories import HISTORIES, RECORDED

RECORDINGS = sorted(HISTORIES.glob("*.json"))
REMEDIATION = HISTORIES / "remediation-verified.json"


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def _replayer(*workflows: type) -> Replayer:
    return Replayer(workflows=[IntakeWorkflow, *workflows], data_converter=pydantic_data_converter)


def test_every_listed_history_is_recorded() -> None:
    listed = {f"{name}.json" for names in RECORDED.values() for name in names}
    assert {p.name for p in RECORDINGS} == listed, "run: python -m tests.record_histories"


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
async def test_a_recorded_history_replays_on_this_code(path: Path) -> None:
    history = _history(path)
    kind = "Intake" if path.stem.startswith("intake") else "Remediation"
    started = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
    assert started == f"{kind}Workflow" and len(history.events) >= 5
    result = await _replayer(RemediationWorkflow).replay_workflow(history)
    assert result.replay_failure is None


@workflow.defn(name="RemediationWorkflow")
class TimerFirst(RemediationWorkflow):
    """A non-deterministic change: a one-second timer before the loop's first activity."""

    @workflow.run
    async def run(self, inp: RemediationInput) -> LoopState:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(inp)


@workflow.defn(name="RemediationWorkflow")
class CommentFirst(RemediationWorkflow):
    """A non-deterministic change: another activity (a Jira comment) where the loop opened its Jira issue."""

    @workflow.run
    async def run(self, inp: RemediationInput) -> LoopState:
        return await super().run(inp)

    async def _open_work_item(self) -> None:
        await workflow.execute_activity(
            jira.COMMENT,
            CommentInput(key="OPS-1", body="hello", dedup_key="replay-test"),
            **options.call(options.Call.EXTERNAL, "comment first"),
        )
        await super()._open_work_item()


@workflow.defn(name="RemediationWorkflow")
class PatchedTimerFirst(RemediationWorkflow):
    """``TimerFirst``'s change behind ``workflow.patched``: running loops replay without it, new ones take it."""

    @workflow.run
    async def run(self, inp: RemediationInput) -> LoopState:
        if workflow.patched("replay-test-timer-first"):
            await workflow.sleep(timedelta(seconds=1))
        return await super().run(inp)


@pytest.mark.parametrize("changed", [TimerFirst, CommentFirst], ids=["extra timer", "other activity"])
async def test_a_changed_command_fails_replay_with_a_nondeterminism_error(changed: type) -> None:
    with pytest.raises(workflow.NondeterminismError, match="Nondeterminism error"):
        await _replayer(changed).replay_workflow(_history(REMEDIATION))


async def test_the_same_change_behind_workflow_patched_replays() -> None:
    result = await _replayer(PatchedTimerFirst).replay_workflow(_history(REMEDIATION))
    assert result.replay_failure is None
