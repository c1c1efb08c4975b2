"""Incidents: a storm of alerts correlated on the topology (``fixloop.core.topology``) into groups, each ranked.

``correlate(alerts, topology, window=..., recent_deploys=(), attach_window=1 h, background=None)`` (``window``
required: the intake's setting, when it is wired) -> a list of
``Incident``, sorted by onset then id:

1. every alert (``fixloop.core.models.Signal`` of kind ``alert``; a fingerprint given more than once counts once,
   the latest observation wins, as the intake's dedup does) that follows a fixloop deploy of its service within
   ``attach_window`` (``fixloop.core.triage.rules.deploy_for``, the rules engine's own test) stays that loop's: it
   goes to a group ``attached_to`` the deploying work item, never into an incident of other alerts;
2. every other alert is mapped to the entity it is about (``fixloop.core.rca.observation_from_signal`` and
   ``rca.resolve``: pod, then workload or service, then node or host; an entity the topology does not know is kept
   under its own name);
3. two alerts are linked when they are at most ``window`` apart and on the same entity or on entities joined
   directly in the topology: one edge between them (``calls`` in either direction, ``instance_of``, ``runs_on``),
   or their services (an instance stands for its service through ``instance_of``) equal or joined by ``calls``.
   Groups are the connected components of these links (transitively: a chain of alerts each within ``window`` of
   the next); only alerting entities join a group, so the walk is bounded by the alerts (no path through quiet
   entities); an alert on an unknown entity links only to alerts on that same name, so it is its own group,
   tracked, never dropped;
4. a group over ``MAX_GROUP_ALERTS`` alerts is split in time order into parts of that size (each its own group);
5. each group is ranked with ``rca.rank`` (with the ``background`` alert history, if given): its ``candidates``
   are the top ``TOP_CANDIDATES`` with their evidence.

Every input alert is in exactly one group; the result does not depend on the input order. An incident's ``id`` is
``<service>-<kind>-<hash>`` (``fixloop.core.models.work_item_id``): the service of its top root-cause candidate and a
hash of its kind, its deploy (if attached) and its first alert's fingerprint (earliest, then smallest fingerprint):
the same storm delivered again, in any order, gives the same id.

``work_item(incident)``: its ``WorkItem`` (kind ``incident``, or ``deploy_regression`` when attached); its title
"Incident: <n> alerts on <up to 3 services>[ and <k> more]; likely root cause <entity>". ``description(incident)``: the
Jira description as PLAIN text (the top candidates with their evidence, the alert timeline), bounded; the Jira
activity escapes it (``fixloop.core.markup.jira_text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from fixloop.core import rca
from fixloop.core.models import (
    ALERT_KEY_MAX,
    ALERT_KEYS_MAX,
    INCIDENT_EVIDENCE_MAX,
    INCIDENT_NAMES_MAX,
    INCIDENT_TEXT_MAX,
    INCIDENT_TIMELINE_MAX,
    TITLE_MAX,
    WORK_ITEM_ID,
    WORK_ITEM_ID_MAX,
    IncidentFacts,
    IncidentTimelineEntry,
    Kind,
    RecentDeploy,
    RootCauseCandidate,
    Severity,
    Signal,
    WorkItem,
    WorkItemKind,
    work_item_id,
)
from fixloop.core.parsing import clean, title
from fixloop.core.topology import EntityKind, Topology
from fixloop.core.triage.rules import DEFAULT_ATTACH_WINDOW, deploy_for

MAX_ALERTS = rca.MAX_OBSERVATIONS  # alerts one call correlates; more is a ValueError, never a silent cut
MAX_GROUP_ALERTS = 1000  # alerts of one group (a work item's signals); a larger component is split in time order
TOP_CANDIDATES = 3
TIMELINE_MAX = INCIDENT_TIMELINE_MAX  # alerts listed in an incident's timeline (the earliest; the rest counted)
TEXT_MAX = INCIDENT_TEXT_MAX  # characters of a timeline entry's text fields
DESCRIPTION_MAX = 16_000  # characters of ``description``
HISTORY_KEYS_MAX = 500  # (entity, metric) keys an alert history keeps (the most frequent; ties by key)


TimelineEntry = IncidentTimelineEntry  # one alert of an incident (``fixloop.core.models``)


class Incident(BaseModel):
    """One group of correlated alerts (rules in the module docstring).

    ``fingerprints``: its alerts, in time order (then fingerprint); ``onset`` / ``last``: its first and last alert;
    ``entities``: the entities they are about (sorted); ``services``: those entities' services (an instance's
    service, a service, database or cache, an unknown name; not hosts), sorted; ``unknown``: the entities the
    topology does not know; ``candidates``: the top ``TOP_CANDIDATES`` of ``rca.rank``, best first;
    ``attached_to``: the work item whose deploy its alerts follow (a ``deploy_regression``), else None;
    ``part``: 0, or the part number of a component split at ``MAX_GROUP_ALERTS``."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(max_length=WORK_ITEM_ID_MAX, pattern=WORK_ITEM_ID)
    fingerprints: list[str] = Field(min_length=1, max_length=MAX_GROUP_ALERTS)
    onset: AwareDatetime
    last: AwareDatetime
    entities: list[str] = Field(max_length=MAX_GROUP_ALERTS)
    services: list[str] = Field(max_length=MAX_GROUP_ALERTS)
    unknown: list[str] = Field(default_factory=list, max_length=MAX_GROUP_ALERTS)
    candidates: list[rca.Candidate] = Field(default_factory=list, max_length=TOP_CANDIDATES)
    candidate_services: list[str | None] = Field(default_factory=list, max_length=TOP_CANDIDATES)
    severity: Severity
    attached_to: str | None = None
    part: int = 0
    timeline: list[TimelineEntry] = Field(default_factory=list, max_length=TIMELINE_MAX)
    timeline_more: int = 0


