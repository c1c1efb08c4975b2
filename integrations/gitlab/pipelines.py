"""GitLab CI pipelines and jobs: the wire models fixloop reads and the build outcome they mean.

Shapes (GitLab REST v4, docs.gitlab.com/api/pipelines/ and docs.gitlab.com/api/jobs/): ``GET /projects/:id/
pipelines?sha=`` lists the basic pipeline entity (``id``, ``iid``, ``project_id``, ``sha``, ``ref``, ``status``,
``source``, ``created_at``, ``updated_at``, ``web_url``, ``name``); ``GET /projects/:id/pipelines/:pipeline_id`` adds
``before_sha``, ``started_at``, ``finished_at``, ``duration``, ``detailed_status``, ...; ``GET /projects/:id/pipelines/
:pipeline_id/jobs`` lists jobs (``id``, ``name``, ``stage``, ``status``, ``allow_failure``, ``failure_reason`` when
failed, ``web_url``, ...). A pipeline's ``status`` is one of ``created``, ``waiting_for_resource``, ``preparing``,
``pending``, ``running``, ``success``, ``failed``, ``canceled``, ``canceling``, ``skipped``, ``manual``,
``scheduled`` (a job's the same and ``waiting_for_callback``).

Every text field is bounded here (names 255 characters, URLs 2,048), so a model fits a Temporal payload whatever
the server sends.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

MAX_JOBS = 200  # jobs read per pipeline (pipeline_jobs); build_outcome names at most MAX_FAILED of them
MAX_FAILED = 20
RUNNING = frozenset(
    {"created", "waiting_for_resource", "preparing", "pending", "running", "manual", "scheduled", "canceling"}
    | {"waiting_for_callback"}
)
FAILED = frozenset({"failed", "canceled", "skipped"})


def _cut(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda v: None if v is None else str(v)[:limit])


Text = Annotated[str, _cut(255)]
Url = Annotated[str, _cut(2048)]


class Pipeline(BaseModel):
    """A pipeline (the basic entity of the list, or the single pipeline), reduced."""

    id: int
    iid: int | None = None
    project_id: int | None = None
    sha: Text
    ref: Text = ""
    status: Text
    source: Text | None = None
    web_url: Url = ""
    created_at: Text | None = None
    updated_at: Text | None = None
    finished_at: Text | None = None


class PipelineJob(BaseModel):
    """A job of a pipeline, reduced; ``failure_reason`` (``script_failure``, ``runner_system_failure``, ...) is
    set by GitLab for a failed job only."""

    id: int
    name: Text
    stage: Text = ""
    status: Text
    allow_failure: bool = False
    failure_reason: Text | None = None
    web_url: Url = ""


class BuildOutcome(BaseModel):
    """What a pipeline means for the image it builds: ``running`` (not finished: created, pending, running, manual,
    scheduled, ...), ``success``, or ``failed`` (failed, canceled or skipped) with the jobs that failed it (at most
    ``MAX_FAILED`` names, ``failed_jobs_count`` all of them)."""

    state: Literal["running", "success", "failed"]
    status: Text  # the pipeline's own status
    failed_jobs: tuple[Text, ...] = Field(default=(), max_length=MAX_FAILED)
    failed_jobs_count: int = 0


def build_outcome(pipeline: Pipeline, jobs: list[PipelineJob]) -> BuildOutcome:
    """The outcome of ``pipeline`` from its status, and for a failed one the names of its jobs that failed it: the
    ``failed`` jobs that were not ``allow_failure`` (a pipeline canceled or skipped without one: its ``canceled`` /
    ``skipped`` jobs), in the order given. An unknown status counts as running: it has not succeeded."""
    status = pipeline.status
    if status == "success":
        return BuildOutcome(state="success", status=status)
    if status not in FAILED:
        return BuildOutcome(state="running", status=status)
    names = [j.name for j in jobs if j.status == "failed" and not j.allow_failure]
    if not names:
        names = [j.name for j in jobs if j.status in ("canceled", "skipped")]
    unique = list(dict.fromkeys(names))
    return BuildOutcome(
        state="failed", status=status, failed_jobs=tuple(unique[:MAX_FAILED]), failed_jobs_count=len(unique)
    )
