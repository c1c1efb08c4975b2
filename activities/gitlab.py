"""GitLab activities: open (or update) the merge request of a planned change, and read its state (the poll
fallback of the approval gate). Interfaces here; the ``python-gitlab`` implementation is issue 5's and 6's.

``gitlab.open_merge_request`` is idempotent: the branch is ``fixloop/<work-item-id>``, an open MR from it is
reused. ``gitlab.merge_request_state`` only reads.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from activities.change import PlannedChange
from fixloop.models import WorkItem

OPEN_MERGE_REQUEST = "gitlab.open_merge_request"
MERGE_REQUEST_STATE = "gitlab.merge_request_state"


class OpenMergeRequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    change: PlannedChange
    jira_key: str | None = None


class MergeRequestRef(BaseModel):
    """``project`` (path with namespace), ``iid`` (the MR number in the project), its web URL, source branch and
    the head commit SHA the MR was opened with."""

    model_config = ConfigDict(extra="forbid")

    project: str
    iid: int
    url: str
    branch: str
    head_sha: str


class MrState(StrEnum):
    """GitLab's MR ``state`` values (GitLab API v4, Merge requests)."""

    OPENED = "opened"
    MERGED = "merged"
    CLOSED = "closed"
    LOCKED = "locked"


class Approval(BaseModel):
    """One approval: who (GitLab username), for which head SHA, when; ``bot`` if by fixloop's own user."""

    model_config = ConfigDict(extra="forbid")

    by: str
    sha: str
    at: AwareDatetime | None = None
    bot: bool = False


class MergeRequestState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: MrState
    head_sha: str
    merge_sha: str | None = None  # the merge commit (or squash/fast-forward head) once merged
    merged_at: datetime | None = None
    approvals: list[Approval] = Field(default_factory=list)


class MergeRequestStateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    iid: int
