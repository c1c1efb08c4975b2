"""Planning the change of a work item: locate the fix in the GitOps repository and produce typed, validated
edit operations (stage 2). Interface only here; locating, the operations and their validation are issue 5's.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fixloop.change.ops import Operation
from fixloop.models import Signal, WorkItem

PLAN_CHANGE = "change.plan"


class PlanChangeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str  # the GitOps repository, e.g. "platform/gitops"
    work_item: WorkItem
    jira_key: str | None = None
    signals: list[Signal] = Field(default_factory=list)  # the work item's signals (scanned OS, severities, links)


class PlannedChange(BaseModel):
    """``located`` False: the fix could not be located (``reason`` says why, for a Jira comment), no MR.
    Otherwise ``operations`` summarise the validated edits (one line each) on ``branch``; ``changes`` are the typed
    operations themselves, planned against commit ``base_sha`` of the default branch, which
    ``gitlab.open_merge_request`` applies again (the edits are not carried: a lockfile can be megabytes). ``title``,
    ``description`` and ``labels`` are the merge request's; ``not_fixable`` and ``risks`` one line each."""

    model_config = ConfigDict(extra="forbid")

    located: bool
    reason: str | None = None
    branch: str | None = None
    operations: list[str] = Field(default_factory=list)
    base_sha: str | None = None
    changes: list[Operation] = Field(default_factory=list)
    title: str | None = None
    description: str | None = None
    labels: list[str] = Field(default_factory=list)
    not_fixable: list[str] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
