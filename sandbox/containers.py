"""The world model's Kubernetes side: the pods of each workload, their memory and OOM kills (``fixloop.sandbox.world``
documents the rules; this module computes them).

A workload's **spec** is what the Flux stand-in records from the rendered Deployment (``spec_of``): its namespace,
``spec.replicas`` and per container the ``env`` values and the ``resources`` quantities (Kubernetes quantity strings,
``256Mi``, ``100m``). An **epoch** is a span of time with one spec; its pods are ``<deployment>-<pod-template-hash>-
<suffix>`` (10 and 5 characters of Kubernetes' safe alphabet, hashed from the pod template and the index), so a
changed template (an image, an env value, a limit) replaces the pods and resets their restart counts, while a
replicas-only change keeps the pods it keeps. Each environment (``env``: ``production``, ``staging``, the Flux
Kustomization ``apps-<env>``'s name) has its own pods: the pod-template-hash is the template's (the same in every
namespace, as Kubernetes hashes it), the pod suffix is hashed with the environment too.

Rollout (a new template): the new ReplicaSet's pods are created at the apply and become Ready ``ready_s`` seconds
later (``SandboxConfig.rollout_ready_s``, default 2 s: a readiness probe passing; pods of the seeded state were Ready
all along); the old ReplicaSet's pods are deleted then (the whole new ReplicaSet is surged at once, as with
``maxSurge: 100%``, whatever the strategy says). A scale-down deletes pods at once. A new template whose image cannot
be pulled (``spec["pulls"]`` False: the sandbox registry lacks the tag) gets pods whose containers never start
(``pull_error``: waiting in ErrImagePull / ImagePullBackOff, never Ready, no retry) and the old pods stay; a later
template replaces both (a rollback to the old template keeps the old pods, as the Deployment scales its old
ReplicaSet back up).

Per container the working set it asks for is ``demand = BASE_WORKING_SET_MIB[service] + CACHE_SIZE_MB`` (MiB; the
env value, 0 when unset). A new container starts at its base and fills its cache at ``FILL_MIB_PER_S``; when the
demand exceeds ``resources.limits.memory`` the container reaches the limit, thrashes there for ``STALL_S`` (page
reclaim) and is OOMKilled: ``TERMINATED_S`` terminated (reason OOMKilled), then ``BACKOFF_S`` waiting
(CrashLoopBackOff), then restarted (``restartCount`` + 1) to fill again. The cycle's period is fixed (the kubelet's
back-off doubles from 10 s; fixed here so the rates are steady), and the pods of a workload are spread evenly over it
(pod ``i`` is ``i / replicas`` of a period ahead).

CPU: a service's requests cost ``CPU_MS_PER_REQUEST`` CPU milliseconds each, shared by its running containers; a
container's utilisation of ``resources.limits.cpu`` past ``THROTTLE_FROM`` throttles a share of its CFS periods
(``throttled``), and its usage never exceeds the limit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
BASE_WORKING_SET_MIB = {
    "storefront": 160.0,
    "payments": 180.0,
    "catalog": 140.0,
    "legacy-api": 150.0,
    "inventory": 80.0,
}
CPU_MS_PER_REQUEST = {"storefront": 4.0, "payments": 12.0, "catalog": 5.0, "legacy-api": 30.0, "inventory": 4.0}
THROTTLE_FROM = 0.6  # CPU utilisation of the limit (averaged) from which CFS throttles a bursty container
THROTTLE_SLOPE = 2.5  # throttled share of CFS periods = clamp(slope x (utilisation - THROTTLE_FROM), 0, 1)
CFS_PERIODS_PER_S = 10.0  # 100 ms CFS periods
CACHE_ENV = "CACHE_SIZE_MB"  # MB of in-memory cache a container keeps once warm (its working set grows by as many MiB)
FILL_MIB_PER_S = 8.0  # how fast a fresh container's working set grows towards its demand
STALL_S = 15.0  # seconds at the limit (page reclaim thrashing) before the OOM kill
TERMINATED_S = 5.0  # seconds in state terminated (reason OOMKilled) after a kill
BACKOFF_S = 10.0  # seconds in state waiting (CrashLoopBackOff) before the restart
SAMPLE_S = 5.0  # the longest step between the samples a bucket's value is taken from (midpoints)
SEEDED_ENV = {  # the env values of the seeded Deployments (apps/base/<service>/deployment.yaml)
    "storefront": {"CATALOG_URL": "http://catalog:80", "PAYMENTS_URL": "http://payments:80"},
    "catalog": {"INVENTORY_URL": "http://inventory:80", CACHE_ENV: "64"},
    "payments": {"LEGACY_API_URL": "http://legacy-api:80"},
    "inventory": {"DB_POOL_SIZE": "20"},
}
PRIMARY_ENV = "production"  # the environment the monitors watch and a spec without one belongs to
NAMESPACE = "shop-production"  # the namespace apps/production deploys to (the default when a spec names none)
IMAGE_PREFIX = "registry.sandbox.local/shop/"  # the seeded Deployments' images: <prefix><service>:<tag>
CLUSTER = "sandbox"
SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString's alphabet

_QUANTITY = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?\s*$")
_FACTORS = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 1024.0,
    "Mi": 1024.0**2,
    "Gi": 1024.0**3,
    "Ti": 1024.0**4,
    "Pi": 1024.0**5,
    "Ei": 1024.0**6,
}


def quantity(text: Any) -> float | None:
    """A Kubernetes resource quantity (``256Mi``, ``0.5``, ``100m``, ``1e3``; apimachinery ``resource.Quantity``
    syntax) as a number (bytes, cores); None when absent or not a quantity."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = _QUANTITY.match(text) if isinstance(text, str) else None
    return float(m[1]) * _FACTORS[m[2]] if m else None


