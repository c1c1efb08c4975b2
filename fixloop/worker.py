"""The fixloop worker: every workflow and every implemented activity on one task queue.

Activities that hold clients are methods of classes built once here. Activities of external systems whose
implementations have not landed yet (Jira, GitLab, Flux, verification: issues 4-6) are not registered: a loop
reaching them waits in the Temporal UI on "activity not registered" rather than pretending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.triage import TriageActivities
from fixloop.config import LlmSettings
from workflows.intake import IntakeWorkflow
from workflows.remediation import RemediationWorkflow

WORKFLOWS = (IntakeWorkflow, RemediationWorkflow)


def activities(llm: LlmSettings | None = None) -> list[Callable[..., Any]]:
    """The activity callables, built once."""
    triage = TriageActivities(llm)
    return [triage.group_signals]


def build_worker(
    client: Client,
    task_queue: str,
    *,
    extra_activities: Sequence[Callable[..., Any]] = (),
    llm: LlmSettings | None = None,
) -> Worker:
    """A worker for ``task_queue`` running all workflows and activities (plus ``extra_activities``, e.g. test or
    sandbox implementations of the external-system activities)."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[*activities(llm), *extra_activities],
    )
