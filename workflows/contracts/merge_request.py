"""Contracts of the merge-request stages (open, gate, revert, notes): the inputs and outputs of
``fixloop.activities.merge_request`` (on GitLab). The gate's facts (``MergeRequestState``, ``Approval``, ``MrState``,
``UserFacts``) are the core's (``fixloop.core.gate``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.models import WorkItem
from fixloop.workflows.contracts.plan import PlannedChange


class OpenMergeRequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    change: PlannedChange
    jira_key: str | None = None


class MergeRequestRef(BaseModel):
    """``project`` (path with namespace), ``iid`` (the MR number in the project), its web URL, source branch and
    the head commit SHA the MR was opened with.

    ``title``: its title as opened (None: not known, e.g. a ref of a loop started before titles were recorded).

    ``joined``: no MR was opened for this work item because an open fixloop MR of another work item
    (``work_item_id``, Jira issue ``jira_key`` when its description names one) already changes lines of
    ``overlap`` (paths) that this plan changes; the ref is that MR (see
    ``fixloop.activities.merge_request.MergeRequestActivities.open_merge_request``)."""

    model_config = ConfigDict(extra="forbid")

    project: str
    iid: int
    url: str
    branch: str
    head_sha: str
    title: str | None = Field(default=None, max_length=255)
    joined: bool = False
    work_item_id: str | None = Field(default=None, max_length=200)
    jira_key: str | None = Field(default=None, max_length=40)
    overlap: list[str] = Field(default_factory=list, max_length=20)


class MergeRequestStateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    iid: int


class CheckUserInput(BaseModel):
    """The GitLab user a human decision names (``decide --by NAME``)."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=255)


class NoteInput(BaseModel):
    """A comment on merge request ``iid`` of ``project``, posted at most once per ``dedup_key``."""

    model_config = ConfigDict(extra="forbid")

    project: str
    iid: int
    body: str = Field(max_length=32_000)
    dedup_key: str = Field(max_length=300, pattern=r"^[^\n]*$")


class DeleteBranchInput(BaseModel):
    """Delete ``branch`` of ``project``; only fixloop's own branches (``fixloop/...``) are accepted."""

    model_config = ConfigDict(extra="forbid")

    project: str
    branch: str = Field(pattern=r"^fixloop/[A-Za-z0-9._/-]{1,200}$")


class OpenRevertInput(BaseModel):
    """The revert of ``merge_sha`` (the merge commit of ``original``) as a new merge request into the default
    branch, titled as a rollback: ``Revert "<original title>" — <why>`` (``why``: one short line, e.g.
    ``verification failed in staging: error rate +200 %``). ``reason`` (the verdict's summary), ``evidence`` and
    ``metrics`` (one line each: the verdict's evidence, each metric before -> after with its unit) and ``undoes``
    (the original's planned operations) go into its description, with what the revert re-opens (the work item's
    advisories and package bumps) and a link to the original."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    original: MergeRequestRef
    merge_sha: str = Field(pattern=r"^[0-9a-f]{40}$")
    reason: str = Field(max_length=2_000)
    why: str = Field(default="verification failed", max_length=120)
    evidence: list[str] = Field(default_factory=list, max_length=50)
    metrics: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=20)
    undoes: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=20)
    jira_key: str | None = None
    # earlier merge commits reverted in the same merge request after ``merge_sha``, newest first (a promoted
    # image's: the source change behind the tag change), each against its first parent
    also: list[Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]] = Field(default_factory=list, max_length=5)