def spec_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The parts of a rendered Deployment (its JSON) the world reads: ``{"namespace", "replicas", "containers":
    {name: {"image": reference, "env": {name: value}, "limits": {resource: quantity}, "requests": {...}}}}``
    (JSON-safe; ``replicas`` 1 when unset, as the API server defaults it)."""
    spec = deployment.get("spec") if isinstance(deployment.get("spec"), dict) else {}
    pod = ((spec.get("template") or {}).get("spec") or {}) if isinstance(spec.get("template"), dict) else {}
    containers: dict[str, Any] = {}
    for c in pod.get("containers") or []:
        if not isinstance(c, dict):
            continue
        res = c.get("resources") if isinstance(c.get("resources"), dict) else {}
        env = {
            str(e.get("name")): str(e.get("value"))
            for e in c.get("env") or []
            if isinstance(e, dict) and e.get("name") and "value" in e
        }
        containers[str(c.get("name", "?"))] = {
            "image": str(c.get("image", "")),
            "env": env,
            "limits": {str(k): str(v) for k, v in (res.get("limits") or {}).items()},
            "requests": {str(k): str(v) for k, v in (res.get("requests") or {}).items()},
        }
    replicas = spec.get("replicas", 1)
    return {
        "namespace": str((deployment.get("metadata") or {}).get("namespace") or NAMESPACE),
        "replicas": replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1,
        "containers": containers,
    }


def namespace_of(env: str) -> str:
    """The namespace ``apps/<env>`` deploys to: ``shop-<env>``."""
    return f"shop-{env}"


def default_spec(service: str, env: str = PRIMARY_ENV) -> dict[str, Any]:
    """The seeded ``apps/base/<service>/deployment.yaml`` as ``spec_of`` reads it (tests check they agree), in
    ``env``'s namespace: taken for a service whose deploys carry no spec."""
    container = {
        "image": f"{IMAGE_PREFIX}{service}:latest",
        "env": dict(SEEDED_ENV.get(service, {})),
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "100m", "memory": "128Mi"},
    }
    return {"namespace": namespace_of(env), "replicas": 2, "containers": {service: container}}