class _Links:
    """Union-find over alert indexes."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _dedup(alerts: Sequence[Signal]) -> list[Signal]:
    unique: dict[str, Signal] = {}
    for s in alerts:
        if s.kind is not Kind.ALERT:
            raise ValueError(f"correlate: signal {s.fingerprint} is a {s.kind.value}, not an alert")
        prev = unique.get(s.fingerprint)
        if prev is None or (s.observed_at, s.model_dump_json()) >= (prev.observed_at, prev.model_dump_json()):
            unique[s.fingerprint] = s
    if len(unique) > MAX_ALERTS:
        raise ValueError(f"correlate: {len(unique)} alerts, more than {MAX_ALERTS} in one call")
    return sorted(unique.values(), key=lambda s: (s.observed_at, s.fingerprint))


def _service(topology: Topology, entity: str) -> str | None:
    """What an entity stands for among services: its service, itself (service, database, cache, unknown) or None
    (a host)."""
    if topology.kind(entity) is EntityKind.HOST:
        return None
    return topology.service_of(entity) or entity


def _neighbours(topology: Topology, entity: str) -> set[str]:
    """The entities an alert on ``entity`` links to (besides itself): one edge away (``calls`` either way,
    ``instance_of``, ``runs_on``), and every entity whose service is its service or joined to it by ``calls`` (an
    instance stands for its service). Empty for an entity the topology does not know."""
    if topology.kind(entity) is None:
        return set()
    out = {*topology.callees(entity), *topology.callers(entity), *topology.instances(entity), *topology.hosted(entity)}
    out |= {x for x in (topology.service_of(entity), topology.host_of(entity)) if x}
    service = _service(topology, entity)
    if service is not None:
        for s in {service, *topology.callees(service), *topology.callers(service)}:
            if topology.kind(s) is not EntityKind.HOST:
                out |= {s, *topology.instances(s)}
    out.discard(entity)
    return out


def _link_times(
    links: _Links, times_a: list[tuple[datetime, int]], times_b: list[tuple[datetime, int]], w: timedelta
) -> None:
    """Link each alert of ``times_a`` (sorted) to its nearest alert of ``times_b`` (sorted) on each side, when
    within ``w``: with the chaining of each entity's consecutive alerts this links exactly the closure of all pairs
    at most ``w`` apart."""
    j = 0
    for t, i in times_a:
        while j < len(times_b) and times_b[j][0] < t:
            j += 1
        for k in (j - 1, j):
            if 0 <= k < len(times_b) and abs(times_b[k][0] - t) <= w:
                links.union(i, times_b[k][1])


def _components(topology: Topology, alerts: list[Signal], entities: list[str], window: timedelta) -> list[list[int]]:
    links = _Links(len(alerts))
    by_entity: dict[str, list[tuple[datetime, int]]] = {}
    for i, (a, e) in enumerate(zip(alerts, entities, strict=True)):
        by_entity.setdefault(e, []).append((a.observed_at, i))
    for times in by_entity.values():  # alerts arrive sorted: each entity's list is in time order
        for (t0, i0), (t1, i1) in zip(times, times[1:], strict=False):
            if t1 - t0 <= window:
                links.union(i0, i1)
    for a in sorted(by_entity):  # each pair of alerting neighbours once: bounded by the topology's edges
        for b in sorted(_neighbours(topology, a) & by_entity.keys()):
            if a < b:
                _link_times(links, by_entity[a], by_entity[b], window)
                _link_times(links, by_entity[b], by_entity[a], window)
    groups: dict[int, list[int]] = {}
    for i in range(len(alerts)):
        groups.setdefault(links.find(i), []).append(i)
    return list(groups.values())


def _item_id(kind: WorkItemKind, service: str | None, attached: str | None, first: str) -> str:
    return work_item_id(kind, service, kind.value, attached, "incident", first)


def _incident(
    topology: Topology,
    members: list[tuple[Signal, str]],
    attached: str | None,
    part: int,
    background: rca.Background | None,
) -> Incident:
    members.sort(key=lambda m: (m[0].observed_at, m[0].fingerprint))
    kind = WorkItemKind.DEPLOY_REGRESSION if attached else WorkItemKind.INCIDENT
    entities = sorted({e for _s, e in members})
    ranking = rca.rank(topology, [rca.observation_from_signal(s) for s, _e in members], background=background)
    timeline = [
        TimelineEntry(
            at=s.observed_at,
            entity=clean(e, TEXT_MAX),
            metric=clean(s.monitor_id or s.title, TEXT_MAX),
            title=clean(s.title, TEXT_MAX),
            fingerprint=s.fingerprint,
        )
        for s, e in members[:TIMELINE_MAX]
    ]
    top = ranking.candidates[0] if ranking.candidates else None
    return Incident(
        id=_item_id(kind, top and (_service(topology, top.entity) or top.entity), attached, members[0][0].fingerprint),
        fingerprints=[s.fingerprint for s, _e in members],
        onset=members[0][0].observed_at,
        last=members[-1][0].observed_at,
        entities=entities,
        services=sorted({sv for e in entities if (sv := _service(topology, e))}),
        unknown=[e for e in entities if topology.kind(e) is None],
        candidates=ranking.candidates[:TOP_CANDIDATES],
        candidate_services=[_service(topology, c.entity) for c in ranking.candidates[:TOP_CANDIDATES]],
        severity=max((s.severity for s, _e in members), key=lambda sev: sev.rank),
        attached_to=attached,
        part=part,
        timeline=timeline,
        timeline_more=max(0, len(members) - TIMELINE_MAX),
    )


def correlate(
    alerts: Sequence[Signal],
    topology: Topology,
    *,
    window: timedelta,
    recent_deploys: Sequence[RecentDeploy] = (),
    attach_window: timedelta = DEFAULT_ATTACH_WINDOW,
    background: rca.Background | None = None,
) -> list[Incident]:
    """The incidents of ``alerts`` on ``topology`` (rules in the module docstring), sorted by onset, then id.
    Raises ``ValueError`` for a signal that is not an alert or for more than ``MAX_ALERTS`` distinct alerts."""
    unique = _dedup(alerts)
    entities = [rca.resolve(topology, rca.observation_from_signal(s)) for s in unique]
    attached: dict[str, list[int]] = {}
    free: list[int] = []
    for i, s in enumerate(unique):
        deploy = deploy_for(s, recent_deploys, attach_window)
        if deploy is None:
            free.append(i)
        else:
            attached.setdefault(deploy.work_item_id, []).append(i)
    groups: list[tuple[str | None, list[int]]] = [(loop, idx) for loop, idx in attached.items()]
    free_alerts = [unique[i] for i in free]
    for comp in _components(topology, free_alerts, [entities[i] for i in free], window):
        groups.append((None, [free[c] for c in comp]))
    out: list[Incident] = []
    for loop, idx in groups:
        idx.sort()  # ``unique`` is in time order
        for part, start in enumerate(range(0, len(idx), MAX_GROUP_ALERTS)):
            chunk = idx[start : start + MAX_GROUP_ALERTS]
            members = [(unique[i], entities[i]) for i in chunk]
            out.append(_incident(topology, members, loop, part if len(idx) > MAX_GROUP_ALERTS else 0, background))
    return sorted(out, key=lambda inc: (inc.onset, inc.id))


def _plural(n: int, one: str) -> str:
    return f"{n} {one if n == 1 else one + 's'}"


def _names(names: Sequence[str]) -> tuple[list[str], int]:
    return [clean(n, TEXT_MAX) for n in names[:INCIDENT_NAMES_MAX]], max(0, len(names) - INCIDENT_NAMES_MAX)


def candidate_facts(c: rca.Candidate, service: str | None = None) -> RootCauseCandidate:
    """A ranked candidate as it travels on the work item (texts bounded); ``service``: the one it stands for."""
    return RootCauseCandidate(
        entity=clean(c.entity, TEXT_MAX),
        kind=c.kind.value if c.kind else None,
        service=clean(service, TEXT_MAX) if service else None,
        score=round(c.score, 4),
        onset=datetime.fromtimestamp(c.onset_ms / 1000, UTC),
        alerts=c.alerts,
        evidence=[clean(e, TEXT_MAX) for e in c.evidence[:INCIDENT_EVIDENCE_MAX]],
    )


def facts(incident: Incident) -> IncidentFacts:
    """The incident's facts as they travel on its work item (``WorkItem.incident``): bounded names, the top
    candidates with their evidence, the timeline."""
    entities, entities_more = _names(incident.entities)
    services, services_more = _names(incident.services)
    unknown, unknown_more = _names(incident.unknown)
    return IncidentFacts(
        onset=incident.onset,
        last=incident.last,
        entities=entities,
        entities_more=entities_more,
        services=services,
        services_more=services_more,
        unknown=unknown,
        unknown_more=unknown_more,
        candidates=[
            candidate_facts(c, incident.candidate_services[i] if i < len(incident.candidate_services) else None)
            for i, c in enumerate(incident.candidates)
        ],
        timeline=incident.timeline,
        timeline_more=incident.timeline_more,
    )


def top_service(item: WorkItem) -> str | None:
    """A work item's likely root cause as a service: its top candidate's service (itself when it is not an
    instance), None without incident facts or candidates."""
    top = item.incident.candidates[0] if item.incident and item.incident.candidates else None
    return (top.service or top.entity) if top is not None else None


def onset_of(item: WorkItem) -> datetime | None:
    """When a work item's incident began: its facts' onset, else its window's start; None without either."""
    return item.incident.onset if item.incident is not None else item.window_start


