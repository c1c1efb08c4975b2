"""Contracts of the planning stage: the input and output of ``fixloop.activities.plan`` (``change.plan``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.change.facts import ChangeFacts
from fixloop.core.change.images import Delivery, Dependent, ImageSpec
from fixloop.core.change.ops import IncidentOperation, Operation
from fixloop.core.models import Signal, WorkItem
from fixloop.core.verification import VerificationPolicy
from fixloop.workflows.contracts.investigate import CulpritOutput

RULES = "fixloop rules"  # ``PlannedChange.drafted_by`` when no model drafted the merge request text
SERVICES_MAX = 20  # services one planned change names (``PlannedChange.services``); one MR is at most 100 files


class PlanChangeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str  # the GitOps repository, e.g. "platform/gitops"
    work_item: WorkItem
    jira_key: str | None = None
    signals: list[Signal] = Field(default_factory=list)  # the work item's signals (scanned OS, severities, links)


class PlanRemediationInput(BaseModel):
    """Input of ``change.plan_remediation``: an incident work item, its alerts (the start ones and those that joined:
    at most 50 + the start signals, each at most 16 KiB, bounded by the loop's carry), the culprit changes its
    investigation found (``investigate.culprit``), its Jira issue."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    signals: list[Signal] = Field(default_factory=list)
    investigation: CulpritOutput | None = None
    jira_key: str | None = None


class PlannedChange(BaseModel):
    """``located`` False: the fix could not be located (``reason`` says why, for a Jira comment), no MR.
    Otherwise ``operations`` summarise the validated edits (one line each) on ``branch``; ``changes`` are the typed
    operations themselves, planned against commit ``base_sha`` of the default branch, which
    ``gitlab.open_merge_request`` applies again (the edits are not carried: a lockfile can be megabytes). ``title``,
    ``description`` and ``labels`` are the merge request's; ``not_fixable`` and ``risks`` one line each.
    ``drafted_by``: the model that drafted the MR text and chose the operations, or ``fixloop rules`` (no model, or
    its draft was refused: the description says why). ``facts``: what the registries and the repository said of
    the bumped packages and images when it was planned (roles, release dates and links, end of life; at most
    ``fixloop.core.change.facts.FACTS_MAX_BYTES`` of JSON), None for a change that bumps none or was not looked up.
    ``callouts``: what the description says first, as plain text lines (its breaking bumps, and the advisories
    the policy's ``max_jump`` leaves open: ``fixloop.core.change.mr.callouts``), for the Jira issue.
    """

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
    drafted_by: str = RULES
    verification: VerificationPolicy | None = None  # the repository's ``fixloop.yaml`` ``verification:`` at base_sha
    service: str | None = None  # the one service its edited paths belong to (``service_of_paths``), if any
    # every service its edited paths belong to (``services_of_paths``): a bump of one package across several
    # services' manifests (``per-package``) is verified in each of them; empty from earlier workers
    services: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=SERVICES_MAX)
    action: str | None = None  # an incident's remediation (``fixloop.core.remediation.Action``), None for a fix
    remedies: list[IncidentOperation] = Field(default_factory=list, max_length=1)  # an incident's typed operation
    # how the merged change reaches what runs (fixloop.yaml ``images:``/``environments:``): None for a change the
    # chain cannot follow (it builds several images): then the apply of the merge is taken as its deploy
    delivery: Delivery | None = None
    running: bool = False  # change.plan_promotion: the environment's file already sets the tag (at ``base_sha``)
    facts: ChangeFacts | None = None
    callouts: list[Annotated[str, Field(max_length=8_000)]] = Field(default_factory=list, max_length=50)


class PlanPromotionInput(BaseModel):
    """Input of ``change.plan_promotion``: the merge request that sets the tag CI built (``tag``, its ``digest``)
    from ``source_sha`` (the merge commit of ``source`` !iid, the fix) in ``delivery.targets[target]``; ``verdicts``:
    one line per environment verified before (for the description)."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    delivery: Delivery
    target: int = Field(ge=0, le=9)
    tag: str = Field(min_length=1, max_length=128)
    digest: str | None = Field(default=None, max_length=80)
    source_sha: str = Field(pattern=r"^[0-9a-f]{40}$")
    source_iid: int
    verdicts: list[str] = Field(default_factory=list, max_length=10)
    jira_key: str | None = None


class PlanDependentInput(BaseModel):
    """Input of ``change.plan_dependent``: the merge request that rebuilds ``dependent`` FROM ``base``'s ``tag``
    (``digest``), which CI built from ``source_sha`` (the merge commit of the base's merge request !``source_iid``),
    for ``work_item`` (the dependent's, ``fixloop.core.naming.rebuilt_on``)."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    base: ImageSpec
    dependent: Dependent
    tag: str = Field(min_length=1, max_length=128)
    digest: str | None = Field(default=None, max_length=80)
    source_sha: str = Field(pattern=r"^[0-9a-f]{40}$")
    source_iid: int
    jira_key: str | None = None
