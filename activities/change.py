"""Planning the change of a work item: locate the fix in the GitOps repository and produce typed, validated
edit operations (stage 2). Interface only here; locating, the operations and their validation are issue 5's.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fixloop.models import WorkItem

PLAN_CHANGE = "change.plan"


class PlanChangeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str  # the GitOps repository, e.g. "platform/gitops"
    work_item: WorkItem
    jira_key: str | None = None


class PlannedChange(BaseModel):
    """``located`` False: the fix could not be located (``reason`` says why, for a Jira comment), no MR.
    Otherwise ``operations`` summarise the validated edits (one line each) on ``branch``."""

    model_config = ConfigDict(extra="forbid")

    located: bool
    reason: str | None = None
    branch: str | None = None
    operations: list[str] = Field(default_factory=list)
