"""Recorded workflow histories (``tests/fixtures/histories/*.json``) for the replay test (``test_replay.py``).

A few workflow tests hand the workflow they drove to ``record``: with ``FIXLOOP_RECORD_HISTORIES=1`` in the
environment it writes that run's history there (``WorkflowHandle.fetch_history()`` then ``WorkflowHistory.to_json()``:
the JSON form the Temporal CLI and UI download, ``temporal workflow show --output json``); otherwise it does nothing.
``RECORDED`` names those tests and the histories each writes; ``python -m tests.record_histories`` runs exactly
them with the variable set (see tests/fixtures/histories/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import Client

HISTORIES = Path(__file__).parent.parent / "fixtures" / "histories"
RECORD_VARIABLE = "FIXLOOP_RECORD_HISTORIES"

# test node id (from the repository root) -> the histories it records (file stems under HISTORIES)
RECORDED: dict[str, tuple[str, ...]] = {
    "tests/workflows/test_remediation.py::test_loop_runs_to_a_verified_close": ("remediation-verified",),
    "tests/workflows/test_remediation.py::test_failed_verdict_opens_a_gated_revert": ("remediation-reverted",),
    "tests/workflows/test_every_service.py::test_one_service_failing_fails_the_item_and_one_revert_undoes_it_for_all": (
        "remediation-reverted-in-one-of-two-services",
    ),
    "tests/workflows/test_remediation.py::test_what_the_merge_request_says_first_is_said_on_the_jira_issue": (
        "remediation-callouts",
    ),
    "tests/workflows/test_remediation.py::test_long_wait_continues_as_new_with_its_state": (
        "remediation-continued-as-new-first-run",
        "remediation-continued-as-new-last-run",
    ),
    "tests/workflows/test_incident_loop.py::"
    "test_an_incident_names_its_culprit_change_joins_later_alerts_once_per_batch_and_ends_recovered": (
        "incident-recovered",
    ),
    "tests/workflows/test_incident_loop.py::"
    "test_an_incident_fix_is_gated_deployed_and_verified_by_its_monitors_recovering": ("incident-fix-verified",),
    "tests/workflows/test_base_image_chain.py::test_the_base_is_built_then_each_dependent_loop_rebuilds_on_its_tag": (
        "remediation-base-image-chain",
        "remediation-base-image-dependent",
    ),
    "tests/workflows/test_intake.py::test_redelivered_batch_is_deduplicated": ("intake-deduplicated",),
    "tests/workflows/test_intake.py::test_continue_as_new_keeps_dedup_state": (
        "intake-continued-as-new-first-run",
    ),
    "tests/workflows/test_intake_incidents.py::"
    "test_an_incident_loop_starts_with_the_revisions_flux_applied_before_it": ("intake-incident-with-flux-applied",),
}


def recording() -> bool:
    return os.environ.get(RECORD_VARIABLE) == "1"


async def record(client: Client, workflow_id: str, name: str, run_id: str | None = None) -> None:
    """With ``FIXLOOP_RECORD_HISTORIES=1``: write the history of ``workflow_id``'s run ``run_id`` (None: its latest
    run; a run that continued as new ends with that event) to ``HISTORIES/<name>.json``. ``name`` must be one
    ``RECORDED`` lists (``ValueError`` otherwise, with or without the variable). Does nothing without the variable."""
    if name not in {n for names in RECORDED.values() for n in names}:
        raise ValueError(f"history {name!r} is not listed in RECORDED")
    if not recording():
        return
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json() + "\n")
