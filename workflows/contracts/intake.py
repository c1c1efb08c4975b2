"""Contracts of the IntakeWorkflow (``fixloop.workflows.intake``): its input, options, state (the continue-as-new
carry), ``status`` answer and the signals it takes (``receive``, ``finish``; ``fixing`` and ``deployed`` are
``fixloop.workflows.contracts.loop.OpenFix`` and ``fixloop.core.models.RecentDeploy``).

``IntakeStatus`` and the records in it (``Counters``, ``WindowRecord``) ignore fields they do not know, so an older
reader (``fixloop submit``'s pacing, the demo, the bench) reads a newer intake's status; the input, options, signals
and the continue-as-new carry ``IntakeState`` stay strict (``extra="forbid"``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AwareDatetime, Base64Bytes, BaseModel, ConfigDict, Field

from fixloop.core.culprit import AppliedRevision
from fixloop.core.models import SIGNAL_MAX_BYTES, RecentDeploy, Signal
from fixloop.core.rca import Background
from fixloop.workflows.contracts.loop import LoopOptions

TRIAGE_MAX_BYTES = 512 * 1024  # default signals per triage call, bytes of JSON


class IntakeOptions(BaseModel):
    """Windows, triage chunks, dedup memory and run size of an intake (``timedelta`` as ISO 8601 durations or
    seconds)."""

    model_config = ConfigDict(extra="forbid")

    quiet_period: timedelta = timedelta(minutes=2)
    window_max_age: timedelta = timedelta(minutes=15)
    window_max_signals: int = Field(default=500, ge=1, le=1_000)
    # bytes of signal JSON per triage activity (and per join_alerts / refresh signal): see ``fixloop.workflows.intake``
    triage_max_bytes: int = Field(default=TRIAGE_MAX_BYTES, ge=2 * SIGNAL_MAX_BYTES, le=768 * 1024)
    engine: str = "rules"
    dedup_ttl: timedelta = timedelta(days=7)
    dedup_capacity: int = Field(default=100_000, ge=0, le=120_000)
    max_run_events: int = Field(default=2_000, ge=1)
    loop_options: LoopOptions = Field(default_factory=LoopOptions)
    attach_window: timedelta = timedelta(hours=1)  # alerts this soon after a loop's deploy attach to it
    # alerts this far apart on connected entities of the topology are one incident (triage with a topology)
    incident_window: timedelta = Field(default=timedelta(minutes=15), gt=timedelta(0), le=timedelta(days=1))


class SignalBatch(BaseModel):
    """Signal ``receive``: signals of one delivery (one webhook, one report, or a gateway micro-batch)."""

    model_config = ConfigDict(extra="forbid")

    signals: list[Signal] = Field(max_length=5_000)


class Finish(BaseModel):
    """Signal ``finish``: complete once the open window has been triaged."""

    model_config = ConfigDict(extra="forbid")

    reason: str = "requested"


class WindowRecord(BaseModel):
    """One closed window. Written by the workflow only (in the status and the carry): unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    closed_at: AwareDatetime
    closed_by: str  # "quiet", "age", "size" or "carry" (closed early so that continue-as-new fits one payload)
    signals: int
    work_items: int
    unassigned: int
    loops_started: int
    loops_updated: int


class Counters(BaseModel):
    """``received == new + duplicates``; ``new == assigned + unassigned + pending`` (pending: in the open window, or
    in the window being triaged). Written by the workflow only (in the status and the carry): unknown fields are
    ignored, a newer worker's counters read by an older reader."""

    model_config = ConfigDict(extra="ignore")

    received: int = 0
    new: int = 0
    duplicates: int = 0
    assigned: int = 0
    unassigned: int = 0
    windows: int = 0
    loops_started: int = 0
    loops_updated: int = 0
    refreshes_forwarded: int = 0
    alerts_joined: int = 0  # alerts sent into the open fix loop of their service (counted in ``assigned``)
    undeliverable: int = 0  # work items / refreshes for a loop that could not be signalled (recorded, not lost)
    evicted: int = 0  # fingerprints dropped from the dedup memory (ttl, capacity, or to fit continue-as-new)
    owners_evicted: int = 0  # alert -> loop entries dropped (bound, or to fit continue-as-new): refreshes not forwarded
    triage_calls: int = 0  # triage activities run: a window goes in chunks of at most triage_max_bytes
    runs: int = 1


APPLIED_KEPT = 200  # revisions Flux applied that the intake keeps (the newest): ~90 KB of JSON at most


class FluxApplied(BaseModel):
    """Intake signal ``flux_applied``: revisions Flux reported applied (``ReconciliationSucceeded`` events of the
    configured Kustomization, via the gateway: ``fixloop.integrations.flux.applied_revisions``). The intake keeps
    the newest ``APPLIED_KEPT`` and hands them to each incident loop it starts, for its culprit change."""

    model_config = ConfigDict(extra="forbid")

    revisions: list[AppliedRevision] = Field(max_length=APPLIED_KEPT)


class IntakeState(BaseModel):
    """What continue-as-new carries. ``seen`` is the dedup memory, ``pack_seen`` then zlib (see module doc)."""

    model_config = ConfigDict(extra="forbid")

    seen: Base64Bytes = b""
    pending: list[Signal] = Field(default_factory=list)
    window_opened_at: AwareDatetime | None = None
    last_new_at: AwareDatetime | None = None
    owners: dict[str, str] = Field(default_factory=dict)  # alert fingerprint -> loop workflow id
    open_fixes: dict[str, str] = Field(default_factory=dict)  # service -> loop with an open merge request for it
    recent_deploys: list[RecentDeploy] = Field(default_factory=list)
    alert_history: Background | None = None  # the (entity, metric) keys of past triaged alerts (incidents.remember)
    applied: list[AppliedRevision] = Field(default_factory=list, max_length=APPLIED_KEPT)  # what Flux applied
    counters: Counters = Field(default_factory=Counters)
    windows: list[WindowRecord] = Field(default_factory=list)
    finishing: bool = False


class IntakeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._/-]+$")
    options: IntakeOptions = Field(default_factory=IntakeOptions)
    state: IntakeState | None = None


class IntakeStatus(BaseModel):
    """The ``status`` query's answer. Read by ``fixloop submit`` (pacing), the demo and the bench, possibly older than
    the worker: unknown fields are ignored (``extra="ignore"``), and fields added later have defaults."""

    model_config = ConfigDict(extra="ignore")

    scope: str
    counters: Counters
    pending: int  # signals in the open window
    remembered: int
    windows: list[WindowRecord]
    finishing: bool
    queued: int = 0  # signals delivered by ``receive`` that the run has not taken in yet (it is triaging a window)
    window_max_signals: int | None = None  # the intake's own option (None: a worker from before it was said)

    def untriaged(self) -> int:
        """Signals the intake holds that are not triaged yet: ``queued``, in the open window, or in the window
        being triaged (``counters.new - assigned - unassigned``). What ``fixloop submit`` paces itself on."""
        c = self.counters
        return self.queued + max(c.new - c.assigned - c.unassigned, self.pending)


def intake_id(scope: str) -> str:
    """The workflow id of a scope's intake: ``intake/<scope>``."""
    return f"intake/{scope}"
