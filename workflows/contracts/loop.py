"""Contracts of the RemediationWorkflow (``fixloop.workflows.remediation``): its input and state (the ``status``
query's answer and the continue-as-new carry), and the signals and updates it takes (``add_signals``, ``refresh``,
``join_alerts``, ``deploy_event``, ``merge_request_event``, ``approve``, ``decide``) and sends the intake
(``fixing``).

Unknown fields: the models a reader of the ``status`` query parses (``LoopState`` and the records the workflow itself
writes into it: ``Evidence``, ``Gate``, ``EnvironmentState``) ignore fields they do not know (``extra="ignore"``), so
an older CLI, demo or bench reads the status of a newer worker. Everything the workflow validates as input stays
``extra="forbid"``: its start input and options, signals and updates (``Decision``, ``MergeRequestEvent``, ...), and
the activity results nested in the state: an unknown field there may be a fact (an approval, a policy, a verdict)
the code would otherwise decide without. A field added to one of those reaches an older reader of the status as an
unknown field too: release the readers first (CONTRIBUTING.md, "Changing a contract")."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from fixloop.core.change.images import Dependent, ImageSpec
from fixloop.core.culprit import AppliedRevision
from fixloop.core.gate import Approval, MergeRequestState, MrState
from fixloop.core.models import Signal, WorkItem
from fixloop.workflows.contracts.build import BuildState
from fixloop.workflows.contracts.deploy import DeployState, RolloutState
from fixloop.workflows.contracts.investigate import CulpritOutput
from fixloop.workflows.contracts.merge_request import MergeRequestRef
from fixloop.workflows.contracts.plan import PlannedChange
from fixloop.workflows.contracts.verify import Verdict
from fixloop.workflows.contracts.work_item import IssueRef

DECISIONS_PENDING_MAX = 10  # decide updates waiting for their check against GitLab


CHAIN_RECORDS_MAX = 50  # a base image's chain: one record per image rebuilt on it (depth > 1 included)
CHAIN_DEPTH_MAX = 4  # a base of a base of ...: dependents beyond this depth are named, not followed


RECOVERED_ALERTS_MAX = 1_100  # an incident's recovered alerts remembered (its start signals and joined alerts: < 1,050)


class Stage(StrEnum):
    OPEN_WORK_ITEM = "open_work_item"
    INVESTIGATE = "investigate"  # an incident: the culprit change of its top candidates (``investigate.culprit``)
    AWAIT_RECOVERY = "await_recovery"  # an incident is open while its alerts fire; later ones on its services join
    PLAN_CHANGE = "plan_change"
    OPEN_MERGE_REQUEST = "open_merge_request"
    AWAIT_APPROVAL = "await_approval"
    AWAIT_BUILD = "await_build"  # a source change: its pipeline, then its image in the registry
    PROMOTE = "promote"  # the built tag into the next environment (a merge request, gated)
    AWAIT_DEPENDENTS = "await_dependents"  # a base image built: its dependents' loops rebuild them on the new tag
    AWAIT_DEPLOY = "await_deploy"
    AWAIT_ROLLOUT = "await_rollout"  # the workload runs the change: rollout complete, no crash loop
    VERIFY = "verify"
    DECIDE = "decide"  # marginal or no data: a human decides (update ``decide``)
    CLOSE = "close"
    DONE = "done"


class Outcome(StrEnum):
    """How a loop ended."""

    TRACKED = "tracked"  # no fix to make (risk digest, investigation): the Jira issue is the deliverable
    RECOVERED = "recovered"  # an incident whose every alert recovered (no change made by fixloop)
    NOT_LOCATED = "not_located"  # the fix could not be located in the repository: explained on Jira
    VERIFIED = "verified"  # deployed and the verdict passed (or a human decided it passed)
    REVERTED = "reverted"  # the verdict failed; the revert merge request was approved, merged and applied
    REVERT_DECLINED = "revert_declined"  # the verdict failed; the revert merge request was closed unmerged
    UNDECIDED = "undecided"  # marginal / no data and nobody decided in time
    MR_CLOSED = "mr_closed"
    APPROVAL_EXPIRED = "approval_expired"
    DEPLOY_FAILED = "deploy_failed"
    DEPLOY_EXPIRED = "deploy_expired"
    JOINED = "joined"  # an open fixloop MR of another work item already changes these lines: recorded, not doubled
    BUILD_FAILED = "build_failed"  # the pipeline of the merged source change failed: nothing new runs
    BUILD_EXPIRED = "build_expired"  # no pipeline, or no image in the registry, in time
    ROLLOUT_STUCK = "rollout_stuck"  # the rollout stalled (not all replicas ready, a crash loop): never verified
    DEPENDENTS_FAILED = "dependents_failed"  # a base image built, but not every dependent rebuilt on it verified


class LoopOptions(BaseModel):
    """Timings of the waits (``timedelta``; JSON as ISO 8601 durations or seconds)."""

    model_config = ConfigDict(extra="forbid")

    poll_interval: timedelta = timedelta(minutes=10)
    approval_escalate_after: timedelta = timedelta(days=2)
    approval_max_escalations: int = Field(default=3, ge=0)
    deploy_escalate_after: timedelta = timedelta(hours=1)
    deploy_max_escalations: int = Field(default=2, ge=0)
    verify_delay: timedelta = timedelta(minutes=2)  # after the window ends, for the metrics to arrive
    decide_escalate_after: timedelta = timedelta(days=1)
    decide_max_escalations: int = Field(default=3, ge=0)
    culprit_lookback: timedelta = Field(default=timedelta(days=1), gt=timedelta(0), le=timedelta(days=30))
    incident_escalate_after: timedelta = timedelta(hours=4)  # an incident's alerts still firing: a Jira comment
    incident_max_escalations: int = Field(default=2, ge=0)  # then one more period, and the loop ends (tracked)
    incident_cooldown: timedelta = timedelta(minutes=30)  # after an incident's fix: its services' alerts still join it
    max_run_events: int = Field(default=5_000, ge=1)  # continue-as-new beyond this (or when the server suggests)
    search_attributes: bool = True  # off only where the server lacks them (the Java test server)


class Evidence(BaseModel):
    """One line of the loop's audit trail. Written by the workflow only: unknown fields are ignored (a newer
    worker's, read by an older reader of the status)."""

    model_config = ConfigDict(extra="ignore")

    at: AwareDatetime
    stage: Stage
    text: str = Field(max_length=2_000)


