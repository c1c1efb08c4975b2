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
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator
from pydantic_core import to_json


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
    FIXLOOP = "fixloop"  # fixloop's own inspection of a repository (``fixloop inspect``: version drift)


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
    DRIFT = "drift"  # a package pinned at several versions across a repository (``fixloop.core.change.drift``)


class Transition(StrEnum):
    """An alert's state change, in Datadog's terms (Alertmanager firing -> triggered, resolved -> recovered)."""

    TRIGGERED = "triggered"
    RECOVERED = "recovered"
    WARN = "warn"
    NO_DATA = "no_data"
    RENOTIFY = "renotify"


# Bounds on untrusted text carried in a signal. Scanner and alert fields are attacker-reachable:
# they are kept short, and never interpreted. ``Signal`` enforces them itself (see its docstring), so no parser
# can hand Temporal an unbounded signal.
TITLE_MAX = 300
SHORT_MAX = 512
RAW_REF_MAX = 4096
TAGS_MAX = 64
TAG_MAX = 200  # characters of one tag: Datadog's own limit (docs.datadoghq.com/getting_started/tagging)
ALIASES_MAX = 32
FIXED_VERSIONS_MAX = 32
# The whole signal, as the Temporal payload converter writes it (pydantic_core.to_json). Temporal refuses a
# payload over 2 MiB; 16 KiB keeps at least 64 worst-case signals in every payload fixloop sends (gateway batches,
# triage inputs), and a typical signal is 0.5-1.5 KiB.
SIGNAL_MAX_BYTES = 16 * 1024

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
      aliases, package, installed_version, fixed_version (the lowest fixed version above the installed one, a
      valid version of the ecosystem: ``fixloop.core.parsing.valid_version``; null when no fix), fixed_versions
      (every fixed version the scanner listed; none when it says the finding is not fixed, as Grype's ``wont-fix``
      does with placeholders listed), fix_status (the scanner's own word: fixed, affected, will_not_fix,
      not-fixed, wont-fix, ...; or fixloop's ``invalid-fix-version`` / ``no-fix-above-installed`` when versions were
      listed and none taken: ``fixloop.core.parsing.resolve_fix``), ecosystem (apk, deb, rpm, npm, pypi, go, maven,
      nuget, ...), artifact (the image or repository scanned), target (the OS or manifest/lockfile inside it),
      purl, location (file:line for misconfigurations, secrets and SAST).

    Alert fields (``kind == "alert"``; ``transition`` required):
      monitor_id (Datadog monitor id; Alertmanager ``alertname``), transition, service, env, tags
      (``key:value`` strings), scope (the alert's group, e.g. ``host:a,env:prod``), alert_cycle_key
      (Datadog ``$ALERT_CYCLE_KEY``; Alertmanager alert fingerprint + ``startsAt``), group_key
      (Datadog ``$AGGREG_KEY``; Alertmanager ``groupKey``).

    Bounds, enforced by the model itself (every parser, and every payload Temporal deserialises, goes through
    them): a text is cut to its limit (title 300 characters, raw_ref 4096, every other text 512; a cut text ends
    with an ellipsis), a list to its count (aliases 32, fixed_versions 32, tags 64 of at most 200 characters each),
    and then the whole signal, as JSON (``pydantic_core.to_json``, what Temporal's pydantic converter writes), to
    ``SIGNAL_MAX_BYTES`` (16 KiB): items are dropped from the end of the largest list, then the largest text is
    shortened. ``truncated`` says what was cut: field -> values cut (list items dropped or shortened, each counted
    once; 1 for a shortened text); empty when nothing was. Cutting never changes the fingerprint (the parser computes
    it from the full values).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    source: Source
    kind: Kind
    title: Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
    severity: Severity
    observed_at: AwareDatetime
    raw_ref: Annotated[str, Field(min_length=1, max_length=RAW_REF_MAX)]
    url: ShortText | None = None
    truncated: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)

    # findings
    category: Category | None = None
    advisory_id: ShortText | None = None
    aliases: Annotated[list[ShortText], Field(max_length=ALIASES_MAX)] = Field(default_factory=list)
    package: ShortText | None = None
    installed_version: ShortText | None = None
    fixed_version: ShortText | None = None
    fixed_versions: Annotated[list[ShortText], Field(max_length=FIXED_VERSIONS_MAX)] = Field(default_factory=list)
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
    tags: Annotated[list[Annotated[str, Field(max_length=TAG_MAX)]], Field(max_length=TAGS_MAX)] = Field(
        default_factory=list
    )
    scope: ShortText | None = None
    alert_cycle_key: ShortText | None = None
    group_key: ShortText | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _bounded(cls, data: Any, handler: ModelWrapValidatorHandler[Signal]) -> Signal:
        """Cut what is over a bound, count it in ``truncated``, then fit the whole signal in ``SIGNAL_MAX_BYTES``."""
        if isinstance(data, Signal):
            return handler(data)
        measure = True
        if isinstance(data, dict):
            data, measure = _bound_fields(data)
        signal = handler(data)
        return _fit(signal, handler) if measure else signal

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
        """The signal as one JSON object (a JSON Lines row): the common fields plus those of its kind
        (``truncated`` only when something was cut)."""
        other = ALERT_FIELDS if self.kind is Kind.FINDING else FINDING_FIELDS
        return self.model_dump_json(exclude=set(other) if self.truncated else {"truncated", *other})


_LIST_LIMITS = {
    "aliases": (ALIASES_MAX, SHORT_MAX),
    "fixed_versions": (FIXED_VERSIONS_MAX, SHORT_MAX),
    "tags": (TAGS_MAX, TAG_MAX),
}
_SHORT_TEXTS = sorted(({"url"} | FINDING_FIELDS | ALERT_FIELDS) - {"category", "transition", *_LIST_LIMITS})
_TEXT_LIMITS = {"title": TITLE_MAX, "raw_ref": RAW_REF_MAX, **dict.fromkeys(_SHORT_TEXTS, SHORT_MAX)}
_TEXT_FLOOR = 16  # characters a text keeps when the whole signal must shrink (title and raw_ref are required)
# JSON bytes of a signal apart from its texts: field names, enums, the time, nulls, ``truncated`` (at most one key
# per text or list field). A JSON character is at most 6 bytes (``\\u001f``), so a signal of at most
# ``_CHARS_UNMEASURED`` characters of text fits without being measured: the common case costs no serialisation.
_OVERHEAD_BYTES = 3 * 1024
_CHARS_UNMEASURED = (SIGNAL_MAX_BYTES - _OVERHEAD_BYTES) // 6


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis (unchanged when it fits)."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"


def _was_cut(text: object, limit: int) -> bool:
    return type(text) is str and len(text) == limit and text.endswith("\u2026")


def _bound_fields(data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``data`` with every text over its limit cut and every list cut to its count and its items to their
    limit, what was cut added to ``truncated`` (the same dict when nothing is over: the common case), and whether
    the result may be over ``SIGNAL_MAX_BYTES`` (it must then be measured)."""
    counts: dict[str, int] = {}
    out: dict[str, Any] | None = None
    chars = 0
    for name, limit in _TEXT_LIMITS.items():
        value = data.get(name)
        if type(value) is str:
            if len(value) > limit:
                out = out if out is not None else dict(data)
                value = out[name] = cut(value, limit)
                counts[name] = 1
            chars += len(value)
    for name, (most, limit) in _LIST_LIMITS.items():
        value = data.get(name)
        if not isinstance(value, list | tuple):
            continue
        if len(value) > most or any(type(v) is str and len(v) > limit for v in value):
            kept = [cut(v, limit) if type(v) is str else v for v in value[:most]]
            out = out if out is not None else dict(data)
            out[name] = kept
            counts[name] = len(value) - len(kept) + sum(1 for a, b in zip(value, kept, strict=False) if a is not b)
            value = kept
        chars += sum(len(v) + 3 for v in value if type(v) is str)  # + quotes and comma, at most 3 bytes each
    if out is not None:
        out["truncated"] = _merged(data.get("truncated"), counts)
    return (data if out is None else out), chars > _CHARS_UNMEASURED


def _merged(before: object, counts: dict[str, int]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(before) if isinstance(before, dict) else {}
    for name, n in counts.items():
        if n:
            merged[name] = (merged.get(name) or 0) + n
    return merged


def _fit(signal: Signal, handler: ModelWrapValidatorHandler[Signal]) -> Signal:
    """``signal`` shrunk until its JSON fits ``SIGNAL_MAX_BYTES``: items are dropped from the end of the largest
    list field (by JSON bytes), or when no list is left, the largest text is shortened (down to ``_TEXT_FLOOR``
    characters), by at least the excess each time; each value cut is counted in ``truncated`` once. Terminates: every
    step shortens a field, and a signal with empty lists and every text at the floor is at most 20 texts x 16
    characters x 6 bytes + ``_OVERHEAD_BYTES``."""
    while (size := len(to_json(signal))) > SIGNAL_MAX_BYTES:
        excess = size - SIGNAL_MAX_BYTES
        data = dict(signal)
        sizes = {name: len(to_json(data[name])) for name in _LIST_LIMITS if data[name]}
        if not sizes:
            texts = (n for n in _TEXT_LIMITS if data[n] is not None and len(data[n]) > _TEXT_FLOOR)
            sizes = {n: len(to_json(data[n])) for n in texts}
        if not sizes:  # unreachable by the arithmetic above; a named error rather than a loop
            raise ValueError(f"signal cannot fit {SIGNAL_MAX_BYTES} bytes")
        name = max(sizes, key=sizes.__getitem__)
        value = data[name]
        if isinstance(value, list):
            most, limit = _LIST_LIMITS[name]
            keep, freed = len(value), 0
            while keep and freed < excess:
                keep -= 1
                freed += len(to_json(value[keep])) + 1
            dropped = value[keep:]
            data[name] = value[:keep]
            counts = {name: len(dropped) - sum(1 for v in dropped if _was_cut(v, limit))}  # cut ones: counted already
        else:
            data[name] = cut(value, max(len(value) - excess - 1, _TEXT_FLOOR))
            counts = {name: 0 if name in signal.truncated else 1}
        data["truncated"] = _merged(data["truncated"], counts)
        signal = handler(data)
    return signal


class SignalTooLarge(ValueError):
    """A signal alone is over a byte budget (impossible for a validated ``Signal`` under a budget of at least
    ``SIGNAL_MAX_BYTES``; raised rather than sending Temporal a payload it refuses). ``index``: its position."""

    def __init__(self, index: int, size: int, budget: int) -> None:
        super().__init__(f"signal {index} is {size} bytes of JSON, over the budget of {budget}")
        self.index = index
        self.size = size
        self.budget = budget


def signal_bytes(signal: Signal) -> int:
    """Bytes of ``signal`` as Temporal's pydantic payload converter writes it (``pydantic_core.to_json``)."""
    return len(to_json(signal))


_MONITOR_ID = re.compile(r"[0-9]{1,18}")


def datadog_monitor_ids(signals: Iterable[Signal]) -> list[int]:
    """The Datadog monitor ids of the Datadog alerts among ``signals`` (a monitor id is 1-18 digits, at least 1),
    sorted, each once. Alertmanager alerts name no monitor to look up."""
    ids = {s.monitor_id for s in signals if s.kind is Kind.ALERT and s.source is Source.DATADOG}
    return sorted({int(m) for m in ids if m and _MONITOR_ID.fullmatch(m) and int(m) >= 1})


LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"  # a Prometheus label name fixloop matches on (at most 100 characters)
_LABEL_NAME = re.compile(LABEL_NAME)
ALERT_LABELS_MAX = 24  # labels of one alert matched on (its identity; the rest are left out)
ALERTS_LOOKED_UP_MAX = 20  # alerts a verification looks up


def alertmanager_alerts(signals: Iterable[Signal]) -> list[dict[str, str]]:
    """The label sets of the Alertmanager alerts among ``signals`` (their ``tags``, ``name:value`` as the webhook
    parser writes every label), to be looked up in Alertmanager's API: each once, in order of appearance, at most
    ``ALERTS_LOOKED_UP_MAX`` sets of at most ``ALERT_LABELS_MAX`` labels, ``alertname`` first. A label whose value
    was cut at parse time (it ends with the ellipsis) or whose name is not a Prometheus label name is left out, so
    the set matches the alert as a subset of its labels; an alert without ``alertname`` is skipped."""
    out: list[dict[str, str]] = []
    for s in signals:
        if s.kind is not Kind.ALERT or s.source is not Source.ALERTMANAGER:
            continue
        labels: dict[str, str] = {}
        for tag in s.tags:
            name, sep, value = tag.partition(":")
            if sep and _LABEL_NAME.fullmatch(name) and not value.endswith("\u2026"):
                labels.setdefault(name, value)
        name = labels.pop("alertname", None) or None
        if name is None:
            continue
        ordered = {"alertname": name, **dict(list(labels.items())[: ALERT_LABELS_MAX - 1])}
        if ordered not in out:
            out.append(ordered)
        if len(out) >= ALERTS_LOOKED_UP_MAX:
            break
    return out


def batched(signals: Sequence[Signal], *, max_bytes: int, max_count: int) -> list[list[Signal]]:
    """``signals`` in order as consecutive batches of at most ``max_count`` signals whose JSON array (brackets and
    commas counted) is at most ``max_bytes`` bytes. Raises ``SignalTooLarge`` for a signal that alone is over."""
    out: list[list[Signal]] = []
    batch: list[Signal] = []
    size = 2
    for i, s in enumerate(signals):
        n = signal_bytes(s) + 1
        if n + 2 > max_bytes:
            raise SignalTooLarge(i, n - 1, max_bytes)
        if batch and (size + n > max_bytes or len(batch) >= max_count):
            out.append(batch)
            batch, size = [], 2
        batch.append(s)
        size += n
    if batch:
        out.append(batch)
    return out


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
    ``deploy_regression`` is an alert attached to a loop that recently deployed the alerting service; ``incident``
    is a storm of alerts correlated on the topology (``fixloop.core.incidents``), for now handled exactly like an
    ``alert_investigation`` (a Jira issue only, no change: ``ALERT_KINDS``, not in ``FIX_KINDS``); ``eol_migration``
    is an image whose OS release line is past its end of life (``fixloop.core.lifecycle``, from endoflife.date): its
    OS findings, moved to a supported line (a base image bump across lines, or a Jira issue naming the target)."""

    OS_REBUILD = "os_rebuild"
    DEPENDENCY_BUMP = "dependency_bump"
    RISK_DIGEST = "risk_digest"
    ALERT_INVESTIGATION = "alert_investigation"
    DEPLOY_REGRESSION = "deploy_regression"
    INCIDENT = "incident"
    EOL_MIGRATION = "eol_migration"


FIX_KINDS = frozenset({WorkItemKind.OS_REBUILD, WorkItemKind.DEPENDENCY_BUMP, WorkItemKind.EOL_MIGRATION})
# the kinds made of alerts (a Jira issue, no merge request; their alerts are owned by their loop)
ALERT_KINDS = frozenset({WorkItemKind.ALERT_INVESTIGATION, WorkItemKind.DEPLOY_REGRESSION, WorkItemKind.INCIDENT})


# How findings with a fix in language packages become ``dependency_bump`` work items (``fixloop.yaml`` ``grouping:``,
# ``fixloop.core.triage.grouping``): one per manifest/lockfile (the default), one per package across every manifest
# and service of the repository (Renovate's default), or one per service holding all its manifests' bumps.
Grouping = Literal["per-manifest", "per-package", "per-service"]
GROUPINGS: tuple[Grouping, ...] = ("per-manifest", "per-package", "per-service")
DEFAULT_GROUPING: Grouping = "per-manifest"


def grouping_of(value: object) -> Grouping:
    """``value`` (``fixloop.yaml``'s ``grouping:``) as a ``Grouping``; None: ``DEFAULT_GROUPING``. Raises
    ``ValueError`` naming the choices for anything else."""
    if value is None:
        return DEFAULT_GROUPING
    for g in GROUPINGS:
        if value == g:
            return g
    shown = str(value)[:40].encode("ascii", "backslashreplace").decode()
    raise ValueError(f"grouping: {shown!r} is not one of {', '.join(GROUPINGS)}")


class PackageBump(BaseModel):
    """One package of a ``dependency_bump``: raised to the lowest version that fixes all its advisories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: ShortText
    ecosystem: ShortText | None = None
    installed_version: ShortText | None = None
    fixed_version: ShortText
    advisories: list[ShortText]


INCIDENT_TEXT_MAX = 300  # characters of one text field of an incident's facts (a name, a metric, an evidence line)
INCIDENT_CANDIDATES_MAX = 3
INCIDENT_EVIDENCE_MAX = 12  # evidence lines of one candidate
INCIDENT_TIMELINE_MAX = 50  # alerts listed in an incident's timeline (the earliest)
INCIDENT_NAMES_MAX = 50  # entities / services / unknown names listed (the rest counted)

IncidentText = Annotated[str, Field(max_length=INCIDENT_TEXT_MAX)]


class RootCauseCandidate(BaseModel):
    """A ranked root-cause candidate of an incident (``fixloop.core.rca.Candidate`` as it travels): ``entity`` (its
    topology id), ``kind`` (``service``, ``instance``, ``host``, ``database``, ``cache``; None: not in the topology),
    ``service`` (the service, database or cache it stands for: itself, an instance's; None for a host), ``score``
    (higher is likelier), ``onset`` (its first alert), ``alerts`` (alerts it explains directly),
    ``evidence`` (lines in words and numbers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity: IncidentText
    kind: IncidentText | None = None
    service: IncidentText | None = None  # the service it stands for (an instance's service; None for a host)
    score: float
    onset: AwareDatetime
    alerts: int = Field(ge=0)
    evidence: list[IncidentText] = Field(default_factory=list, max_length=INCIDENT_EVIDENCE_MAX)


class IncidentTimelineEntry(BaseModel):
    """One alert of an incident: when (``at``), on what (``entity``), which monitor or metric, its title."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime
    entity: IncidentText
    metric: IncidentText
    title: IncidentText
    fingerprint: str = Field(max_length=128)


class IncidentFacts(BaseModel):
    """What correlation and ranking found for an ``incident`` work item (``fixloop.core.incidents``): ``onset`` /
    ``last`` (its first and last alert), ``entities`` / ``services`` / ``unknown`` (not in the topology) with the
    counts of names over ``INCIDENT_NAMES_MAX`` in ``*_more``, the top ``INCIDENT_CANDIDATES_MAX`` ``candidates``,
    best first, the ``timeline`` (the earliest ``INCIDENT_TIMELINE_MAX`` alerts; the rest counted in
    ``timeline_more``). Every text bounded: at most about 60 KB of JSON, by construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    onset: AwareDatetime
    last: AwareDatetime
    entities: list[IncidentText] = Field(default_factory=list, max_length=INCIDENT_NAMES_MAX)
    entities_more: int = 0
    services: list[IncidentText] = Field(default_factory=list, max_length=INCIDENT_NAMES_MAX)
    services_more: int = 0
    unknown: list[IncidentText] = Field(default_factory=list, max_length=INCIDENT_NAMES_MAX)
    unknown_more: int = 0
    candidates: list[RootCauseCandidate] = Field(default_factory=list, max_length=INCIDENT_CANDIDATES_MAX)
    timeline: list[IncidentTimelineEntry] = Field(default_factory=list, max_length=INCIDENT_TIMELINE_MAX)
    timeline_more: int = 0


EOL_TEXT_MAX = 200  # characters of a reason why an end of life is not known
_EOL_PRODUCT = r"^[a-z0-9][a-z0-9.+-]{0,63}$"  # an endoflife.date product id
_EOL_LINE = r"^[A-Za-z0-9][A-Za-z0-9.+ -]{0,39}$"  # a release line as endoflife.date names it (``7``, ``22.04``)
EolLabel = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9 .+-]*$")]


class EndOfLifeTarget(BaseModel):
    """The supported release line an ended one moves to: ``product`` / ``label`` (the same product, or its
    successor: CentOS -> CentOS Stream), ``cycle``, ``codename``, ``eol`` (its own end of life: a date, True, or
    False not announced), ``latest`` (its newest release as endoflife.date names it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product: Annotated[str, Field(pattern=_EOL_PRODUCT)]
    label: EolLabel
    cycle: Annotated[str, Field(pattern=_EOL_LINE)]
    codename: Annotated[str, Field(max_length=60)] | None = None
    eol: date | bool | None = None
    latest: Annotated[str, Field(max_length=60)] | None = None


class EndOfLifeFacts(BaseModel):
    """The release line a scanned image is on and its end of life, as endoflife.date said it on ``checked_on``
    (``fixloop.core.lifecycle.assess``): ``product`` (endoflife.date's id, ``debian``), ``label`` (``Debian``),
    ``release`` (what the scanner found, ``10.8``), ``cycle`` (its line, ``10``) and ``codename``, ``eol`` (a date,
    True without one, False not announced), ``extended`` (the end of extended support: Debian LTS, Ubuntu Pro ESM),
    ``ended`` (``eol`` reached on ``checked_on``), ``target`` (the line to move to; None: none supported), and
    ``missing``: why the end of life is not known (not looked up, endoflife.date unreachable, no such line); then
    ``ended`` is False. ``also``: the image's other line, assessed the same way (its OS line when this is the
    runtime line its reference names, ``python:3.7.10-slim``, or the reverse; its own ``also`` is None). Every text
    bounded: a few hundred bytes of JSON, twice that with ``also``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product: Annotated[str, Field(pattern=_EOL_PRODUCT)]
    label: EolLabel
    release: Annotated[str, Field(min_length=1, max_length=60)]
    checked_on: date
    cycle: Annotated[str, Field(pattern=_EOL_LINE)] | None = None
    codename: Annotated[str, Field(max_length=60)] | None = None
    eol: date | bool | None = None
    extended: date | bool | None = None
    ended: bool = False
    target: EndOfLifeTarget | None = None
    missing: Annotated[str, Field(max_length=EOL_TEXT_MAX)] | None = None
    also: EndOfLifeFacts | None = None

    @model_validator(mode="after")
    def _one_level(self) -> EndOfLifeFacts:
        if self.also is not None and self.also.also is not None:
            raise ValueError("an image's other release line has no other line of its own")
        return self

    @property
    def link(self) -> str:
        """The product's page on endoflife.date."""
        return f"https://endoflife.date/{self.product}"


SEVERITY_ORDER = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO, Severity.UNKNOWN)


class AdvisoryCounts(BaseModel):
    """How many advisories a set of findings holds, by severity: THE counting rule of fixloop, shared by the work
    item's title, its Jira description and its merge request (``advisory_counts``). ``noun`` names what is counted
    (``CVE`` when every one is a CVE id, ``advisory`` for other vulnerabilities, ``finding`` for misconfigurations,
    secrets and SAST results); ``by_severity`` maps a severity to its count (no zero counts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    noun: Literal["CVE", "advisory", "finding"] = "advisory"
    by_severity: dict[Severity, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())

    def severities(self) -> str:
        """``1 critical, 2 medium``: the counts, most severe first (``none`` when empty)."""
        c = self.by_severity
        return ", ".join(f"{c[sev]} {sev.value}" for sev in SEVERITY_ORDER if c.get(sev)) or "none"

    def text(self) -> str:
        """``3 CVEs: 1 critical, 2 medium``."""
        n = self.total
        nouns = {"CVE": "CVEs", "advisory": "advisories", "finding": "findings"}
        return f"{n} {self.noun if n == 1 else nouns[self.noun]}: {self.severities()}"


def advisory_counts(signals: Iterable[Signal]) -> AdvisoryCounts:
    """The advisories of finding ``signals``, each counted once at its highest severity: a vulnerability is its
    ``advisory_id`` (the same advisory on two packages, or reported twice, counts once; one without an id is its
    own), a misconfiguration, secret or SAST result is itself (its rule firing in two places is two findings).
    Alerts are not counted. The noun: ``CVE`` when every vulnerability counted has a ``CVE-`` id, ``finding`` when
    none is a vulnerability, else ``advisory``."""
    worst: dict[str, Severity] = {}
    vulnerabilities = True
    for s in signals:
        if s.kind is not Kind.FINDING:
            continue
        vulnerability = s.category is Category.VULNERABILITY
        vulnerabilities = vulnerabilities and vulnerability
        key = f"a:{s.advisory_id}" if vulnerability and s.advisory_id else f"f:{s.fingerprint}"
        if key not in worst or s.severity.rank > worst[key].rank:
            worst[key] = s.severity
    by_severity: dict[Severity, int] = {}
    for sev in worst.values():
        by_severity[sev] = by_severity.get(sev, 0) + 1
    if not worst or not vulnerabilities:
        noun = "finding" if worst else "advisory"
    else:
        noun = "CVE" if all(k.startswith("a:CVE-") for k in worst) else "advisory"
    ordered = {sev: by_severity[sev] for sev in SEVERITY_ORDER if sev in by_severity}
    return AdvisoryCounts(noun=noun, by_severity=ordered)


# Work item ids: ``<service>-<kind>-<hash>`` (``work_item_id``), or the form of earlier releases, ``wi-`` + 24 hex
# characters, which running loops, their branches and Jira labels still carry.
WORK_ITEM_ID_MAX = 64
ID_HASH_CHARS = 16  # 64 bits of the grouping's SHA-256: loops of one scope, service and kind never collide in practice
_KIND_SLUG_MAX = max(len(k.value) for k in WorkItemKind)  # "alert_investigation"
SERVICE_SLUG_MAX = WORK_ITEM_ID_MAX - ID_HASH_CHARS - _KIND_SLUG_MAX - 2
WORK_ITEM_ID = r"^(wi-[0-9a-f]{24}|[a-z0-9]+(-[a-z0-9]+)*-[0-9a-f]{16})$"
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def service_slug(service: str | None) -> str:
    """``service`` as it appears in ids: folded to ASCII (NFKD, what has no ASCII form dropped), lower case, every
    run of other characters one ``-``, no ``-`` at either end, at most ``SERVICE_SLUG_MAX`` characters; "" for None
    or when nothing is left."""
    if not service:
        return ""
    ascii_ = unicodedata.normalize("NFKD", service).encode("ascii", "ignore").decode()
    return _NOT_SLUG.sub("-", ascii_.lower()).strip("-")[:SERVICE_SLUG_MAX].rstrip("-")


def work_item_id(kind: WorkItemKind, service: str | None, *grouping: str | int | None) -> str:
    """A work item's id, readable and deterministic: ``<service>-<kind>-<hash>`` (``catalog-os-rebuild-3f9a...``),
    ``<kind>-<hash>`` when no service is known (``service_slug`` gives nothing). ``hash``: the first
    ``ID_HASH_CHARS`` hex characters of ``fingerprint("work-item", *grouping)``, so the same grouping gives the same
    id (and the same loop). At most ``WORK_ITEM_ID_MAX`` characters of ``[a-z0-9-]``: a workflow id's, a git
    branch's and a Jira label's charset."""
    digest = fingerprint("work-item", *grouping)[:ID_HASH_CHARS]
    return "-".join(p for p in (service_slug(service), kind.value.replace("_", "-"), digest) if p)


class WorkItem(BaseModel):
    """One fix (or one digest / investigation): the unit a Jira issue and a merge request are opened for.

    id: ``work_item_id``: ``<service>-<kind>-<hash>``, the hash derived from the grouping key only (kind, artifact,
      target, service, monitor, window start), so the same storm delivered twice gives the same ids (and the same
      child workflow ids); ``wi-`` + 24 hex characters in earlier releases (still accepted).
    signals: the fingerprints of the signals it covers (each input signal is in exactly one item or unassigned).
    counts: a finding item's advisories by severity (``advisory_counts``), None for alerts.
    grouping: how a ``dependency_bump`` spans manifests (``Grouping``; its planner locates the package in every
      manifest of the repository, or of its service); None: one manifest (artifact + target).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(max_length=WORK_ITEM_ID_MAX, pattern=WORK_ITEM_ID)]
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
    incident: IncidentFacts | None = None  # an incident's (or an attached regression's) ranked root cause
    counts: AdvisoryCounts | None = None  # a finding item's advisories by severity (``advisory_counts``)
    eol: EndOfLifeFacts | None = None  # the end of life of an OS item's image line (``fixloop.core.lifecycle``)
    # a dependency_bump grouped across manifests (``per-package``: one package everywhere; ``per-service``: one
    # service's manifests); None: one manifest, as every item of earlier releases
    grouping: Grouping | None = None


class Unassigned(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fingerprint: str
    reason: ShortText


ALERT_KEYS_MAX = 500  # (entity, metric) keys of one triage's alerts kept for the alert history
ALERT_KEY_MAX = 300  # characters of one key (``<entity>\x1f<metric>``); a longer one is not remembered


class TriageResult(BaseModel):
    """``{"work_items": [...], "unassigned": [{"fingerprint", "reason"}]}``: every input signal exactly once.
    ``alert_keys``: the ``<entity>\x1f<metric>`` keys of the alerts correlated on a topology (sorted, each once),
    which the intake adds to its alert history (``fixloop.core.incidents.remember``)."""

    model_config = ConfigDict(extra="forbid")

    work_items: list[WorkItem] = Field(default_factory=list)
    unassigned: list[Unassigned] = Field(default_factory=list)
    alert_keys: list[Annotated[str, Field(max_length=ALERT_KEY_MAX)]] = Field(
        default_factory=list, max_length=ALERT_KEYS_MAX
    )


class RecentDeploy(BaseModel):
    """A service a fixloop loop deployed: alerts on it soon after are attached to that loop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    work_item_id: Annotated[str, Field(max_length=64)]
    service: ShortText
    deployed_at: AwareDatetime
