"""Jira activities: open the work item's issue, comment (escalations, evidence), close it.

Interfaces (names and input/output models) of stages 1, escalation and 7 of the RemediationWorkflow. Each
activity is idempotent: ``jira.open_work_item`` looks the issue up by the fixloop work-item id (a label) before
creating one, so a retry or a worker crash never opens a second issue. The implementations on the ``jira``
client land with the sandbox and integration issues; until then ``fixloop worker`` does not register them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fixloop.models import WorkItem

OPEN_WORK_ITEM = "jira.open_work_item"
COMMENT = "jira.comment"
CLOSE_WORK_ITEM = "jira.close_work_item"
LINK = "jira.link"


class OpenWorkItemInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem


class IssueRef(BaseModel):
    """A Jira issue: ``key`` (e.g. ``OPS-123``) and its browse URL."""

    model_config = ConfigDict(extra="forbid")

    key: str
    url: str
    created: bool = True  # False when an existing issue for the work item was found


class CommentInput(BaseModel):
    """A comment on ``key``; ``labels`` are added (idempotently) at the same time, e.g. an escalation label.
    ``dedup_key`` makes the comment idempotent: a comment carrying it is posted at most once."""

    model_config = ConfigDict(extra="forbid")

    key: str
    body: str = Field(max_length=32_000)
    labels: list[str] = Field(default_factory=list)
    dedup_key: str


class CloseWorkItemInput(BaseModel):
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


class LinkRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    created: bool  # False when the link was already there
