"""An older reader of a newer worker's status: the ``status`` answers (``LoopState``, ``IntakeStatus``) and the
records the workflows write into them parse with fields they do not know, while the inputs a workflow validates
still refuse them (workflows/contracts, module docs). The statuses are real: the final states recorded in
tests/fixtures/histories, decoded with the pydantic data converter as a client decodes them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from fixloop.workflows.contracts.intake import IntakeState, IntakeStatus
from fixloop.workflows.contracts.loop import Decision, LoopState, RemediationInput
from tests.workflows.histories import HISTORIES


def _result(name: str) -> dict[str, Any]:
    """The JSON of the result a recorded workflow completed with."""
    history = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())
    done = history.events[-1].workflow_execution_completed_event_attributes
    return json.loads(done.result.payloads[0].data)


def _decode(doc: dict[str, Any], kind: type) -> Any:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(doc).encode())
    (value,) = pydantic_data_converter.payload_converter.from_payloads([payload], [kind])
    return value


LOOP = _result("remediation-reverted")  # a loop at its end: evidence, a revert, its verdict
INTAKE = _result("intake-deduplicated")  # an intake's final IntakeState: counters, windows


def _intake_status() -> dict[str, Any]:
    state = IntakeState.model_validate(INTAKE)
    return {
        "scope": "team/gitops",
        "counters": INTAKE["counters"],
        "pending": len(state.pending),
        "remembered": 12,
        "windows": INTAKE["windows"],
        "finishing": True,
    }


def test_a_newer_workers_loop_status_reads_with_its_unknown_fields() -> None:
    doc = json.loads(json.dumps(LOOP))
    doc["rollout_budget"] = {"minutes": 5}  # at the top and in an evidence line
    doc["evidence"][0]["source"] = "gitlab"
    assert doc["evidence"] and doc["revert"] is not None
    state = _decode(doc, LoopState)
    assert state == LoopState.model_validate(LOOP) and state.outcome.value == "reverted"
    assert not hasattr(state, "rollout_budget") and "source" not in state.evidence[0].model_dump()


def test_a_newer_intakes_status_reads_with_its_unknown_fields() -> None:
    doc = _intake_status()
    doc["queued_bytes"] = 1024
    doc["counters"]["paced"] = 3
    doc["windows"][0]["triage_ms"] = 41
    status = _decode(doc, IntakeStatus)
    assert status.counters.received == INTAKE["counters"]["received"] > 0 and status.windows
    assert status == IntakeStatus.model_validate(_intake_status())


_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=5,
)


@settings(max_examples=50)
@given(extra=st.dictionaries(_NAMES, _VALUES, max_size=5))
def test_any_unknown_fields_leave_the_status_as_it_was(extra: dict[str, Any]) -> None:
    known = set(LoopState.model_fields) | set(IntakeStatus.model_fields)
    extra = {k: v for k, v in extra.items() if k not in known}
    assert _decode({**LOOP, **extra}, LoopState) == LoopState.model_validate(LOOP)
    assert _decode({**_intake_status(), **extra}, IntakeStatus) == IntakeStatus.model_validate(_intake_status())


def test_inputs_the_workflow_validates_still_refuse_unknown_fields() -> None:
    """The start input, an update, and a strict activity result inside the status (the merge request as GitLab was
    read: a fact the gate decides on) refuse a field they do not know."""
    start = {"scope": "team/gitops", "work_item": _work_item(), "sneaky": 1}
    with pytest.raises(ValidationError, match="sneaky"):
        RemediationInput.model_validate(start)
    with pytest.raises(ValidationError, match="approved_by"):
        Decision.model_validate({"result": "pass", "by": "alice", "approved_by": "bob"})
    doc = json.loads(json.dumps(LOOP))
    doc["mr_state"]["approvals_required"] = 2
    with pytest.raises(ValidationError, match="approvals_required"):
        LoopState.model_validate(doc)


def _work_item() -> dict[str, Any]:
    """The work item the recorded loop was started with (its start event's input)."""
    history = WorkflowHistory.from_json("r", (HISTORIES / "remediation-reverted.json").read_text())
    started = history.events[0].workflow_execution_started_event_attributes
    return json.loads(started.input.payloads[0].data)["work_item"]
