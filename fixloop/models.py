"""Domain models every part of fixloop imports: the normalised ``Signal`` and its vocabularies.

A *signal* is one thing a monitor or a scanner said: a *finding* (one advisory on one package
version in one target of one scanned artifact, or one misconfiguration / secret / SAST result)
or an *alert* (one monitor's alert on one scope, in one alert cycle).

The ``fingerprint`` names that thing, not the delivery that carried it: re-delivering a webhook,
re-running a scan of the same artifact, or re-serialising the same report gives the same
fingerprint; an alert's later transition (triggered -> recovered) on the same cycle keeps it too,
so it *refreshes* the signal instead of adding work.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class Source(StrEnum):
    """Where a signal came from (the tool or system, not the transport)."""

    TRIVY = "trivy"
    GITLAB = "gitlab"
    GRYPE = "grype"
    SNYK = "snyk"
    OSV = "osv"
    PIP_AUDIT = "pip-audit"
    DATADOG = "datadog"
    ALERTMANAGER = "alertmanager"


class Kind(StrEnum):
    FINDING = "finding"
    ALERT = "alert"


class Severity(StrEnum):
    """Normalised severity; ``rank`` orders them (critical highest)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.CRITICAL: 5,
    Severity.HIGH: 4,
    Severity.MEDIUM: 3,
    Severity.LOW: 2,
    Severity.INFO: 1,
    Severity.UNKNOWN: 0,
}


class Category(StrEnum):
    VULNERABILITY = "vulnerability"
    MISCONFIGURATION = "misconfiguration"
    SECRET = "secret"
    SAST = "sast"


class Transition(StrEnum):
    """An alert's state change, in Datadog's terms (Alertmanager firing -> triggered, resolved -> recovered)."""

    TRIGGERED = "triggered"
    RECOVERED = "recovered"
    WARN = "warn"
    NO_DATA = "no_data"
    RENOTIFY = "renotify"


# Bounds on untrusted text carried in a signal. Scanner and alert fields are attacker-reachable:
# they are kept short, and never interpreted.
TITLE_MAX = 300
SHORT_MAX = 512
TAGS_MAX = 64

ShortText = Annotated[str, Field(max_length=SHORT_MAX)]

FINDING_FIELDS = frozenset(
    {
        "category",
        "advisory_id",
        "aliases",
        "package",
        "installed_version",
        "fixed_version",
        "fixed_versions",
        "fix_status",
        "ecosystem",
        "artifact",
        "target",
        "purl",
        "location",
    }
)
ALERT_FIELDS = frozenset(
    {"monitor_id", "transition", "service", "env", "tags", "alert_cycle_key", "group_key", "scope"}
)