def _safe(*key: object, n: int) -> str:
    h = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=16).digest()
    return "".join(SAFE[b % len(SAFE)] for b in h[:n])


@dataclass(frozen=True)
class Container:
    """One container of one pod over its life: ``start`` (epoch s; -inf: running all along), ``end`` (replaced)."""

    service: str
    name: str
    pod: str
    replica_set: str
    namespace: str
    index: int
    replicas: int
    start: float
    end: float
    base_mib: float
    demand_mib: float
    limit_bytes: float | None
    request_bytes: float | None
    cpu_limit: float | None = None  # cores
    cpu_request: float | None = None
    env: str = PRIMARY_ENV
    image: str = ""  # the pod template's image reference of this container
    ready_at: float = -math.inf  # when its readiness probe first passes (epoch s)
    pull_error: bool = False  # its image cannot be pulled: it never starts

    @property
    def tags(self) -> dict[str, str]:
        return {
            "service": self.service,
            "env": self.env,
            "kube_cluster_name": CLUSTER,
            "kube_namespace": self.namespace,
            "kube_deployment": self.service,
            "kube_replica_set": self.replica_set,
            "kube_container_name": self.name,
            "pod_name": self.pod,
        }

    @property
    def ooms(self) -> bool:
        return self.limit_bytes is not None and self.demand_mib * MIB > self.limit_bytes

    @property
    def period(self) -> float:
        """Seconds of one fill-stall-kill-back-off cycle (``inf`` when it never OOMs)."""
        if not self.ooms:
            return math.inf
        assert self.limit_bytes is not None
        fill = max(0.0, self.limit_bytes / MIB - self.base_mib) / FILL_MIB_PER_S
        return fill + STALL_S + TERMINATED_S + BACKOFF_S

    def state(self, t: float) -> tuple[str, float, int, bool]:
        """At epoch second ``t`` (within the container's life): (``running``|``terminated``|``waiting``, working
        set bytes (0 when not running), restart count, whether its last termination was an OOM kill); a container
        whose image cannot be pulled is ``waiting`` all its life."""
        if self.pull_error:
            return "waiting", 0.0, 0, False
        if not self.ooms:
            if self.start == -math.inf:
                return "running", self.demand_mib * MIB, 0, False
            mib = min(self.demand_mib, self.base_mib + FILL_MIB_PER_S * max(0.0, t - self.start))
            return "running", mib * MIB, 0, False
        assert self.limit_bytes is not None
        period = self.period
        origin = self.start if self.start > -math.inf else 0.0
        tau = t - origin + self.index * period / self.replicas
        k = math.floor(tau / period)
        phase = tau - k * period
        k = max(0, k)
        up = period - TERMINATED_S - BACKOFF_S
        if phase < up:
            mib = min(self.limit_bytes / MIB, self.base_mib + FILL_MIB_PER_S * phase)
            return "running", mib * MIB, k, k > 0
        return ("terminated" if phase < up + TERMINATED_S else "waiting"), 0.0, k, True

    def admitted(self, t: float) -> bool:
        """Whether it is in its Service's endpoints' rotation at ``t``: its image pulled and its readiness probe
        passed once (a later crash counts as a container down, not as one never admitted)."""
        return not self.pull_error and t >= self.ready_at

    def ready(self, t: float) -> bool:
        """Whether it is Ready at ``t``: admitted and running."""
        return self.admitted(t) and self.state(t)[0] == "running"

    def since(self, t: float) -> float:
        """When the state ``state(t)`` reports began (epoch s; the container's start for one that never OOMs, which
        may be -inf: running all along)."""
        if not self.ooms:
            return self.start
        origin = self.start if self.start > -math.inf else 0.0
        tau = t - origin + self.index * self.period / self.replicas
        k = math.floor(tau / self.period)
        begin = t - (tau - k * self.period)
        up = self.period - TERMINATED_S - BACKOFF_S
        phase = t - begin
        at = begin if phase < up else begin + up if phase < up + TERMINATED_S else begin + up + TERMINATED_S
        return max(at, self.start)


