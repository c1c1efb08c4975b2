"""A seeded, deterministic model of the services the sandbox's GitOps repo deploys, behind the Datadog stand-in.

Services and their baselines (daily means; ``hits`` req/s, ``errors`` errors/s = hits x error ratio, ``latency_p95``
milliseconds):

=============  ========  ======  ===========  ========  ==================================================
service        language  hits/s  error ratio  p95 (ms)  seeded state
=============  ========  ======  ===========  ========  ==================================================
storefront     node      120     1.0 %        180       healthy
payments       python    40      1.25 %       320       healthy
catalog        alpine    90      0.5 %        90        healthy
legacy-api     debian    15      2.0 %        450       errors x4 while built FROM debian buster (alerting)
inventory      go        60      0.25 %       45        healthy
=============  ========  ======  ===========  ========  ==================================================

Who calls whom (``CALLS``, as the seeded ``fixloop.yaml``'s ``topology:`` section and the Deployments' ``*_URL`` env
values say): storefront -> catalog, payments; catalog -> inventory; payments -> legacy-api.

Breakages (``BREAKAGES``; error ratio and p95 multipliers while the rule holds):

============  ========================================================  ======  ========  =========================
service       rule (image reference, or a watched repo file's text)     errors  p95       spreads to callers
============  ========================================================  ======  ========  =========================
legacy-api    debian buster/10 base image (seeded: alerting)            x4      x1.1      no
catalog       alpine 3.9.0-3.9.4 base image (seeded: errors alerting)   x2.5    x1.1      no
catalog       alpine edge / 3.2x base image                             x3      x1.6      no
payments      python 3.12 base image                                    x3      x1.6      no
payments      urllib3 2.x, Twisted 19+ or Werkzeug 0.15+ pinned         x3      x1.3-1.6  no
storefront    node 22 base image                                        x3      x1.6      no
inventory     ``DB_POOL_SIZE`` under 5 in apps/base/inventory/          x8      x4        yes: catalog x4.5 / x2.5,
              deployment.yaml (a person's change, not fixloop's)                          storefront x2.75 / x1.75
============  ========================================================  ======  ========  =========================

Spreading (``Effect.spreads``): a direct caller of a service under a spreading effect sees ``SPREAD_SHARE`` (half)
of the excess (``1 + share * (x - 1)``, errors and p95 each), ``SPREAD_LAG_S`` (2 s) later, and passes on the same
share of what it sees to its own callers, another 2 s later (requests time out on the callee and fail or slow the
caller). So an inventory pool exhaustion turns the six monitors of inventory, catalog and storefront to ``Alert``,
inventory's first; payments and legacy-api stay ``OK``. The other breakages do not spread (their callers degrade
gracefully), so that verifying a fix or a bump reads the changed service alone.

Environments: each environment (``production``, ``staging``: the Flux Kustomization ``apps-<env>``'s name) is a
world of its own with the same services, traffic model and rules, its own deploy history and pods, and noise of its
own. ``production`` always exists (the world before any deploy); another environment exists from its first recorded
deploy (before it: no series, no pods).

The value of (service, metric) in an environment over the bucket ``[t, t + interval)`` is a pure function of
``config.world_seed``, the environment, the bucket and its deploy history: mean x daily load curve x the
``BREAKAGES`` effects active in the bucket (time-weighted when a deploy falls inside it) x ``1 + cv * z``, where ``z``
is a standard normal drawn from ``blake2b(seed[, env], service, metric, interval, bucket)`` (the environment's name
in the key for every environment but production, whose draws stay those of the single-environment world) and
clipped to +-3. Coefficient of variation at 60 s buckets (``NOISE_CV``): hits 4 %, errors 10 %, p95 6 %; it shrinks
as ``sqrt(60 / interval)`` for coarser buckets. Request rate follows a daily sinusoid of +-15 % (peak 15:00 UTC); p95
rises 15 % of that with load. Buckets later than ``sb.clock()`` have no data; unknown services have no series at all.

Deploys: the Flux stand-in calls ``record_deploy(at, revision, workloads, files, specs, env, unpulled)`` after each
applied revision of each Kustomization that renders Deployments (``fixloop.sandbox.flux``: it passes the files the
*running image* was built from, not the applied revision's ``services/`` folder). A service's images (and the watched
files, see ``watches``) in an environment are those of its latest deploy at or before ``t`` (a deploy whose new pod
template cannot be pulled, ``unpulled``, keeps the previous images); before the first deploy that names a service,
its first recorded state is taken to have run all along (so the seeded repo's broken state shows in the history too;
with no deploy recorded at all, every service is at its baseline). Rules read workload image references and the
repo files ``watches`` names (``services/<svc>/Dockerfile``, ``services/payments/requirements*.txt``: the image's
source; ``apps/base/inventory/deployment.yaml``: the applied manifests). The history is persisted in
``sb.store("world")``.

Pods (``fixloop.sandbox.containers``): the Flux stand-in also records each rendered Deployment's ``spec.replicas``,
env values and ``resources`` (``specs``); a service whose deploys carry none runs its seeded spec (2 replicas,
``limits: {cpu: 500m, memory: 256Mi}``). A container asks for a working set of its service's base plus
``CACHE_SIZE_MB`` MiB:

===========  ==========  ==================================================================================
service      base (MiB)  seeded working set (limit 256 MiB)
===========  ==========  ==================================================================================
storefront   160         160 MiB
payments     180         180 MiB
catalog      140         204 MiB (``CACHE_SIZE_MB: "64"``)
legacy-api   150         150 MiB
inventory    80          80 MiB
===========  ==========  ==================================================================================

=================================================  ===============================================================
rule (manifest field -> effect)                    effect
=================================================  ===============================================================
working set (base + ``CACHE_SIZE_MB``) above       OOMKilled cycle per container: fills at 8 MiB/s from its base,
``resources.limits.memory`` (any workload; e.g.    15 s at the limit, OOMKilled (5 s terminated, 10 s
catalog ``CACHE_SIZE_MB`` 64 -> 160: 300 MiB       CrashLoopBackOff), restarted (``restartCount`` + 1); catalog's
> 256 MiB)                                         cycle is 44.5 s, its pods half a cycle apart. Error rate
                                                   x (1 + 12 x share of containers down), p95 x (1 + 2 x share
                                                   stalled at the limit): catalog x5.04 / x1.67. No spreading.
``resources.limits.memory`` raised above the       no OOM kill from the deploy on: new pods (new pod-template-
working set (a memory MR: peak 256 MiB x 1.3 ->    hash, restarts 0) fill to the working set and stay there.
``333Mi``)
``spec.replicas``                                  that many pods; a replicas-only change keeps the pods it keeps
CPU: requests x ``CPU_MS_PER_REQUEST`` (storefront  utilisation u of ``limits.cpu`` (seeded 500m) past 0.6 throttles
4, payments 12, catalog 5, legacy-api 30,          ``clamp(2.5 x (u - 0.6), 0, 1)`` of the CFS periods; p95 x (1 + 2
inventory 4 ms) shared by the running pods         x that share), errors unchanged. 2 pods: <= 55 % at peak load;
                                                   payments at 1 replica: 96 % at mean load (x2.8 p95); more
                                                   replicas (``spec.replicas``) lower it
=================================================  ===============================================================

Kubernetes series (``kube_series``, Datadog's kubelet check names, per container, tagged ``service``,
``env:<environment>``, ``kube_cluster_name:sandbox``, ``kube_namespace:shop-<environment>``, ``kube_deployment``,
``kube_replica_set``, ``kube_container_name``, ``pod_name``; the state ones ``reason:oomkilled`` /
``reason:crashloopbackoff``, ``reason:imagepullbackoff`` for a container whose image cannot be pulled):
``kubernetes.memory.usage`` (bytes, while running: the working set, 1 % noise, never above the limit),
``kubernetes.memory.limits`` /
``kubernetes.memory.requests`` (bytes), ``kubernetes.cpu.usage.total`` (nanocores, at most the limit),
``kubernetes.cpu.limits`` / ``kubernetes.cpu.requests`` (cores), ``kubernetes.cpu.cfs.periods`` (10 a second) and
``kubernetes.cpu.cfs.throttled.periods`` (of those, throttled), ``kubernetes.containers.restarts`` (the restart count),
``kubernetes.containers.state.terminated`` (1 while OOMKilled, else 0), ``kubernetes.containers.state.waiting``
(1 in CrashLoopBackOff, else 0), ``kubernetes.containers.last_state.terminated`` (1 once the container's last
termination was an OOM kill, else 0). The real agent sends the state metrics only while they are 1; the sandbox
sends the 0s too, so that a healed workload's monitor reads ``OK``, not ``No Data``. A bucket's value is the
rollup (avg, or the query's ``.rollup(max|min|sum)``) of samples at most 5 s apart, none later than ``sb.clock()``.

Rollouts (``fixloop.sandbox.containers``, "Rollout"): a new pod template's pods become Ready
``SandboxConfig.rollout_ready_s`` seconds (default 2) after the apply, the old ones are deleted then; only Ready
containers serve (``Container.admitted``: the OOM, throttling and CPU shares count those); a template whose image
cannot be pulled never serves, its old pods do. The error and latency effects of ``BREAKAGES`` switch at the apply.

Monitors (``MONITORS``, production's: their queries say ``env:production``): per service an error-rate and a
p95-latency monitor, evaluated over the last 5 minutes at ``sb.clock()`` (``SandboxConfig.monitor_window`` shortens
that for demos: a monitor then recovers within seconds): above ``critical`` -> ``Alert``, above ``warning`` ->
``Warn``, else ``OK``; no points -> ``No Data``. And per service an OOM monitor (ids 41000101-41000105,
"Containers OOMKilled on <service>"):
``max(last_5m):sum:kubernetes.containers.last_state.terminated{service:<svc>,env:production,reason:oomkilled} > 0``,
``Alert`` from the first OOM kill until a window after the last OOMKilled container was replaced.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fixloop.sandbox import containers as kube
from fixloop.sandbox.containers import PRIMARY_ENV

METRICS = ("hits", "errors", "latency_p95")  # req/s, errors/s, milliseconds
NOISE_CV = {"hits": 0.04, "errors": 0.10, "latency_p95": 0.06}  # at 60 s buckets
DAILY_AMPLITUDE = 0.15
PEAK_HOUR_UTC = 15.0
SPREAD_SHARE = 0.5  # of a spreading effect's excess (x - 1) that each caller sees, per hop
SPREAD_LAG_S = 2.0  # seconds a caller's share trails what its callee sees, per hop


@dataclass(frozen=True)
class Baseline:
    service: str
    language: str
    hits: float  # req/s, daily mean
    error_ratio: float  # failed requests / requests
    latency_p95_ms: float


SERVICES: dict[str, Baseline] = {
    b.service: b
    for b in (
        Baseline("storefront", "node", 120.0, 0.010, 180.0),
        Baseline("payments", "python", 40.0, 0.0125, 320.0),
        Baseline("catalog", "alpine", 90.0, 0.005, 90.0),
        Baseline("legacy-api", "debian", 15.0, 0.020, 450.0),
        Baseline("inventory", "go", 60.0, 0.0025, 45.0),
    )
}

# caller -> callees: the seeded fixloop.yaml's topology: section (tests check they agree)
CALLS: dict[str, tuple[str, ...]] = {
    "storefront": ("catalog", "payments"),
    "catalog": ("inventory",),
    "payments": ("legacy-api",),
}


@dataclass(frozen=True)
class Effect:
    """A rule: while ``service`` runs an image matching ``image`` (regex searched in each container's image
    reference) or a watched ``file`` (fnmatch glob of a repo path) whose text matches ``content`` (regex, multiline),
    its error rate is multiplied by ``error_rate_x`` and its p95 by ``latency_x``. ``spreads``: its callers
    (``CALLS``) see a share of it too (module docstring, "Spreading")."""

    service: str
    note: str
    image: str | None = None
    file: str | None = None
    content: str | None = None
    error_rate_x: float = 1.0
    latency_x: float = 1.0
    spreads: bool = False

    def active(self, images: list[str], files: dict[str, str]) -> bool:
        if self.image and any(re.search(self.image, ref) for ref in images):
            return True
        if self.file and self.content:
            return any(
                fnmatch.fnmatch(path, self.file) and re.search(self.content, text, re.M) for path, text in files.items()
            )
        return False


BREAKAGES: tuple[Effect, ...] = (
    # Seeded alert (the repo's legacy-api is built FROM debian:10.8): cleared by a bullseye/bookworm base image.
    Effect(
        "legacy-api",
        "Debian buster (EOL): expired CA bundle breaks TLS to the upstream bank API",
        image=r"debian:(?:buster|10)\b",
        file="services/legacy-api/Dockerfile",
        content=r"^FROM\s+(?:\S+/)?debian:(?:buster|10)\b",
        error_rate_x=4.0,
        latency_x=1.1,
    ),
    # Seeded alert (the repo's catalog is built FROM alpine:3.9.4): cleared by a later 3.9 patch release. The Trivy
    # report of alpine 3.9.4 lists OpenSSL 1.1.1b's CVE-2019-1549 (fork safety of the RNG, fixed in 1.1.1d); here
    # the pre-forking catalog workers share RNG state after fork and duplicate TLS session ids (simulated).
    Effect(
        "catalog",
        "alpine 3.9.4 (OpenSSL 1.1.1b): forked workers share RNG state, upstream TLS sessions fail (simulated)",
        image=r"alpine:3\.9\.[0-4]\b",
        file="services/catalog/Dockerfile",
        content=r"^FROM\s+(?:\S+/)?alpine:3\.9\.[0-4]\b",
        error_rate_x=2.5,
        latency_x=1.1,
    ),
    # Regressions a careless bump introduces (the verify step must catch them and revert).
    Effect(
        "catalog",
        "alpine edge/3.2x: musl DNS resolver change times out service discovery",
        image=r"alpine:(?:edge|3\.2\d)",
        file="services/catalog/Dockerfile",
        content=r"^FROM\s+(?:\S+/)?alpine:(?:edge|3\.2\d)",
        error_rate_x=3.0,
        latency_x=1.6,
    ),
    Effect(
        "payments",
        "Python 3.12: distutils removed, the payment gateway SDK fails on import paths it uses lazily",
        image=r"python:3\.12",
        file="services/payments/Dockerfile",
        content=r"^FROM\s+(?:\S+/)?python:3\.12",
        error_rate_x=3.0,
        latency_x=1.6,
    ),
    Effect(
        "payments",
        "urllib3 2.x: the payment gateway SDK passes removed arguments",
        file="services/payments/requirements*.txt",
        content=r"^urllib3\s*==\s*2\.",
        error_rate_x=3.0,
        latency_x=1.6,
    ),
    Effect(
        "payments",
        "Twisted 19+ (a major upgrade): the bank callback listener uses Twisted APIs its code predates (simulated)",
        file="services/payments/requirements*.txt",
        content=r"^Twisted\s*==\s*(?:19|2\d)\.",
        error_rate_x=3.0,
        latency_x=1.4,
    ),
    Effect(
        "payments",
        "Werkzeug 0.15+: ProxyFix was rewritten; the bank callback handler now trusts the wrong X-Forwarded-For hop "
        "and rejects the callbacks (simulated)",
        file="services/payments/requirements*.txt",
        content=r"^Werkzeug\s*==\s*(?:0\.(?:1[5-9]|[2-9]\d)|[1-9]\d*)\.",
        error_rate_x=3.0,
        latency_x=1.3,
    ),
    Effect(
        "storefront",
        "Node 22: native module ABI mismatch in the image resizer",
        image=r"node:22",
        file="services/storefront/Dockerfile",
        content=r"^FROM\s+(?:\S+/)?node:22",
        error_rate_x=3.0,
        latency_x=1.6,
    ),
    # A person's change (the demo's incident): a pool of under 5 database connections per pod for inventory's ~30
    # concurrent requests per pod; requests queue for a connection and time out, and so do its callers' requests.
    Effect(
        "inventory",
        "DB_POOL_SIZE under 5: requests queue for a database connection and time out (pool exhaustion, simulated)",
        file="apps/base/inventory/deployment.yaml",
        content=r"^\s*-\s*name:\s*DB_POOL_SIZE\s*\n\s*value:\s*[\"']?[0-4][\"']?\s*$",
        error_rate_x=8.0,
        latency_x=4.0,
        spreads=True,
    ),
)


@dataclass(frozen=True)
class MonitorDef:
    """A seeded Datadog metric monitor. ``query`` is in Datadog's monitor syntax; ``metric``/``scale`` say how
    the world metric maps to the queried value (p95 is queried in seconds, as APM reports it)."""

    id: int
    service: str
    kind: str  # "errors" | "latency" | "oom"
    name: str
    query: str
    metric: str
    scale: float
    critical: float
    warning: float | None
    priority: int
    env: str = PRIMARY_ENV  # the environment it watches (its query's env: term)

    @property
    def tags(self) -> list[str]:
        return [f"service:{self.service}", f"env:{self.env}", "team:platform", "managed-by:fixloop-sandbox"]


OOM_METRIC = "kubernetes.containers.last_state.terminated"


# service -> (error rate critical, warning) in errors/s, (p95 critical, warning) in seconds
_THRESHOLDS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "storefront": ((2.2, 1.7), (0.25, 0.22)),
    "payments": ((0.9, 0.7), (0.45, 0.4)),
    "catalog": ((0.8, 0.65), (0.125, 0.11)),
    "legacy-api": ((0.55, 0.42), (0.62, 0.55)),
    "inventory": ((0.27, 0.21), (0.062, 0.055)),
}
ERRORS_METRIC = "trace.http.request.errors"
LATENCY_METRIC = "trace.http.request.duration.by.service.95p"


def _monitors() -> tuple[MonitorDef, ...]:
    out = []
    for i, (svc, ((ec, ew), (lc, lw))) in enumerate(_THRESHOLDS.items()):
        scope = f"{{service:{svc},env:{PRIMARY_ENV}}}"
        errors = f"avg(last_5m):sum:{ERRORS_METRIC}{scope}.as_rate() > {ec}"
        latency = f"avg(last_5m):avg:{LATENCY_METRIC}{scope} > {lc}"
        mid = 41_000_001 + 2 * i
        out.append(MonitorDef(mid, svc, "errors", f"High error rate on {svc}", errors, "errors", 1.0, ec, ew, 2))
        out.append(
            MonitorDef(mid + 1, svc, "latency", f"High p95 latency on {svc}", latency, "latency_p95", 0.001, lc, lw, 3)
        )
    for i, svc in enumerate(_THRESHOLDS):
        oom = f"max(last_5m):sum:{OOM_METRIC}{{service:{svc},env:{PRIMARY_ENV},reason:oomkilled}} > 0"
        name = f"Containers OOMKilled on {svc}"
        out.append(MonitorDef(41_000_101 + i, svc, "oom", name, oom, OOM_METRIC, 1.0, 0.0, None, 2))
    return tuple(out)


MONITORS: tuple[MonitorDef, ...] = _monitors()
OOM_ERRORS_PER_DOWN = 12.0  # error rate x (1 + this x the share of a service's containers down after an OOM kill)
OOM_LATENCY_PER_STALL = 2.0  # p95 x (1 + this x the share of its containers stalled at their memory limit)
THROTTLE_LATENCY = 2.0  # p95 x (1 + this x the share of CFS periods throttled)
MEMORY_NOISE_CV = 0.01  # of kubernetes.memory.usage, per 5 s sample (never above the limit)
# the Kubernetes metrics the world serves (Datadog's kubelet check names; unit: bytes, or a count of containers)
KUBE_METRICS = (
    "kubernetes.memory.usage",
    "kubernetes.memory.limits",
    "kubernetes.memory.requests",
    "kubernetes.cpu.usage.total",
    "kubernetes.cpu.limits",
    "kubernetes.cpu.requests",
    "kubernetes.cpu.cfs.periods",
    "kubernetes.cpu.cfs.throttled.periods",
    "kubernetes.containers.restarts",
    "kubernetes.containers.state.terminated",
    "kubernetes.containers.state.waiting",
    "kubernetes.containers.last_state.terminated",
)
KUBE_REASONS = {  # the reason tag of the state metrics (Datadog lowercases tag values)
    "kubernetes.containers.state.terminated": "oomkilled",
    "kubernetes.containers.state.waiting": "crashloopbackoff",
    "kubernetes.containers.last_state.terminated": "oomkilled",
}
MONITOR_INTERVAL_S = 60


def watches(path: str) -> bool:
    """Whether a repo path is one the rules read (the Flux stand-in may pass only those to ``record_deploy``)."""
    return any(e.file and fnmatch.fnmatch(path, e.file) for e in BREAKAGES)


Step = tuple[list[float], list[tuple[float, float]]]  # change times (the first -inf) and (error x, latency x) from each


def _step(timeline: Step, at: float, state: tuple[float, float]) -> None:
    """Append ``state`` from ``at`` on (the first state holds from -inf; an unchanged state adds nothing)."""
    times, states = timeline
    if not states:
        times.append(-math.inf)
        states.append(state)
    elif states[-1] != state:
        times.append(at)
        states.append(state)


def _shift(timeline: Step, lag: float) -> Step:
    return [t + lag for t in timeline[0]], list(timeline[1])


def _map(timeline: Step, fn: Any) -> Step:
    return list(timeline[0]), [(fn(e), fn(lat)) for e, lat in timeline[1]]


def _product(parts: list[Step]) -> Step:
    """The step function that is the product of ``parts`` (each starting at -inf); ``([], [])`` for none."""
    out: Step = ([], [])
    for t in sorted({t for times, _ in parts for t in times}):
        ex = lx = 1.0
        for times, states in parts:
            e, lat = states[bisect.bisect_right(times, t) - 1]
            ex, lx = ex * e, lx * lat
        _step(out, t, (ex, lx))
    return out


def _epoch(t: datetime | float) -> float:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("naive datetime: use an aware UTC datetime")
        return t.timestamp()
    return float(t)


def _gauss(*key: object) -> float:
    """A standard normal draw that is a pure function of ``key`` (Box-Muller on blake2b), clipped to +-3."""
    h = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=16).digest()
    u1 = (int.from_bytes(h[:8], "big") + 1) / (2**64 + 1)
    u2 = int.from_bytes(h[8:], "big") / 2**64
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)
    return max(-3.0, min(3.0, z))


class World:
    """The sandbox's services: metrics as a function of time and each environment's deploy history, and the
    monitors on them (production's)."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.seed = sb.config.world_seed
        self.store = sb.store("world")
        with self.store.lock:
            self.store.data.setdefault("deploys", [])
        self._timeline: dict[str, dict[str, Step]] | None = None
        self._pods: dict[str, dict[str, list[kube.Container]]] | None = None

    # -- deploys ------------------------------------------------------------------------------------------------
    def record_deploy(
        self,
        at: datetime,
        revision: str,
        workloads: dict[str, dict[str, str]],
        files: dict[str, str] | None = None,
        specs: dict[str, dict[str, Any]] | None = None,
        env: str = PRIMARY_ENV,
        unpulled: dict[str, str] | None = None,
    ) -> None:
        """Record that ``revision`` was applied to environment ``env`` at ``at``: ``workloads`` maps service ->
        {container: image ref}; ``files`` ({repo path: text}, what the running images were built from and the
        applied manifests) is filtered to the paths ``watches`` accepts; ``specs`` maps service -> its rendered
        Deployment as ``fixloop.sandbox.containers.spec_of`` reads it (replicas, env, resources; a service without
        one keeps its previous spec, or the seeded one); ``unpulled`` maps service -> the image of its new pod
        template that cannot be pulled (its old pods keep running: the world keeps its previous images). Re-recording
        the same revision in the same environment with the same content is a no-op."""
        kept = {p: t for p, t in (files or {}).items() if watches(p)}
        entry = {
            "at": _epoch(at),
            "revision": revision,
            "env": env,
            "workloads": {s: dict(c) for s, c in workloads.items()},
            "files": kept,
            "specs": {s: dict(v) for s, v in (specs or {}).items()},
            "unpulled": dict(unpulled or {}),
        }
        with self.store.lock:
            deploys = self.store.data["deploys"]
            same = [d for d in deploys if d["revision"] == revision and _env(d) == env]
            if same and all(same[-1].get(k) == entry[k] for k in ("workloads", "files")):
                if same[-1].get("specs", {}) == entry["specs"] and same[-1].get("unpulled", {}) == entry["unpulled"]:
                    return
            deploys.append(entry)
            deploys.sort(key=lambda d: d["at"])
            self.store.save()
            self._timeline = None
            self._pods = None

    def deploys(self, env: str | None = None) -> list[dict[str, Any]]:
        """The recorded deploys, oldest first, of ``env`` (None: of every environment; an entry recorded without an
        environment is production's)."""
        with self.store.lock:
            return [dict(d) for d in self.store.data["deploys"] if env is None or _env(d) == env]

    def environments(self) -> list[str]:
        """The environments with a recorded deploy, and production (the world before any deploy), sorted."""
        with self.store.lock:
            return sorted({_env(d) for d in self.store.data["deploys"]} | {PRIMARY_ENV})

    def _build_timeline(self, env: str) -> dict[str, Step]:
        """service -> (change times, (error x, latency x) from each change on), its own effects and the shares its
        callees (in the same environment) spread to it; the first entry starts at -inf."""
        own, spread = self._own_timelines(env)
        felt: dict[str, Step] = {}

        def passed(callee: str, depth: int) -> list[Step]:
            """What ``callee`` passes on to a caller: the share of what it feels, ``SPREAD_LAG_S`` later."""
            if depth > len(SERVICES):
                raise ValueError(f"world: CALLS has a cycle through {callee}")
            f = feels(callee, depth + 1)
            return [_shift(_map(f, lambda x: 1 + SPREAD_SHARE * (x - 1)), SPREAD_LAG_S)] if f[0] else []

        def feels(svc: str, depth: int) -> Step:
            if svc not in felt:
                parts = [spread[svc]] if svc in spread else []
                for callee in CALLS.get(svc, ()):
                    parts += passed(callee, depth)
                felt[svc] = _product(parts)
            return felt[svc]

        out: dict[str, Step] = {}
        for svc in SERVICES:
            parts = [own[svc]] if svc in own else []
            for callee in CALLS.get(svc, ()):
                parts += passed(callee, 0)
            if parts:
                out[svc] = _product(parts)
        return out

    def _own_timelines(self, env: str) -> tuple[dict[str, Step], dict[str, Step]]:
        """Per service, the timeline of its own effects, and of its spreading ones only (``_build_timeline``)."""
        images: dict[str, list[str]] = {}
        files: dict[str, str] = {}
        own: dict[str, Step] = {}
        spread: dict[str, Step] = {}
        for d in self.deploys(env):
            files.update(d["files"])
            unpulled = d.get("unpulled") or {}
            for svc, containers in d["workloads"].items():
                if svc not in unpulled or svc not in images:  # a template that cannot be pulled changes nothing
                    images[svc] = list(containers.values())
            for svc in SERVICES:
                if svc not in images and not any(e.service == svc and e.file for e in BREAKAGES):
                    continue
                ex = lx = sx = sl = 1.0
                for e in BREAKAGES:
                    if e.service == svc and e.active(images.get(svc, []), files):
                        ex, lx = ex * e.error_rate_x, lx * e.latency_x
                        if e.spreads:
                            sx, sl = sx * e.error_rate_x, sl * e.latency_x
                _step(own.setdefault(svc, ([], [])), d["at"], (ex, lx))
                if any(e.service == svc and e.spreads for e in BREAKAGES):
                    _step(spread.setdefault(svc, ([], [])), d["at"], (sx, sl))
        return own, spread

    def _multipliers(self, service: str, a: float, b: float, env: str = PRIMARY_ENV) -> tuple[float, float]:
        """Time-weighted (error x, latency x) of ``service`` in ``env`` over [a, b)."""
        timelines = self._timeline  # one read: record_deploy may reset it meanwhile
        if timelines is None:
            timelines = self._timeline = {}
        timeline = timelines.get(env)
        if timeline is None:
            with self.store.lock:
                timeline = timelines[env] = self._build_timeline(env)
        times, states = timeline.get(service, ([], []))
        if not times:
            return 1.0, 1.0
        i = max(0, bisect.bisect_right(times, a) - 1)
        if i + 1 >= len(times) or times[i + 1] >= b:
            return states[i]
        ex = lx = 0.0
        t = a
        while t < b:
            nxt = min(b, times[i + 1]) if i + 1 < len(times) else b
            w = (nxt - t) / (b - a)
            ex, lx = ex + w * states[i][0], lx + w * states[i][1]
            t, i = nxt, i + 1
        return ex, lx

    # -- metrics ------------------------------------------------------------------------------------------------
    @staticmethod
    def load(t: float) -> float:
        """The daily load factor (mean 1): request rate multiplier at epoch second ``t``."""
        phase = (t / 86400.0) - (PEAK_HOUR_UTC / 24.0) + 0.25
        return 1.0 + DAILY_AMPLITUDE * math.sin(2 * math.pi * phase)

    def expected(
        self, service: str, metric: str, t: datetime | float, interval_s: int = 60, env: str = PRIMARY_ENV
    ) -> float | None:
        """The noise-free value in ``env`` over ``[t, t + interval_s)``; None for an unknown service or metric."""
        base = SERVICES.get(service)
        if base is None or metric not in METRICS:
            return None
        a = _epoch(t)
        mid = a + interval_s / 2
        ex, lx = self._multipliers(service, a, a + interval_s, env)
        if metric != "hits":
            ox, ol = self._oom_multipliers(service, a, a + interval_s, env)
            ex, lx = ex * ox, lx * ol
        hits = base.hits * self.load(mid)
        if metric == "hits":
            return hits
        if metric == "errors":
            return hits * base.error_ratio * ex
        return base.latency_p95_ms * (1 + 0.15 * (self.load(mid) - 1)) * lx

    def series(
        self,
        service: str,
        metric: str,
        start: datetime | float,
        end: datetime | float,
        interval_s: int = 60,
        env: str = PRIMARY_ENV,
    ) -> list[tuple[int, float | None]]:
        """``[(bucket start epoch ms, value)]`` in ``env`` for buckets ``ceil(start)..floor(end)`` aligned to
        ``interval_s`` and not later than ``sb.clock()``; ``[]`` for an unknown service, metric or environment."""
        if service not in SERVICES or metric not in METRICS or interval_s <= 0 or env not in self.environments():
            return []
        now = self.sb.clock().timestamp()
        first = math.ceil(_epoch(start) / interval_s) * interval_s
        last = math.floor(min(_epoch(end), now) / interval_s) * interval_s
        cv = NOISE_CV[metric] * min(2.0, math.sqrt(60.0 / interval_s))
        out: list[tuple[int, float | None]] = []
        for t in range(int(first), int(last) + 1, interval_s):
            mean = self.expected(service, metric, t, interval_s, env)
            z = _gauss(*self._noise(env), service, metric, interval_s, t // interval_s)
            out.append((t * 1000, None if mean is None else mean * max(0.05, 1 + cv * z)))
        return out

    def _noise(self, env: str) -> tuple[object, ...]:
        """The noise key of ``env``: the world seed, with the environment's name for every one but production (whose
        draws are those of the single-environment world, so its recorded figures hold)."""
        return (self.seed,) if env == PRIMARY_ENV else (self.seed, env)

    # -- pods (Kubernetes) -----------------------------------------------------------------------------------------
    def pods(self, service: str, env: str = PRIMARY_ENV) -> list[kube.Container]:
        """The containers ``service`` ran in ``env`` over its deploy history
        (``fixloop.sandbox.containers.containers``); ``[]`` for an environment without a deploy but production."""
        pods = self._pods  # one read: record_deploy may reset it meanwhile
        if pods is None:
            with self.store.lock:
                pods = self._pods = {e: self._build_pods(e) for e in self.environments()}
        return pods.get(env, {}).get(service, [])

    def _build_pods(self, env: str) -> dict[str, list[kube.Container]]:
        epochs: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        for d in self.deploys(env):
            unpulled = d.get("unpulled") or {}
            for svc, spec in (d.get("specs") or {}).items():
                spec = {**spec, "pulls": False} if svc in unpulled else spec
                if svc in SERVICES and (not epochs.get(svc) or epochs[svc][-1][1] != spec):
                    epochs.setdefault(svc, []).append((d["at"], spec))
        ready_s = float(getattr(self.sb.config, "rollout_ready_s", 0.0))
        return {
            svc: kube.containers(
                svc, epochs.get(svc) or [(-math.inf, kube.default_spec(svc, env))], self.seed, env, ready_s
            )
            for svc in SERVICES
        }

    def _oom_multipliers(self, service: str, a: float, b: float, env: str = PRIMARY_ENV) -> tuple[float, float]:
        """(error x, p95 x) of ``service``'s OOM kills and CPU throttling in ``env`` over ``[a, b)``: ``1 +
        OOM_ERRORS_PER_DOWN x`` the share of its serving containers (``Container.admitted``) down (terminated or
        backing off), ``1 + OOM_LATENCY_PER_STALL x`` the share stalled at their limit, averaged over the bucket's
        samples."""
        alive = [c for c in self.pods(service, env) if c.start < b and c.end > a and not c.pull_error]
        if not any(c.ooms or c.cpu_limit for c in alive):
            return 1.0, 1.0
        down = stall = throttle = 0.0
        times = kube.samples(a, b)
        for t in times:
            now = [c for c in alive if c.start <= t < c.end and c.admitted(t)]
            for c in now:
                state, used, _, _ = c.state(t)
                down += (state != "running") / len(now)
                stall += (state == "running" and c.limit_bytes is not None and used >= c.limit_bytes) / len(now)
                if state == "running":
                    throttle += kube.throttled(self.cpu_demand(c, t), c.cpu_limit) / len(now)
        n = len(times)
        latency = (1 + OOM_LATENCY_PER_STALL * stall / n) * (1 + THROTTLE_LATENCY * throttle / n)
        return 1 + OOM_ERRORS_PER_DOWN * down / n, latency

    def cpu_demand(self, c: kube.Container, t: float) -> float:
        """Cores ``c`` is asked for at ``t``: its service's request rate x CPU cost, shared by the running
        containers of its environment in rotation (0 when it is not running or not in rotation)."""
        if not c.ready(t):
            return 0.0
        running = sum(1 for o in self.pods(c.service, c.env) if o.start <= t < o.end and o.ready(t))
        hits = SERVICES[c.service].hits * self.load(t)
        return hits * kube.CPU_MS_PER_REQUEST.get(c.service, 5.0) / 1000 / max(1, running)

    def kube_series(
        self,
        metric: str,
        start: datetime | float,
        end: datetime | float,
        interval_s: int,
        agg: str = "avg",
        services: tuple[str, ...] | None = None,
        envs: tuple[str, ...] | None = None,
    ) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
        """Per container, ``(tags, [(bucket start epoch ms, value)])`` of the Kubernetes metric ``metric`` (a key of
        ``KUBE_METRICS``) for the buckets of ``series``, each the ``agg`` (avg|max|min|sum) of the bucket's samples
        while the container existed (``kubernetes.memory.usage``: while it ran), of ``services`` (default all) in
        ``envs`` (default every environment); ``[]`` for an unknown metric."""
        if metric not in KUBE_METRICS or interval_s <= 0:
            return []
        now = self.sb.clock().timestamp()
        first = math.ceil(_epoch(start) / interval_s) * interval_s
        last = math.floor(min(_epoch(end), now) / interval_s) * interval_s
        fold = {"avg": lambda v: sum(v) / len(v), "max": max, "min": min, "sum": sum}[agg]
        out = []
        wanted = [(e, s) for e in self.environments() if envs is None or e in envs for s in SERVICES]
        for env, svc in [(e, s) for e, s in wanted if services is None or s in services]:
            for c in self.pods(svc, env):
                lo = max(first, math.floor(c.start / interval_s) * interval_s if c.start > -math.inf else first)
                points = []
                for t in range(int(lo), int(last) + 1, interval_s):
                    if t >= c.end:
                        break
                    upto = min(t + interval_s, now)  # no sample from the future
                    times = kube.samples(t, upto) if upto > t else [float(t)]
                    vals = [v for s in times if (v := self._kube_value(c, metric, s))]
                    if vals:
                        points.append((t * 1000, fold([v[0] for v in vals])))
                if points:
                    tags = dict(c.tags)
                    if metric in KUBE_REASONS:
                        tags["reason"] = "imagepullbackoff" if c.pull_error else KUBE_REASONS[metric]
                    out.append((tags, points))
        return out

    def _kube_value(self, c: kube.Container, metric: str, t: float) -> tuple[float] | None:
        """``(value,)`` of ``metric`` for container ``c`` at ``t``, or None (no point: not alive, or not running for
        the usage)."""
        if not c.start <= t < c.end:
            return None
        state, used, restarts, last_oom = c.state(t)
        if metric == "kubernetes.memory.usage":
            if state != "running":
                return None
            z = _gauss(self.seed, c.pod, c.name, "memory", int(t // kube.SAMPLE_S))
            noisy = used * (1 + MEMORY_NOISE_CV * z)
            return (min(noisy, c.limit_bytes) if c.limit_bytes is not None else noisy,)
        if metric == "kubernetes.memory.limits":
            return None if c.limit_bytes is None else (c.limit_bytes,)
        if metric == "kubernetes.memory.requests":
            return None if c.request_bytes is None else (c.request_bytes,)
        if metric == "kubernetes.cpu.usage.total":  # nanocores
            demand = self.cpu_demand(c, t)
            return None if state != "running" else (min(demand, c.cpu_limit or math.inf) * 1e9,)
        if metric == "kubernetes.cpu.limits":
            return None if c.cpu_limit is None else (c.cpu_limit,)
        if metric == "kubernetes.cpu.requests":
            return None if c.cpu_request is None else (c.cpu_request,)
        if metric == "kubernetes.cpu.cfs.periods":
            return None if state != "running" or not c.cpu_limit else (kube.CFS_PERIODS_PER_S,)
        if metric == "kubernetes.cpu.cfs.throttled.periods":
            if state != "running" or not c.cpu_limit:
                return None
            return (kube.CFS_PERIODS_PER_S * kube.throttled(self.cpu_demand(c, t), c.cpu_limit),)
        if metric == "kubernetes.containers.restarts":
            return (float(restarts),)
        if metric == "kubernetes.containers.state.terminated":
            return (float(state == "terminated"),)
        if metric == "kubernetes.containers.state.waiting":
            return (float(state == "waiting"),)
        return (float(last_oom),)  # kubernetes.containers.last_state.terminated

    # -- monitors -----------------------------------------------------------------------------------------------
    def monitor(self, monitor_id: int) -> MonitorDef | None:
        return next((m for m in MONITORS if m.id == monitor_id), None)

    def monitor_value(self, mon: MonitorDef, at: datetime | None = None) -> float | None:
        """The monitor's evaluated value (avg over the last ``config.monitor_window`` seconds, 5 minutes unless
        configured, as the queries' ``last_5m`` say; in the query's unit) or None (no data)."""
        now = _epoch(at or self.sb.clock())
        window = self.sb.config.monitor_window
        interval = min(MONITOR_INTERVAL_S, max(1, int(window // 6)))
        if mon.kind == "oom":  # max over the window of the sum over the service's containers
            summed: dict[int, float] = {}
            found = self.kube_series(mon.metric, now - window, now, interval, services=(mon.service,), envs=(mon.env,))
            for _, points in found:
                for ts, v in points:
                    summed[ts] = summed.get(ts, 0.0) + v
            return max(summed.values()) if summed else None
        pts = [v for _, v in self.series(mon.service, mon.metric, now - window, now, interval, mon.env)]
        vals = [v * mon.scale for v in pts if v is not None]
        return sum(vals) / len(vals) if vals else None

    def monitor_state(self, mon: MonitorDef, at: datetime | None = None) -> str:
        """``Alert``/``Warn``/``OK``/``No Data`` at ``at`` (default ``sb.clock()``)."""
        value = self.monitor_value(mon, at)
        if value is None:
            return "No Data"
        if value > mon.critical:
            return "Alert"
        return "Warn" if mon.warning is not None and value > mon.warning else "OK"


def _env(deploy: dict[str, Any]) -> str:
    return str(deploy.get("env") or PRIMARY_ENV)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()