class Decision(BaseModel):
    """Update ``decide``: a human's verdict on a marginal / no-data verification (``pass`` closes the work item,
    ``fail`` opens the revert merge request). ``by`` is a claim: it counts once GitLab shows a real, active, allowed
    human of that username (not the bot); a refused one is noted and the loop keeps waiting."""

    model_config = ConfigDict(extra="forbid")

    result: Literal["pass", "fail"]
    by: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="", max_length=1_000)


class EnvironmentState(BaseModel):
    """What happened in one environment of the change's delivery (``PlannedChange.delivery.targets``, same order):
    the tag set there and the merge request that set it (None: the change's own merge request), the revision Flux
    applied, the rollout's last verdict, the verification's verdict. Written by the workflow only: unknown fields
    are ignored (its nested activity results, ``MergeRequestRef``, ``RolloutState``, ``Verdict``, stay strict)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=63)
    tag: str | None = Field(default=None, max_length=128)
    merge_request: MergeRequestRef | None = None
    commit: str | None = Field(default=None, max_length=64)  # Flux image automation's: the head that set the tag
    revision: str | None = Field(default=None, max_length=300)
    rollout: RolloutState | None = None
    changed_at: AwareDatetime | None = None  # when Flux applied it (the baseline's end, ``change_start``)
    deployed_at: AwareDatetime | None = None  # when it ran (rollout complete; the after window's start)
    verdict: Verdict | None = None

    def line(self) -> str:
        """One line for Jira, the MR and the UI: ``staging: pass (error rate ...); catalog 1.4.3, rollout complete``."""
        what = f"{self.verdict.result.value} ({self.verdict.summary})" if self.verdict else "not verified"
        bits = [f"tag {self.tag}"] if self.tag else []
        if self.merge_request is not None:
            bits.append(f"!{self.merge_request.iid}")
        if self.rollout is not None:
            bits.append(f"rollout {self.rollout.verdict.state.value}")
        return f"{self.name}: {what}" + (f"; {', '.join(bits)}" if bits else "")


class GateKind(StrEnum):
    """What a merge request at the approval gate is: the fix itself, a built tag into an environment, or the
    revert of a change whose verification failed."""

    CHANGE = "change"
    PROMOTION = "promotion"
    ROLLBACK = "rollback"


class Gate(BaseModel):
    """The merge request waiting at the human gate (``LoopState.gate``; None while nothing waits there): its
    ``kind``, number, web URL and title (as opened; for a rollback ``Revert "<title>" — <why>``), the environment of
    a promotion or of the rollback's failed verdict, and for a rollback the short ``why``. Written by the workflow
    only: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    kind: GateKind
    iid: int
    url: str = Field(max_length=1_000)
    title: str = Field(max_length=255)
    environment: str | None = Field(default=None, max_length=63)
    why: str | None = Field(default=None, max_length=120)

    def label(self) -> str:
        """``rollback gate: Revert "..." — verification failed: error rate +200 %`` (plain text)."""
        return f"{self.kind.value} gate: {self.title}"


