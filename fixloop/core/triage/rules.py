"""The ``rules`` triage engine: deterministic, the embedded default and the safety net (``fixloop.core.triage``).

  - vulnerability findings with a fix in OS packages (apk, deb, rpm; or of no known ecosystem in a scanned image)
    -> one ``os_rebuild`` per scanned image (rebuild on a patched base image);
  - vulnerability findings with a fix in language packages -> one ``dependency_bump`` per manifest/lockfile
    (artifact + target), each package raised to the lowest version that fixes all its advisories; or, by the
    repository's ``grouping`` (``fixloop.core.triage.grouping``), one per package across every artifact and
    manifest (``per-package``, one version everywhere) or one per service (``per-service``);
  - vulnerability findings without a fix -> one ``risk_digest`` per image (OS) or manifest (language), no MR;
  - misconfigurations, secrets, SAST results -> one ``risk_digest`` per scanned artifact and category;
  - findings the scanner itself marks ``not_affected`` -> unassigned, with that reason;
  - alerts -> ``alert_investigation`` per (service, monitor) and time window (a new window when an alert comes
    more than ``alert_window`` after the window's first one); an alert on a service a fixloop loop deployed
    within ``attach_window`` before it -> ``deploy_regression`` attached to that loop's work item;
  - with a ``topology`` that has entities (``fixloop.core.topology``, e.g. fixloop.yaml's ``topology:`` section),
    the alerts that are not deploy regressions are correlated instead (``fixloop.core.incidents.correlate`` with
    ``window=incident_window``): one ``incident`` work item per group (alerts on connected entities within the
    window; an alert on an entity the topology does not know is its own group, tracked, never dropped). Without a
    topology (None or no entities) the result is exactly the per-(service, monitor, window) one above.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from fixloop.core.lifecycle import Lifecycles
from fixloop.core.models import (
    TITLE_MAX,
    Category,
    EndOfLifeFacts,
    Grouping,
    Kind,
    PackageBump,
    RecentDeploy,
    Severity,
    Signal,
    TriageResult,
    Unassigned,
    WorkItem,
    WorkItemKind,
    advisory_counts,
    work_item_id,
)
from fixloop.core.naming import finding_title
from fixloop.core.parsing import clean, highest_version, title
from fixloop.core.rca import Background
from fixloop.core.service import ServiceNames
from fixloop.core.topology import Topology
from fixloop.core.triage.grouping import DEFAULT_GROUPING, bump_key, one_version

OS_ECOSYSTEMS = frozenset({"apk", "deb", "rpm"})
DEFAULT_ALERT_WINDOW = timedelta(hours=1)
DEFAULT_ATTACH_WINDOW = timedelta(hours=1)
DEFAULT_INCIDENT_WINDOW = timedelta(minutes=15)
_NOT_FINDINGS = frozenset({"not_affected", "not-affected"})

GroupKey = tuple[WorkItemKind, str | None, str | None, str | None]
Assessed = dict[str, tuple[EndOfLifeFacts, frozenset[str]]]  # image -> its end of life and its OS findings


def triage_rules(
    signals: Iterable[Signal],
    *,
    recent_deploys: Sequence[RecentDeploy] = (),
    alert_window: timedelta = DEFAULT_ALERT_WINDOW,
    attach_window: timedelta = DEFAULT_ATTACH_WINDOW,
    topology: Topology | None = None,
    incident_window: timedelta = DEFAULT_INCIDENT_WINDOW,
    background: Background | None = None,
    names: ServiceNames | None = None,
    lifecycles: Lifecycles | None = None,
    grouping: Grouping = DEFAULT_GROUPING,
) -> TriageResult:
    """The ``rules`` engine (see module doc). ``background``: the alert history incidents are ranked with
    (``fixloop.core.rca.Background``); with a topology the result's ``alert_keys`` are the correlated alerts'.
    ``names``: what names a finding item's service from its scanned artifact (``ServiceNames``; None: the
    topology's services only); the service is in the item's id and title, else the artifact is. ``lifecycles``:
    endoflife.date's answers (``fixloop.core.lifecycle``): an image on an ended OS line gets one ``eol_migration``
    instead of its OS items (``fixloop.core.triage.eol``); None: no end of life is checked. ``grouping``: which
    bumps share a work item (``fixloop.core.triage.grouping``). A fingerprint given more than once counts once (the
    latest observation wins), as intake's dedup does. Raises ``ValueError`` (from ``incidents.correlate``) for more
    than ``fixloop.core.incidents.MAX_ALERTS`` alerts to correlate."""
    findings, alerts, unassigned = _partition(signals)
    if names is None:
        names = ServiceNames.of(topology)
    eol_items, findings, assessed = _eol(findings, lifecycles, names)
    groups: dict[GroupKey, list[Signal]] = defaultdict(list)
    for s in findings:
        groups[_finding_key(s, grouping, names)].append(s)
    items = [_finding_item(key, members, names, grouping) for key, members in groups.items()]
    alerts, incident_items, keys = correlated(
        alerts, recent_deploys, attach_window, topology, incident_window, background
    )
    items += _alert_items(alerts, recent_deploys, alert_window, attach_window) + incident_items + eol_items
    return _result(_annotated(items, assessed), unassigned, keys)


def _eol(
    findings: list[Signal], lifecycles: Lifecycles | None, names: ServiceNames
) -> tuple[list[WorkItem], list[Signal], Assessed]:
    """(the end-of-life migrations of ``findings``, the findings left, every assessed image:
    ``fixloop.core.triage.eol.migrations``); without ``lifecycles`` none, and every finding left. Shared with the
    ``llm`` engine."""
    if lifecycles is None:
        return [], findings, {}
    from fixloop.core.triage import eol  # eol imports this module (os_level)

    return eol.migrations(findings, lifecycles, names)


def _annotated(items: list[WorkItem], assessed: Assessed) -> list[WorkItem]:
    if not assessed:
        return items
    from fixloop.core.triage import eol

    return eol.annotate(items, assessed)


def correlated(
    alerts: list[Signal],
    recent_deploys: Sequence[RecentDeploy],
    attach_window: timedelta,
    topology: Topology | None,
    incident_window: timedelta,
    background: Background | None = None,
) -> tuple[list[Signal], list[WorkItem], list[str]]:
    """The incident correlation both engines share: with a ``topology`` that has entities, the alerts that are not
    deploy regressions (``deploy_for``) become ``incident`` work items (``fixloop.core.incidents.correlate`` with
    ``window=incident_window``, ranked with the alert history ``background``, one per group); returns (the alerts
    left to group per monitor and window, those items, the correlated alerts' history keys,
    ``incidents.alert_keys``). Without a topology (None or no entities): (every alert, [], []). Raises
    ``ValueError`` (from ``correlate``) for more than ``fixloop.core.incidents.MAX_ALERTS`` alerts to correlate."""
    if topology is None or not topology.entities:
        return alerts, [], []
    from fixloop.core import incidents  # incidents imports this module (deploy_for)

    regressions: list[Signal] = []
    others: list[Signal] = []
    for a in alerts:
        (regressions if deploy_for(a, recent_deploys, attach_window) else others).append(a)
    found = incidents.correlate(others, topology, window=incident_window, background=background)
    return regressions, [incidents.work_item(g) for g in found], incidents.alert_keys(others, topology)


def _partition(signals: Iterable[Signal]) -> tuple[list[Signal], list[Signal], list[Unassigned]]:
    """Deduplicated ``signals`` (a fingerprint given more than once counts once, the latest observation wins)
    split into findings to triage, alerts, and what needs no work (findings the scanner marks not affected)."""
    unique: dict[str, Signal] = {}
    for s in signals:
        prev = unique.get(s.fingerprint)
        if prev is None or s.observed_at >= prev.observed_at:
            unique[s.fingerprint] = s
    findings: list[Signal] = []
    alerts: list[Signal] = []
    unassigned: list[Unassigned] = []
    for s in unique.values():
        if s.kind is Kind.ALERT:
            alerts.append(s)
        elif (s.fix_status or "").lower() in _NOT_FINDINGS:
            unassigned.append(Unassigned(fingerprint=s.fingerprint, reason="the scanner reports it not affected"))
        else:
            findings.append(s)
    return findings, alerts, unassigned


def _result(items: list[WorkItem], unassigned: list[Unassigned], alert_keys: list[str] | None = None) -> TriageResult:
    items.sort(key=lambda w: (w.kind.value, -w.severity.rank, w.title, w.id))
    return TriageResult(
        work_items=items, unassigned=sorted(unassigned, key=lambda u: u.fingerprint), alert_keys=alert_keys or []
    )


def os_level(s: Signal) -> bool:
    """Whether a vulnerability is fixed by rebuilding the image: an OS package (apk, deb, rpm), or a package of
    no known ecosystem found in a scanned image (a static binary)."""
    return s.ecosystem in OS_ECOSYSTEMS or (s.ecosystem in (None, "generic") and s.artifact is not None)


def _finding_key(s: Signal, grouping: Grouping = DEFAULT_GROUPING, names: ServiceNames | None = None) -> GroupKey:
    """The work item ``s`` belongs to: (kind, artifact, target, detail). ``detail``: a digest's category, or the
    ``bump_key`` of a ``dependency_bump`` that spans manifests (``per-package``, ``per-service``), else None."""
    if s.category is Category.VULNERABILITY:
        image = s.artifact or s.target
        if s.fixed_version:
            if os_level(s):
                return (WorkItemKind.OS_REBUILD, image, None, None)
            key = bump_key(s, grouping, names)
            if key[0] != "manifest":
                return (WorkItemKind.DEPENDENCY_BUMP, None, None, "\x1f".join(str(p) for p in key))
            return (WorkItemKind.DEPENDENCY_BUMP, s.artifact, s.target, None)
        if os_level(s):
            return (WorkItemKind.RISK_DIGEST, image, None, "vulnerability")
        return (WorkItemKind.RISK_DIGEST, s.artifact, s.target, "vulnerability")
    category = s.category.value if s.category else "finding"
    return (WorkItemKind.RISK_DIGEST, s.artifact or s.target, None, category)


def _severity(members: Sequence[Signal]) -> Severity:
    return max((s.severity for s in members), key=lambda sev: sev.rank)


def _advisories(members: Sequence[Signal]) -> list[str]:
    return sorted({s.advisory_id for s in members if s.advisory_id})


def _finding_item(
    key: GroupKey, members: list[Signal], names: ServiceNames | None = None, grouping: Grouping = DEFAULT_GROUPING
) -> WorkItem:
    kind, where, target, category = key
    members.sort(key=lambda s: s.fingerprint)
    packages = _package_bumps(members) if kind is WorkItemKind.DEPENDENCY_BUMP else []
    ecosystems = sorted({s.ecosystem for s in members if s.ecosystem})
    counts = advisory_counts(members)
    spans = grouping if kind is WorkItemKind.DEPENDENCY_BUMP and category is not None else None
    artifact = where if kind is not WorkItemKind.DEPENDENCY_BUMP else members[0].artifact
    shown = target
    if spans is not None:  # per-package / per-service: one version per package; the one artifact, target, if any
        packages = one_version(packages)
        artifact, shown = _only(s.artifact for s in members), _only(s.target for s in members)
        # per-service: its service; per-package: none yet (its planner looks in every service's manifests)
        if spans == "per-service" and names is not None:
            service = _only(names.of_artifact(s.artifact, s.target) for s in members)
        else:
            service = None
    else:
        service = names.of_artifact(where, target) if names is not None else None
    text = finding_title(
        kind,
        counts,
        service=service,
        artifact=where if spans is None else artifact,
        target=shown,
        packages=packages,
        category=category,
        grouping=spans,
    )
    return WorkItem(
        id=work_item_id(kind, service, kind.value, where, target, category),
        kind=kind,
        title=text,
        severity=_severity(members),
        signals=[s.fingerprint for s in members],
        artifact=artifact,
        target=shown,
        ecosystem=ecosystems[0] if len(ecosystems) == 1 else None,
        advisories=_advisories(members),
        packages=packages,
        service=service,
        counts=counts,
        grouping=spans,
    )


def _only(values: Iterable[str | None]) -> str | None:
    """The value when all are the same, else None."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _package_bumps(members: list[Signal]) -> list[PackageBump]:
    by_package: dict[tuple[str, str | None, str | None], list[Signal]] = defaultdict(list)
    for s in members:
        by_package[(s.package or "?", s.ecosystem, s.installed_version)].append(s)
    bumps = []
    for (package, eco, installed), sigs in sorted(by_package.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        fixed = highest_version(eco, [s.fixed_version for s in sigs if s.fixed_version])
        bumps.append(
            PackageBump(
                package=package,
                ecosystem=eco,
                installed_version=installed,
                fixed_version=fixed or "?",
                advisories=_advisories(sigs),
            )
        )
    return bumps


def _alert_items(
    alerts: list[Signal],
    recent_deploys: Sequence[RecentDeploy],
    alert_window: timedelta,
    attach_window: timedelta,
) -> list[WorkItem]:
    streams: dict[tuple[str | None, str | None, str | None], list[Signal]] = defaultdict(list)
    for a in alerts:
        deploy = deploy_for(a, recent_deploys, attach_window)
        monitor = a.monitor_id or clean(a.title, 120).lower()
        streams[(deploy.work_item_id if deploy else None, a.service, monitor)].append(a)
    items: list[WorkItem] = []
    for (attached, service, monitor), stream in streams.items():
        stream.sort(key=lambda s: (s.observed_at, s.fingerprint))
        window: list[Signal] = []
        for a in stream:
            if window and a.observed_at - window[0].observed_at > alert_window:
                items.append(_alert_item(window, attached, service, monitor))
                window = []
            window.append(a)
        if window:
            items.append(_alert_item(window, attached, service, monitor))
    return items


def deploy_for(a: Signal, deploys: Sequence[RecentDeploy], attach_window: timedelta) -> RecentDeploy | None:
    """The latest fixloop deploy of ``a``'s service at most ``attach_window`` before the alert (at or before its
    ``observed_at``), else None (also for an alert without a service). Shared with ``fixloop.core.incidents``."""
    if not a.service:
        return None
    candidates = [
        d for d in deploys if d.service == a.service and timedelta(0) <= a.observed_at - d.deployed_at <= attach_window
    ]
    return max(candidates, key=lambda d: d.deployed_at, default=None)


def _alert_item(window: list[Signal], attached: str | None, service: str | None, monitor: str | None) -> WorkItem:
    start: datetime = window[0].observed_at
    first = window[0]
    kind = WorkItemKind.DEPLOY_REGRESSION if attached else WorkItemKind.ALERT_INVESTIGATION
    subject = first.title
    where = f" on {service}" if service else ""
    if attached:
        text = f"Regression after deploy of {attached}{where}: {subject} ({len(window)} alerts)"
    else:
        text = f"Investigate {subject}{where} ({len(window)} alerts)"
    envs = sorted({a.env for a in window if a.env})
    return WorkItem(
        id=work_item_id(kind, service, kind.value, attached, service, monitor, start.isoformat()),
        kind=kind,
        title=title(text, TITLE_MAX),
        severity=_severity(window),
        signals=[a.fingerprint for a in window],
        service=service,
        env=envs[0] if len(envs) == 1 else None,
        monitor_id=first.monitor_id,
        window_start=start,
        window_end=window[-1].observed_at,
        attached_to=attached,
    )
