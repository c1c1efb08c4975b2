"""Root-cause ranking: alerts mapped onto the topology (``fixloop.core.topology``), candidates ranked by evidence.

Shapes:
  ``Observation``: one alert, ``at_ms`` (epoch milliseconds), ``entity`` (the id it is about, if the source names
  it), ``labels`` (``key -> value``: Datadog tags, Alertmanager labels), ``host``, ``metric`` (the metric or monitor
  name), ``direction`` (``up`` / ``down`` / None).
  ``observation_from_signal``: the observation of a ``fixloop.core.models.Signal`` alert (its ``tags`` and
  ``scope`` as labels, ``service``, ``monitor_id`` or ``title`` as the metric, ``observed_at``).
  ``resolve``: the entity an observation is about, on the topology: the most specific name its labels carry that
  the topology knows (pod, then workload or service, then node or host; label keys in ``INSTANCE_KEYS``,
  ``SERVICE_KEYS``, ``HOST_KEYS``: Datadog's ``pod_name``, ``kube_*``, ``service``, ``host``, Alertmanager's
  ``pod``, ``service``, ``job``, ``instance`` (port stripped), ``node``, see
  https://docs.datadoghq.com/containers/kubernetes/tag/ and https://prometheus.io/docs/alerting/latest/clients/);
  an entity the topology does not know is KEPT under the most specific name present (``unknown`` if none), never
  dropped: it is ranked like any other, with no neighbours.
  ``rank(topology, observations)``: ``Ranking`` with at most ``MAX_CANDIDATES`` ``Candidate`` s, best first, each
  with its score, onset and evidence lines in words and numbers.

Method (model-free, deterministic; two parameters, ``ONSET_DECAY_S`` and ``SYMPTOM_WEIGHT``, and optionally the
alert history as a ``Background``). It follows the
observation behind ε-Diagnosis and MicroRCA (Wu et al., NOMS 2020) and onset-ordering localisation (TON, Kim et al.
2013 "Root cause detection in a service-oriented architecture", SIGMETRICS): a fault shows first, and on the most
metrics, on the faulty entity itself, as resource anomalies (cpu, memory, disk/io, network, threads), and reaches
the others later and as symptoms (latency, errors, traffic) of their callers. So:

1. every alert gets an onset weight ``1 / (1 + (t - t0) / ONSET_DECAY_S)``, ``t0`` the first alert of the storm;
2. an entity's own evidence is the sum, over the distinct metrics alerting on it, of the metric's best (earliest)
   weight; a resource metric counts 1, a symptom metric ``SYMPTOM_WEIGHT`` (symptoms are what callers show); with a
   ``Background`` (the alerts of past storms), each metric's term is multiplied by the rarity of that (entity,
   metric) pair, its inverse document frequency over the past storms (Salton's IDF, as alert-ranking work uses it
   to discount chronic alerts): a pod whose memory alert fires in every storm explains none of them;
3. a service (database, cache) with instances is also a candidate: its own evidence plus the MEAN of its instances'
   evidence (every instance counted, a quiet one as 0): a fault of the service hits every instance, a fault of one
   pod only that pod, so the mean favours the service exactly when its instances fail together;
4. propagation along ``calls``: a candidate whose callers show symptoms AFTER its own onset gains, per such caller,
   ``SYMPTOM_WEIGHT`` times that caller's earliest symptom weight (the fault explains them); a candidate whose
   callees' evidence started strictly BEFORE its own loses ``VICTIM_PENALTY`` per such callee (it is more likely a
   victim; a fixed constant below one alert's weight, not fitted);
   an instance takes its service's callers and callees (``instance_of``); ``runs_on`` is reported as evidence (the
   host of an instance, the alerting instances a host runs), not scored: a busy node runs most pods of a storm;
5. ties break by the earlier onset, then the id (deterministic, and independent of the input order).

Measured (``bench/rca.py``, Online Boutique cloudbed-2 of the alert-correlation corpus, 78 faults, history
leave-one-out from the other faults' alerts): top1 / top3 with service mapping 62.8 / 73.1 % (pod 21/29, node
11/25, service 17/24 first); 43.6 / 61.5 without history. The defaults were set before measuring; over
``ONSET_DECAY_S`` 60-300 s and ``SYMPTOM_WEIGHT`` 0.25-1 the figures stay within 59.0-64.1 / 66.7-75.6.

Metric families are recognised by patterns of generic words (``FAMILIES``) among the name's ``words`` (split at
snake_case, kebab-case, dots, spaces and CamelCase, so Prometheus metrics, Alertmanager alertnames and Datadog
monitor names read alike), never by any system's names: cpu, memory, disk/io, network, threads/processes/restarts
(resource); latency, errors, traffic (symptom); anything else counts as resource of the entity itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.models import Signal
from fixloop.core.topology import EntityKind, Topology

ONSET_DECAY_S = 120.0  # seconds after the storm's first alert at which an alert's weight has halved
SYMPTOM_WEIGHT = 0.5  # a latency/error/traffic alert, against 1 for a resource alert of the entity itself
VICTIM_PENALTY = 0.1  # per callee that alerted first: fixed, below one alert's weight, not fitted
MAX_CANDIDATES = 10
MAX_OBSERVATIONS = 10000
EVIDENCE_METRICS = 8  # metric names quoted per evidence line
EVIDENCE_LINE_MAX = 400  # characters of one evidence line (a longer one ends with an ellipsis)
NAME_MAX = 253

# family -> (pattern a WORD of the metric name must match in full, is it a symptom); words are the name split on
# anything but letters and digits and at CamelCase boundaries, lower-cased (``words``: "container_fs_reads./dev/vda"
# -> container, fs, reads, dev, vda; "CPUThrottlingHigh" -> cpu, throttling, high). The first family with a matching
# word wins, in this order: a caller's latency or errors before any resource word.
FAMILIES: tuple[tuple[str, str, bool], ...] = (
    ("latency", r"latenc\w*|durations?|mrt|rt|p50|p9\d+|elapsed|responsetime|slow\w*", True),
    ("errors", r"errors?|errs?|fail\w*|faults?|[45]xx|exceptions?|sr|success\w*|unavailab\w*|timeouts?", True),
    ("traffic", r"rr|rps|qps|requests?|hits|count|throughput", True),
    ("cpu", r"cpus?|load\d*|throttl\w*", False),
    ("memory", r"mem\w*|rss|heap|oom\w*|swap", False),
    ("disk/io", r"disks?|fs|io|iops|inodes?|reads?|writes?|volumes?", False),
    ("network", r"net\w*|packets?|receive\w*|transmit\w*|tcp|udp|eth\d*|rx|tx|drops?|retrans\w*|bytes", False),
    ("threads", r"threads?|process\w*|procs?|fds?|goroutines?|restarts?|crash\w*", False),
)

INSTANCE_KEYS = ("pod_name", "pod", "kube_pod_name", "container_name", "container_id")
SERVICE_KEYS = (
    "service",
    "kube_deployment",
    "kube_stateful_set",
    "kube_daemon_set",
    "kube_service",
    "kube_app_name",
    "app",
    "job",
)
HOST_KEYS = ("node", "kube_node", "host", "hostname", "instance")


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


class Observation(BaseModel):
    """One alert as the ranking sees it (shape in the module docstring)."""

    model_config = ConfigDict(frozen=True)

    at_ms: int = Field(ge=0)
    entity: str | None = Field(default=None, max_length=NAME_MAX)
    labels: dict[Annotated[str, Field(max_length=NAME_MAX)], Annotated[str, Field(max_length=NAME_MAX)]] = Field(
        default_factory=dict, max_length=64
    )
    host: str | None = Field(default=None, max_length=NAME_MAX)
    metric: str = Field(min_length=1, max_length=NAME_MAX)
    direction: Direction | None = None


class Candidate(BaseModel):
    """A ranked root-cause candidate: ``entity`` (its id), ``kind`` (None: not in the topology), ``score`` (higher is
    likelier), ``onset_ms`` (its first alert, or its instances'), ``alerts`` (how many alerts it explains directly),
    ``evidence`` (lines in words and numbers)."""

    model_config = ConfigDict(frozen=True)

    entity: str
    kind: EntityKind | None
    score: float
    onset_ms: int
    alerts: int
    evidence: list[str]


class Ranking(BaseModel):
    """``candidates`` best first; ``observations`` how many alerts were ranked, ``cut`` how many were over
    ``MAX_OBSERVATIONS`` (the latest dropped first); ``unknown`` the entity ids not in the topology."""

    model_config = ConfigDict(frozen=True)

    candidates: list[Candidate]
    observations: int
    cut: int = 0
    unknown: list[str] = Field(default_factory=list)


# a CamelCase boundary: lower case or digit before upper case ("HighPod"), or the last capital of an acronym run
# before a capitalised word ("CPUThrottling", "OOMKilled"); letters and digits stay together ("p99", "eth0", "5xx")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def words(name: str) -> list[str]:
    """The lower-cased words of a metric, alert or monitor name: split on anything but ASCII letters and digits
    (snake_case, kebab-case, dots, slashes, spaces) and at CamelCase boundaries, acronym runs kept whole
    (Alertmanager ``alertname`` s such as ``CPUThrottlingHigh`` -> ``cpu``, ``throttling``, ``high``;
    ``KubeContainerOOMKilled`` -> ``kube``, ``container``, ``oom``, ``killed``; Prometheus metric names; Datadog
    monitor names such as "High error rate on catalog")."""
    return [w.lower() for part in re.split(r"[^A-Za-z0-9]+", name) for w in _CAMEL.split(part) if w]


def family(metric: str) -> tuple[str, bool]:
    """The family of a metric name and whether it is a symptom (``FAMILIES``, matched on its ``words``);
    ``("other", False)`` otherwise."""
    words_ = words(metric)
    for fam, pattern, symptom in FAMILIES:
        if any(re.fullmatch(pattern, w) for w in words_):
            return fam, symptom
    return "other", False


# --- alert payloads -> observations -> entities ---------------------------------------------------------------


def _tag_pairs(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if sep and key.strip() and value.strip():
            out.setdefault(key.strip().lower()[:NAME_MAX], value.strip()[:NAME_MAX])
    return out


def observation_from_signal(signal: Signal) -> Observation:
    """The observation of an alert signal: labels from its ``tags`` and ``scope`` (``key:value``; Alertmanager
    labels arrive as tags too), ``service`` added as ``service``; ``metric`` its ``monitor_id`` (Alertmanager's
    ``alertname``) or ``title``; a monitor id without letters (Datadog's is a number) is followed by the title
    without its leading ``[Triggered on ...]`` bracket (the monitor's name, e.g. "221164084 High error rate on
    catalog"), so that ``family`` reads the monitor's words; ``at_ms`` its ``observed_at``; direction unknown
    (None)."""
    labels = _tag_pairs(signal.tags)
    for key, value in _tag_pairs((signal.scope or "").split(",")).items():
        labels.setdefault(key, value)
    if signal.service:
        labels.setdefault("service", signal.service[:NAME_MAX])
    labels = dict(sorted(labels.items())[:64])
    return Observation(
        at_ms=max(0, int(signal.observed_at.timestamp() * 1000)),
        labels=labels,
        host=labels.get("host") or labels.get("node"),
        metric=_metric(signal.monitor_id, signal.title)[:NAME_MAX],
    )


def _metric(monitor_id: str | None, text: str) -> str:
    if not monitor_id:
        return text
    if re.search(r"[A-Za-z]", monitor_id):
        return monitor_id
    name = re.sub(r"^\s*\[[^\]]*\]\s*", "", text).strip()
    return f"{monitor_id} {name}" if name else monitor_id


def _strip_port(value: str) -> str:
    return re.sub(r":\d{1,5}$", "", value)


def resolve(topology: Topology, obs: Observation) -> str:
    """The entity id ``obs`` is about (rules in the module docstring); never empty."""
    if obs.entity:
        return obs.entity
    names: list[str] = []
    for keys in (INSTANCE_KEYS, SERVICE_KEYS, HOST_KEYS):
        names += [_strip_port(obs.labels[k]) for k in keys if obs.labels.get(k)]
    if obs.host:
        names.append(obs.host)
    for name in names:
        if topology.kind(name) is not None:
            return name
    return names[0] if names else "unknown"


# --- ranking -------------------------------------------------------------------------------------------------


class _Seen:
    """What alerted on one entity: metric -> (first onset, direction, family, symptom)."""

    def __init__(self) -> None:
        self.metrics: dict[str, tuple[int, str, bool]] = {}
        self.alerts = 0

        self.rarity: dict[str, float] = {}

    def add(self, at_ms: int, metric: str, rarity: float = 1.0) -> None:
        self.alerts += 1
        fam, symptom = family(metric)
        prev = self.metrics.get(metric)
        self.rarity[metric] = rarity
        if prev is None or at_ms < prev[0]:
            self.metrics[metric] = (at_ms, fam, symptom)

    def onset(self) -> int:
        return min(t for t, _f, _s in self.metrics.values())

    def symptom_onset(self) -> int | None:
        times = [t for t, _f, s in self.metrics.values() if s]
        return min(times) if times else None


class Background(BaseModel):
    """How often each (entity, metric) alerted in past storms: ``storms`` (how many were seen) and ``counts``
    (``"<entity>\x1f<metric>"`` -> in how many of them it alerted). ``rarity`` is its inverse document frequency,
    ``log((storms + 1) / (count + 1)) / log(storms + 1)`` in [0, 1]: 1 for a pair never seen, near 0 for one that
    alerts in every storm (a chronic alert explains nothing)."""

    model_config = ConfigDict(frozen=True)

    storms: int = Field(default=0, ge=0)
    counts: dict[str, int] = Field(default_factory=dict)

    def rarity(self, entity: str, metric: str) -> float:
        if self.storms == 0:
            return 1.0
        n = self.counts.get(f"{entity}\x1f{metric}", 0)
        return math.log((self.storms + 1) / (n + 1)) / math.log(self.storms + 1)


def background(storms: Iterable[Iterable[tuple[str, str]]]) -> Background:
    """The background of past storms, each given as its (entity, metric) pairs."""
    counts: dict[str, int] = {}
    total = 0
    for storm in storms:
        total += 1
        for entity, metric in {(e, m) for e, m in storm}:
            key = f"{entity}\x1f{metric}"
            counts[key] = counts.get(key, 0) + 1
    return Background(storms=total, counts=counts)


def _cut(line: str) -> str:
    return line if len(line) <= EVIDENCE_LINE_MAX else line[: EVIDENCE_LINE_MAX - 1] + "\u2026"


def _weight(at_ms: int, t0: int, decay_s: float) -> float:
    return 1.0 / (1.0 + (at_ms - t0) / 1000.0 / decay_s)


def _own(seen: _Seen | None, t0: int, decay_s: float, symptom_weight: float) -> float:
    if seen is None:
        return 0.0
    return sum(
        (symptom_weight if s else 1.0) * _weight(t, t0, decay_s) * seen.rarity[m]
        for m, (t, _f, s) in seen.metrics.items()
    )


def _describe(seen: _Seen, t0: int) -> str:
    by_family: dict[str, list[str]] = {}
    for metric, (_t, fam, _s) in sorted(seen.metrics.items(), key=lambda kv: (kv[1][0], kv[0])):
        by_family.setdefault(fam, []).append(metric)
    parts = [f"{fam}: {', '.join(ms[:EVIDENCE_METRICS])}" for fam, ms in sorted(by_family.items())]
    return (
        f"{len(seen.metrics)} metric(s) alerting, {seen.alerts} alert(s), first at +{(seen.onset() - t0) // 1000}s"
        f" ({'; '.join(parts)})"
    )


def rank(
    topology: Topology,
    observations: Sequence[Observation],
    *,
    onset_decay_s: float = ONSET_DECAY_S,
    symptom_weight: float = SYMPTOM_WEIGHT,
    limit: int = MAX_CANDIDATES,
    background: Background | None = None,
) -> Ranking:
    """The ranked root-cause candidates of one storm's ``observations`` on ``topology`` (method in the module
    docstring). Deterministic and independent of the order of ``observations``; empty for no observations. At most
    ``MAX_OBSERVATIONS`` observations are read (the earliest; the rest counted in ``cut``)."""
    ordered = sorted(observations, key=lambda o: (o.at_ms, o.metric, o.entity or "", sorted(o.labels.items())))
    cut = max(0, len(ordered) - MAX_OBSERVATIONS)
    ordered = ordered[:MAX_OBSERVATIONS]
    if not ordered:
        return Ranking(candidates=[], observations=0)
    t0 = ordered[0].at_ms
    seen: dict[str, _Seen] = {}
    for obs in ordered:
        entity = resolve(topology, obs)
        rarity = background.rarity(entity, obs.metric) if background else 1.0
        seen.setdefault(entity, _Seen()).add(obs.at_ms, obs.metric, rarity)

    def group(entity: str) -> str:
        """The service an entity stands for in ``calls`` (itself, or its service through ``instance_of``)."""
        return topology.service_of(entity) or entity

    own = {e: _own(s, t0, onset_decay_s, symptom_weight) for e, s in seen.items()}
    # candidates: every alerting entity, and every service (database, cache) with an alerting instance
    cands: set[str] = set(seen)
    cands |= {topology.service_of(e) for e in seen if topology.service_of(e)}  # type: ignore[misc]

    # the earliest onset of anything in a service's group (itself or its instances), and of its symptoms
    def group_onset(service: str) -> int | None:
        times = [seen[m].onset() for m in [service, *topology.instances(service)] if m in seen]
        return min(times) if times else None

    def group_symptom(service: str) -> int | None:
        times = [t for m in [service, *topology.instances(service)] if m in seen for t in [seen[m].symptom_onset()]]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    out: list[Candidate] = []
    for c in cands:
        kind = topology.kind(c)
        evidence: list[str] = []
        score = own.get(c, 0.0)
        if c in seen:
            evidence.append(f"itself: {_describe(seen[c], t0)}")
        members = topology.instances(c)
        onset = seen[c].onset() if c in seen else None
        if members:
            alerting = [m for m in members if m in seen]
            mean = sum(own.get(m, 0.0) for m in members) / len(members)
            score += mean
            if alerting:
                first = min(seen[m].onset() for m in alerting)
                onset = first if onset is None else min(onset, first)
                evidence.append(
                    f"{len(alerting)} of its {len(members)} instance(s) alerting ({', '.join(sorted(alerting)[:8])}),"
                    f" mean instance evidence {mean:.2f}"
                )
        if c in seen and topology.host_of(c):
            evidence.append(f"runs on {topology.host_of(c)}")
        if kind is EntityKind.HOST:
            hosted = [h for h in topology.hosted(c) if h in seen]
            if hosted:
                evidence.append(f"hosts {len(hosted)} alerting instance(s) of {len(topology.hosted(c))}")
        assert onset is not None  # a candidate alerts itself or through an instance
        svc = group(c)
        # propagation along calls
        gained: list[str] = []
        for caller in sorted(set(topology.callers(svc))):
            t = group_symptom(caller)
            if t is not None and t >= onset:
                score += symptom_weight * _weight(t, t0, onset_decay_s)
                gained.append(f"{caller} (+{(t - onset) // 1000}s)")
        if gained:
            evidence.append(f"callers with latency/error symptoms after its onset: {', '.join(gained[:8])}")
        earlier: list[str] = []
        for callee in sorted(set(topology.callees(svc))):
            t = group_onset(callee)
            if t is not None and t < onset:
                score -= VICTIM_PENALTY
                earlier.append(f"{callee} ({(onset - t) // 1000}s earlier)")
        if earlier:
            evidence.append(f"callees alerting before it (it may be a victim): {', '.join(earlier[:8])}")
        alerts = seen[c].alerts if c in seen else 0
        alerts += sum(seen[m].alerts for m in members if m in seen)
        out.append(
            Candidate(
                entity=c,
                kind=kind,
                score=round(score, 6),
                onset_ms=onset,
                alerts=alerts,
                evidence=[_cut(f"score {score:.2f}, onset +{(onset - t0) // 1000}s"), *map(_cut, evidence)],
            )
        )
    out.sort(key=lambda c: (-c.score, c.onset_ms, c.entity))
    unknown = sorted(e for e in seen if topology.kind(e) is None)
    return Ranking(candidates=out[:limit], observations=len(ordered), cut=cut, unknown=unknown[:MAX_CANDIDATES])


def earliest(topology: Topology, observations: Sequence[Observation], *, limit: int = MAX_CANDIDATES) -> list[str]:
    """The baseline: the alerting entities by their first alert (ties by more alerts, then id); what ``rank`` must
    beat."""
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for obs in observations:
        e = resolve(topology, obs)
        first[e] = min(first.get(e, obs.at_ms), obs.at_ms)
        count[e] = count.get(e, 0) + 1
    return sorted(first, key=lambda e: (first[e], -count[e], e))[:limit]


def observations(rows: Iterable[Sequence[object]]) -> list[Observation]:
    """Observations of corpus rows ``[ts_ms, entity, host | null, metric, "up" | "down"]`` (ts as a number or a
    digit string). Raises ``ValueError`` naming the row for a malformed one."""
    out: list[Observation] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) < 4:
            raise ValueError(f"alert row {i}: expected [ts_ms, entity, host, metric, direction]")
        ts, entity, host, metric = row[0], row[1], row[2], row[3]
        direction = row[4] if len(row) > 4 else None
        try:
            at_ms = int(ts)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ValueError(f"alert row {i}: ts_ms {str(ts)[:40]!r} is not a number") from None
        out.append(
            Observation(
                at_ms=at_ms,
                entity=str(entity)[:NAME_MAX] if entity else None,
                host=str(host)[:NAME_MAX] if host else None,
                metric=str(metric)[:NAME_MAX] or "unknown",
                direction=Direction(direction) if direction in ("up", "down") else None,
            )
        )
    return out
