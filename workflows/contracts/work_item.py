"""Contracts of the work-item stage (stage 1, escalation and 7 of the RemediationWorkflow): the inputs and outputs of
the activities of ``fixloop.activities.work_item`` (on Jira). Texts are plain text, never wiki markup: the activities
escape all of them (``fixloop.core.markup.jira_text`` / ``jira_summary``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.models import WorkItem

FINDINGS_MAX = 50  # findings a digest's issue lists (the rest counted)
FINDING_MAX = 300  # characters of one


class OpenWorkItemInput(BaseModel):
    """``findings``: for a digest (a work item no merge request fixes), the titles of its first ``FINDINGS_MAX``
    signals, most severe first, each at most ``FINDING_MAX`` characters (a digest's issue is all a person gets);
    ``findings_total`` counts them all."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    findings: list[Annotated[str, Field(max_length=FINDING_MAX)]] = Field(default_factory=list, max_length=FINDINGS_MAX)
    findings_total: int = 0


class IssueRef(BaseModel):
    """A Jira issue: ``key`` (e.g. ``OPS-123``) and its browse URL."""

    model_config = ConfigDict(extra="forbid")

    key: str
    url: str
    created: bool = True  # False when an existing issue for the work item was found


class CommentInput(BaseModel):
    """A comment on ``key``; ``labels`` are added (idempotently) at the same time, e.g. an escalation label.
    ``dedup_key`` makes the comment idempotent: a comment carrying it is posted at most once. ``body`` is plain
    text (lines kept), escaped by the activity (``fixloop.core.markup.jira_text``)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    body: str = Field(max_length=32_000)
    labels: list[str] = Field(default_factory=list)
    dedup_key: str


class CloseWorkItemInput(BaseModel):
    """Close ``key`` with ``resolution``; ``comment`` is plain text, escaped by the activity."""

    model_config = ConfigDict(extra="forbid")

    key: str
    resolution: str  # e.g. "done", "won't do"
    comment: str = Field(max_length=32_000)


class LinkInput(BaseModel):
    """A link on issue ``key`` to ``url`` (e.g. the merge request), idempotent by URL (a Jira remote link whose
    ``globalId`` is the URL)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    url: str = Field(max_length=2_000)
    title: str = Field(max_length=255)


class SetStatusInput(BaseModel):
    """Move ``key`` to the status named ``status`` (e.g. ``In Progress`` when the merge request opens, ``To Do``
    when a failed verification reopens the work). ``best_effort``: a workflow without such a transition is
    answered ``False`` instead of failing (teams' Jira workflows differ)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    status: str = Field(max_length=60)
    best_effort: bool = True


class RenameInput(BaseModel):
    """Set the summary of ``key`` to ``summary`` when it is still ``was`` (the one fixloop gave it): a summary a
    person edited is kept. Both plain text, made a Jira summary by the activity (``jira_summary``)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    summary: str = Field(min_length=1, max_length=2_000)
    was: str = Field(max_length=2_000)


class LinkRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    created: bool  # False when the link was already there