class Signal(BaseModel):
    """One normalised signal.

    Common fields:
      fingerprint: 32 lowercase hex chars (128 bits of SHA-256 over the identity parts, see ``fingerprint``).
      source, kind, title (<= 300 chars), severity, observed_at (timezone-aware; the report's scan time
      or the alert's event time, else the time fixloop received it), raw_ref (``<file or delivery>#<JSON pointer>``
      to the record inside the original document, for audit), url (the advisory or monitor link, if any).

    Finding fields (``kind == "finding"``; ``category`` required):
      category, advisory_id (CVE/GHSA/vendor id, or the rule id for misconfigurations, secrets and SAST),
      aliases, package, installed_version, fixed_version (the lowest fixed version above the installed one;
      null when no fix), fixed_versions (every fixed version the scanner listed), fix_status (the scanner's
      own word: fixed, affected, will_not_fix, not-fixed, ...), ecosystem (apk, deb, rpm, npm, pypi, go, maven,
      nuget, ...), artifact (the image or repository scanned), target (the OS or manifest/lockfile inside it),
      purl, location (file:line for misconfigurations, secrets and SAST).

    Alert fields (``kind == "alert"``; ``transition`` required):
      monitor_id (Datadog monitor id; Alertmanager ``alertname``), transition, service, env, tags
      (``key:value`` strings), scope (the alert's group, e.g. ``host:a,env:prod``), alert_cycle_key
      (Datadog ``$ALERT_CYCLE_KEY``; Alertmanager alert fingerprint + ``startsAt``), group_key
      (Datadog ``$AGGREG_KEY``; Alertmanager ``groupKey``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    source: Source
    kind: Kind
    title: Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
    severity: Severity
    observed_at: AwareDatetime
    raw_ref: Annotated[str, Field(min_length=1, max_length=4096)]
    url: ShortText | None = None

    # findings
    category: Category | None = None
    advisory_id: ShortText | None = None
    aliases: list[ShortText] = Field(default_factory=list)
    package: ShortText | None = None
    installed_version: ShortText | None = None
    fixed_version: ShortText | None = None
    fixed_versions: list[ShortText] = Field(default_factory=list)
    fix_status: ShortText | None = None
    ecosystem: ShortText | None = None
    artifact: ShortText | None = None
    target: ShortText | None = None
    purl: ShortText | None = None
    location: ShortText | None = None

    # alerts
    monitor_id: ShortText | None = None
    transition: Transition | None = None
    service: ShortText | None = None
    env: ShortText | None = None
    tags: Annotated[list[ShortText], Field(max_length=TAGS_MAX)] = Field(default_factory=list)
    scope: ShortText | None = None
    alert_cycle_key: ShortText | None = None
    group_key: ShortText | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> Signal:
        if self.kind is Kind.FINDING:
            if self.category is None:
                raise ValueError("a finding needs a category")
            if self.transition is not None:
                raise ValueError("a finding has no transition")
        else:
            if self.transition is None:
                raise ValueError("an alert needs a transition")
            if self.category is not None:
                raise ValueError("an alert has no category")
        return self

    def to_json(self) -> str:
        """The signal as one JSON object (a JSON Lines row): the common fields plus those of its kind."""
        other = ALERT_FIELDS if self.kind is Kind.FINDING else FINDING_FIELDS
        return self.model_dump_json(exclude=set(other))


def fingerprint(*parts: str | int | None) -> str:
    """A stable 32-hex-char fingerprint of identity ``parts``: SHA-256 over the parts, each tagged so that
    ``None`` differs from "" and joined by a unit separator; order matters."""
    text = "\x1f".join(["\x00" if p is None else "\x01" + str(p) for p in parts])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def utc(dt: datetime) -> datetime:
    """``dt`` made timezone-aware (a naive time is taken as UTC, as GitLab's ``scan.end_time`` is)."""

    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class WorkItemKind(StrEnum):
    """What a work item asks for. ``os_rebuild`` and ``dependency_bump`` lead to a merge request; ``risk_digest``
    (findings without a fix, misconfigurations, secrets, SAST) and ``alert_investigation`` to a Jira issue only;
    ``deploy_regression`` is an alert attached to a loop that recently deployed the alerting service."""

    OS_REBUILD = "os_rebuild"
    DEPENDENCY_BUMP = "dependency_bump"
    RISK_DIGEST = "risk_digest"
    ALERT_INVESTIGATION = "alert_investigation"
    DEPLOY_REGRESSION = "deploy_regression"


FIX_KINDS = frozenset({WorkItemKind.OS_REBUILD, WorkItemKind.DEPENDENCY_BUMP})


class PackageBump(BaseModel):
    """One package of a ``dependency_bump``: raised to the lowest version that fixes all its advisories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: ShortText
    ecosystem: ShortText | None = None
    installed_version: ShortText | None = None
    fixed_version: ShortText
    advisories: list[ShortText]


class WorkItem(BaseModel):
    """One fix (or one digest / investigation): the unit a Jira issue and a merge request are opened for.

    id: ``wi-`` + 24 hex chars, derived from the grouping key only (kind, artifact, target, service, monitor,
      window start), so the same storm delivered twice gives the same ids (and the same child workflow ids).
    signals: the fingerprints of the signals it covers (each input signal is in exactly one item or unassigned).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=r"^wi-[0-9a-f]{24}$")]
    kind: WorkItemKind
    title: Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
    severity: Severity
    signals: list[str] = Field(min_length=1)
    engine: str = "rules"
    note: ShortText | None = None  # e.g. why the llm engine fell back to rules
    artifact: ShortText | None = None
    target: ShortText | None = None
    ecosystem: ShortText | None = None
    advisories: list[ShortText] = Field(default_factory=list)
    packages: list[PackageBump] = Field(default_factory=list)
    service: ShortText | None = None
    env: ShortText | None = None
    monitor_id: ShortText | None = None
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    attached_to: ShortText | None = None  # the work item whose deploy an alert is attached to


class Unassigned(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fingerprint: str
    reason: ShortText


class TriageResult(BaseModel):
    """``{"work_items": [...], "unassigned": [{"fingerprint", "reason"}]}``: every input signal exactly once."""

    model_config = ConfigDict(extra="forbid")

    work_items: list[WorkItem] = Field(default_factory=list)
    unassigned: list[Unassigned] = Field(default_factory=list)


class RecentDeploy(BaseModel):
    """A service a fixloop loop deployed: alerts on it soon after are attached to that loop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    work_item_id: str
    service: str
    deployed_at: AwareDatetime