def samples(a: float, b: float) -> list[float]:
    """The sample times of the bucket ``[a, b)``: midpoints of equal steps of at most ``SAMPLE_S``."""
    n = max(1, math.ceil((b - a) / SAMPLE_S - 1e-9))
    step = (b - a) / n
    return [a + (i + 0.5) * step for i in range(n)]


def containers(
    service: str,
    epochs: list[tuple[float, dict[str, Any]]],
    seed: int,
    env: str = PRIMARY_ENV,
    ready_s: float = 0.0,
) -> list[Container]:
    """The containers of ``service`` in ``env`` given its spec epochs ``[(from epoch s, spec)]`` (sorted; the first
    is taken to have run all along, pulled and Ready): a pod lives while its template hash and index stay in the
    spec; a replaced template's pods live until the new ones are Ready (``ready_s`` after their start), or on while
    the new template cannot be pulled (``spec["pulls"]`` False; see the module docstring)."""
    out: list[Container] = []
    live: dict[tuple[str, int, str], Container] = {}
    for n, (at, spec) in enumerate(epochs):
        start = -math.inf if n == 0 else at
        pulls = n == 0 or spec.get("pulls", True) is not False
        template = json.dumps(spec.get("containers", {}), sort_keys=True)
        rs_hash = _safe(seed, service, template, n=10)
        replicas = max(0, int(spec.get("replicas", 1)))
        wanted: dict[tuple[str, int, str], Container] = {}
        for i in range(replicas):
            pod = f"{service}-{rs_hash}-{_safe(seed, env, service, rs_hash, i, n=5)}"
            for cname, c in spec.get("containers", {}).items():
                key = (rs_hash, i, cname)
                cache = quantity(c.get("env", {}).get(CACHE_ENV)) or 0.0
                base = BASE_WORKING_SET_MIB.get(service, 100.0)
                prev = live.get(key)
                wanted[key] = Container(
                    service=service,
                    name=cname,
                    pod=pod,
                    replica_set=f"{service}-{rs_hash}",
                    namespace=str(spec.get("namespace") or namespace_of(env)),
                    index=i,
                    replicas=replicas,
                    start=prev.start if prev else start,
                    end=math.inf,
                    base_mib=base,
                    demand_mib=base + max(0.0, cache),
                    limit_bytes=quantity(c.get("limits", {}).get("memory")),
                    request_bytes=quantity(c.get("requests", {}).get("memory")),
                    cpu_limit=quantity(c.get("limits", {}).get("cpu")),
                    cpu_request=quantity(c.get("requests", {}).get("cpu")),
                    env=env,
                    image=str(c.get("image", "")),
                    ready_at=prev.ready_at if prev else (start + ready_s if start > -math.inf else -math.inf),
                    pull_error=prev.pull_error if prev else not pulls,
                )
        carried: dict[tuple[str, int, str], Container] = {}
        for key, c in live.items():
            if wanted.get(key) == c:
                continue
            if key in wanted or c.pull_error or key[0] == rs_hash:  # the same pod re-recorded, never started, scaled
                out.append(_ended(c, at))
            elif pulls:  # the old ReplicaSet's pod: deleted once the new pods are Ready
                out.append(_ended(c, at + ready_s))
            else:  # the new template cannot be pulled: the old pod keeps serving
                carried[key] = c
        live = {**carried, **{k: (live[k] if live.get(k) == c else c) for k, c in wanted.items()}}
    return out + list(live.values())


def _ended(c: Container, at: float) -> Container:
    return Container(**{**c.__dict__, "end": at})


def throttled(demand_cores: float, limit_cores: float | None) -> float:
    """The share of CFS periods throttled for a container asking ``demand_cores`` under ``limit_cores`` (0 without
    a limit)."""
    if not limit_cores:
        return 0.0
    return max(0.0, min(1.0, THROTTLE_SLOPE * (demand_cores / limit_cores - THROTTLE_FROM)))