def work_item(incident: Incident) -> WorkItem:
    """The work item of an incident: kind ``incident`` (``deploy_regression`` when attached to a deploy), its id,
    severity, alerts and window; the title names the top candidate."""
    n = len(incident.fingerprints)
    names = incident.services or incident.entities
    where = ", ".join(clean(x, 60) for x in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    head = f"Incident: {_plural(n, 'alert')} on {where}"
    if incident.candidates:
        head += f"; likely root cause {clean(incident.candidates[0].entity, 80)}"
    if incident.attached_to:
        head = f"Regression after deploy of {incident.attached_to}: {head}"
    services = incident.services
    return WorkItem(
        id=incident.id,
        kind=WorkItemKind.DEPLOY_REGRESSION if incident.attached_to else WorkItemKind.INCIDENT,
        title=title(head, TITLE_MAX),
        severity=incident.severity,
        signals=list(incident.fingerprints),
        service=clean(services[0], 200) if len(services) == 1 else None,
        window_start=incident.onset,
        window_end=incident.last,
        attached_to=incident.attached_to,
        incident=facts(incident),
    )


def description(incident: Incident) -> str:
    """The Jira description of an incident (``describe`` of its ``facts``)."""
    return describe(facts(incident), alerts=len(incident.fingerprints), attached_to=incident.attached_to)


def _at(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _more(names: list[str], more: int) -> str:
    return ", ".join(names) + (f" and {more} more" if more else "")


def describe(f: IncidentFacts, *, alerts: int, attached_to: str | None = None) -> str:
    """The Jira description of an incident's facts as plain text (never markup: the Jira activity escapes it), at
    most ``DESCRIPTION_MAX`` characters: the summary line, the top candidates with their evidence, the alert
    timeline (``+<seconds>s <UTC time> <entity> <metric>: <title>``)."""
    lines = [
        f"{_plural(alerts, 'alert')} from {_at(f.onset)} to {_at(f.last)} on " + _more(f.entities, f.entities_more),
    ]
    if f.unknown:
        lines.append(f"Not in the topology (ranked without neighbours): {_more(f.unknown, f.unknown_more)}")
    if attached_to:
        lines.append(f"These alerts follow the deploy of fixloop work item {attached_to}.")
    lines += ["", "Likely root cause, best first:"]
    for i, c in enumerate(f.candidates, 1):
        kind = c.kind or "not in the topology"
        lines.append(f"{i}. {c.entity} ({kind}), score {c.score:.2f}, {_plural(c.alerts, 'alert')}")
        lines += [f"   - {e}" for e in c.evidence]
    if not f.candidates:
        lines.append("(none)")
    lines += ["", "Alert timeline:"]
    for t in f.timeline:
        offset = int((t.at - f.onset).total_seconds())
        lines.append(f"+{offset}s {_at(t.at)} {t.entity} {t.metric}: {t.title}")
    if f.timeline_more:
        lines.append(f"... and {f.timeline_more} later alert(s)")
    text = "\n".join(lines)
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "\u2026"


def alert_keys(alerts: Sequence[Signal], topology: Topology) -> list[str]:
    """The ``<entity>\x1f<metric>`` keys of ``alerts`` on ``topology`` (the entity as ``rca.resolve`` maps it, the
    metric as ``rca.observation_from_signal`` names it): sorted, each once, keys over ``ALERT_KEY_MAX`` characters
    left out, at most ``ALERT_KEYS_MAX`` (the first in sort order)."""
    keys = set()
    for s in alerts:
        obs = rca.observation_from_signal(s)
        key = f"{rca.resolve(topology, obs)}\x1f{obs.metric}"
        if len(key) <= ALERT_KEY_MAX:
            keys.add(key)
    return sorted(keys)[:ALERT_KEYS_MAX]


def remember(history: rca.Background | None, keys: Sequence[str], *, limit: int = HISTORY_KEYS_MAX) -> rca.Background:
    """``history`` with one more storm whose alerts had ``keys`` (each counted once): ``storms`` + 1, each key's count
    + 1. At most ``limit`` keys are kept: the most frequent (ties: the smaller key); a key dropped counts as never
    seen again (rarity 1), which is what a rare key is anyway."""
    base = history or rca.Background()
    counts = dict(base.counts)
    for k in set(keys):
        counts[k] = counts.get(k, 0) + 1
    if len(counts) > limit:
        counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])
    return rca.Background(storms=base.storms + 1, counts=counts)