class ChainRecord(BaseModel):
    """One image of a base-image chain as the base's loop saw it: ``name`` (``images:``), the ``dockerfile`` that
    FROMs ``base`` at ``from_tag`` (None for the base itself), its loop (the child workflow id), its merge request,
    the tag CI built of it, how its loop ended and a short ``note`` (why it was not started, its environments).
    Written by the workflow only: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=63)
    base: str | None = Field(default=None, max_length=63)
    dockerfile: str | None = Field(default=None, max_length=512)
    from_tag: str | None = Field(default=None, max_length=128)
    loop: str | None = Field(default=None, max_length=1_000)
    merge_request: MergeRequestRef | None = None
    tag: str | None = Field(default=None, max_length=128)
    started: bool = False  # its loop was started (outcome None: still running)
    outcome: Outcome | None = None
    note: str | None = Field(default=None, max_length=600)

    def line(self) -> str:
        """``payments: !14, FROM base-python 1.3.0, built 1.9.2; verified (staging: pass ...)``."""
        bits = [f"!{self.merge_request.iid}"] if self.merge_request is not None else []
        if self.base and self.from_tag:
            bits.append(f"FROM {self.base} {self.from_tag}")
        if self.tag:
            bits.append(f"built {self.tag}")
        what = self.outcome.value if self.outcome is not None else "running" if self.started else "not started"
        head = f"{self.name}: " + (", ".join(bits) + "; " if bits else "")
        return head + what + (f" ({self.note})" if self.note else "")


class LoopState(BaseModel):
    """Everything the loop knows; the ``status`` query's answer and the continue-as-new carry.

    Unknown fields are ignored, not refused (``extra="ignore"``): the CLI, the demo and the bench read this model,
    and one older than the worker must still read its status. As the carry it is written by the workflow itself: an
    older worker taking over a newer one's carry (a rollback) goes on without the fields its code does not know,
    as that code would have anyway. The facts the loop decides on sit in strict models inside it (the merge request
    as read from GitLab, the verdict, the decisions pending), which refuse an unknown field."""

    model_config = ConfigDict(extra="ignore")

    stage: Stage = Stage.OPEN_WORK_ITEM
    outcome: Outcome | None = None
    started_at: AwareDatetime | None = None  # the first run's start (None: a loop started before this was kept)
    issue: IssueRef | None = None
    title: str | None = Field(default=None, max_length=300)  # the work item's title once planning named its service
    investigation: CulpritOutput | None = None  # an incident's culprit changes, per top candidate (rank order)
    plan: PlannedChange | None = None
    merge_request: MergeRequestRef | None = None
    mr_state: MergeRequestState | None = None  # the gate's merge request as last read from the GitLab API
    approvals_seen: dict[str, str | None] = Field(default_factory=dict)  # user id -> head first seen approved at
    decisions_pending: list[Decision] = Field(default_factory=list, max_length=DECISIONS_PENDING_MAX)  # not checked yet
    deploy: DeployState | None = None
    changed_at: AwareDatetime | None = None  # when Flux applied the change (``fixloop.core.verification.change_start``)
    deployed_at: AwareDatetime | None = None  # when it runs: applied, and its rollout complete when one is checked
    verdict: Verdict | None = None
    decision: Decision | None = None
    recovered: list[str] = Field(default_factory=list)  # monitors seen recovering after the deploy
    alerts: list[Signal] = Field(default_factory=list)  # alerts joined while the merge request was open
    fixing_service: str | None = None  # the service the intake was told this loop is fixing (until it ends)
    incident_services: list[str] = Field(default_factory=list, max_length=50)  # an incident's: told to the intake
    recovered_alerts: list[str] = Field(
        default_factory=list, max_length=RECOVERED_ALERTS_MAX
    )  # an incident's alerts that recovered
    revert: MergeRequestRef | None = None  # the revert merge request of a failed verdict (gated again)
    revert_why: str | None = Field(default=None, max_length=120)  # why, in one short line (its title's tail)
    gate: Gate | None = None  # the merge request waiting at the human gate now (change, promotion or rollback)
    source_sha: str | None = None  # the merge commit of a source change (what CI builds the image from)
    build: BuildState | None = None  # a source change's build, as last read
    environments: list[EnvironmentState] = Field(default_factory=list, max_length=10)  # the delivery's, so far
    target: int = 0  # the index of the environment being delivered to (``PlannedChange.delivery.targets``)
    reverted_sha: str | None = None  # the merge commit it reverts
    waiting_since: AwareDatetime | None = None
    escalations: int = 0
    more_signals: int = 0  # signals added after the start (the same work item triaged again)
    refreshed: int = 0  # refreshes of its signals (e.g. an alert's later transition)
    wakes: int = 0  # GitLab hooks that woke the gate (each burst is one read of the merge request)
    wakes_read: int = 0  # the wakes the last completed read (and the gate's decision on it) covers
    evidence: list[Evidence] = Field(default_factory=list)
    chain: list[ChainRecord] = Field(default_factory=list, max_length=CHAIN_RECORDS_MAX)  # a base image's dependents
    runs: int = 1
    alerts_dropped: int = 0  # joined alerts not kept (over the workflow's ALERTS_MAX / _BYTES), counted
    carry_dropped: int = 0  # evidence lines and start signals dropped so that the continue-as-new carry fits


class ChainLink(BaseModel):
    """A loop that rebuilds ``dependent`` FROM ``base``'s new ``tag`` (``digest``), started by the base's loop
    (``parent``, its workflow id; ``source_iid`` and ``source_sha``: the base's merge request and merge commit) at
    ``depth`` (1: a dependent of the first base). Its Jira issue is the chain's: the loop starts with it in its
    state, opens none and leaves it open (the base's loop closes it with one line per image)."""

    model_config = ConfigDict(extra="forbid")

    parent: str = Field(max_length=1_000)
    base: ImageSpec
    tag: str = Field(min_length=1, max_length=128)
    digest: str | None = Field(default=None, max_length=80)
    source_sha: str = Field(pattern=r"^[0-9a-f]{40}$")
    source_iid: int
    dependent: Dependent
    depth: int = Field(default=1, ge=1, le=CHAIN_DEPTH_MAX)


class RemediationInput(BaseModel):
    """The loop's start input (from the intake, a base image's loop (``chain``), or its own continue-as-new).
    Strict (``extra="forbid"``): a field this code does not know (a newer intake's, a misspelled option) is
    refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    signals: list[Signal] = Field(default_factory=list)  # the work item's signals at the start (for planning)
    applied: list[AppliedRevision] = Field(default_factory=list, max_length=200)  # an incident's: what Flux applied
    options: LoopOptions = Field(default_factory=LoopOptions)
    state: LoopState | None = None  # set by continue-as-new (and by a base image's loop: its dependent's start)
    chain: ChainLink | None = None  # a dependent of a base image, rebuilt on its new tag


class MoreSignals(BaseModel):
    """Signal ``add_signals``: the intake triaged new signals into this loop's work item."""

    model_config = ConfigDict(extra="forbid")

    work_item: WorkItem


class Refresh(BaseModel):
    """Signal ``refresh``: signals of this loop seen again (e.g. an alert recovered)."""

    model_config = ConfigDict(extra="forbid")

    signals: list[Signal]


class AlertsJoined(BaseModel):
    """Signal ``join_alerts``: alerts on the service this loop is changing, sent by the intake while the loop's
    merge request is open (before its deploy): they become part of the work item, and its verification requires
    their Datadog monitors to have recovered."""

    model_config = ConfigDict(extra="forbid")

    signals: list[Signal] = Field(max_length=500)


class OpenFix(BaseModel):
    """Intake signal ``fixing``: loop ``loop`` (work item ``work_item_id``) has a merge request open for
    ``service`` (``open``), or has ended (``open`` false). Alerts on that service join the loop meanwhile."""

    model_config = ConfigDict(extra="forbid")

    work_item_id: str
    service: str = Field(min_length=1, max_length=200)
    loop: str
    open: bool = True


class ApprovalEvent(BaseModel):
    """Update ``approve``: a GitLab approval hook (via the gateway). A claim: it only wakes the loop, which reads the
    merge request's approvals from the GitLab API; its validator refuses obvious non-approvals early (a hint)."""

    model_config = ConfigDict(extra="forbid")

    approval: Approval


class MergeRequestEvent(BaseModel):
    """Signal ``merge_request_event``: a GitLab merge request webhook for this loop's merge request (via the
    gateway; ``fixloop.integrations.gitlab.webhook``) with what it claims: ``state`` (opened / merged / closed /
    locked),
    head, and merge commit once merged. A claim: it only wakes the loop (for merge request ``iid``), which reads the
    merge request from the GitLab API. Approvals travel as the ``approve`` update instead."""

    model_config = ConfigDict(extra="forbid")

    iid: int
    state: MrState
    head_sha: str = Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")
    merge_sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class DeployEvent(BaseModel):
    """Signal ``deploy_event``: a Flux notification for this scope (via the gateway)."""

    model_config = ConfigDict(extra="forbid")

    revision: str
    ready: bool
    message: str | None = Field(default=None, max_length=2_000)


def loop_id(scope: str, work_item_id: str) -> str:
    """The readable, deterministic workflow id of a loop: ``remediate/<scope>/<work-item-id>``, e.g.
    ``remediate/platform/gitops/catalog-os-rebuild-3f9a1c2b7d4e5f60`` (the id: ``fixloop.core.models.work_item_id``)."""
    return f"remediate/{scope}/{work_item_id}"
