"""``apps/v1`` Deployments and ``core/v1`` Pods of every environment: the rendered Deployments each Kustomization
applied (``flux-system/apps-staging`` -> namespace ``shop-staging``, ``apps-production`` -> ``shop-production``; the
first Kustomization wins a namespace/name two render), with a status computed from that environment's world pods at
``sb.clock()`` (``fixloop.sandbox.containers``), in the shapes of the Kubernetes API reference (compared with recorded
objects in ``tests/sandbox/test_workloads.py``).

Routes: ``GET /apis/apps/v1/namespaces/{ns}/deployments[/{name}]``, ``GET /apis/apps/v1/deployments``,
``GET /api/v1/namespaces/{ns}/pods[/{name}]`` (``labelSelector``: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k``, ``!k``, comma-joined; ``limit`` and ``continue`` paging).

Pods: one per world pod alive at ``sb.clock()`` (``<deployment>-<pod-template-hash>-<suffix>``), labelled with the
template's labels and ``pod-template-hash``, owned by ReplicaSet ``<deployment>-<hash>``. A container is ``running``
(ready), ``terminated`` (reason ``OOMKilled``, exit code 137) or ``waiting`` (``CrashLoopBackOff``, "back-off 10s
restarting failed container=..."); ``restartCount`` and ``lastState.terminated`` (OOMKilled) as the world says;
``image`` its ReplicaSet's template's (an old pod of a rollout keeps the old image), ``imageID``
``<repository>@sha256:<sha256 of the reference>``. A new container is running but not ready until
``SandboxConfig.rollout_ready_s`` after its start (readiness probe). A container whose image cannot be pulled (the
sandbox registry lacks the tag) is ``waiting`` with reason ``ErrImagePull`` for its first ``PULL_RETRY_S`` seconds,
then ``ImagePullBackOff`` ("Back-off pulling image ..."), never ready, ``imageID`` empty.

Deployment status (the deployment controller's fields; zero counts omitted as the API omits them): ``replicas``
(pods alive, old and new during a rollout), ``updatedReplicas`` (of the newest ReplicaSet), ``readyReplicas`` =
``availableReplicas`` (pods whose containers are all ready, of any ReplicaSet; minReadySeconds 0),
``unavailableReplicas`` (``spec.replicas`` - available), ``observedGeneration`` = ``generation`` (the controller is
instant here), conditions ``Available`` (``MinimumReplicasAvailable`` when at most 25 % (rounded down) of
``spec.replicas`` are unavailable) and ``Progressing``: ``NewReplicaSetAvailable`` from the first moment all updated
pods were available since the template changed, ``ProgressDeadlineExceeded`` (status False) when that did not happen
within ``spec.progressDeadlineSeconds`` (600 unless the manifest sets it), else ``ReplicaSetUpdated``. A rollout of a
pullable image completes ``rollout_ready_s`` after the apply.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query

from fixloop.sandbox.containers import BACKOFF_S, Container
from fixloop.sandbox.flux.objects import FLUX
from fixloop.sandbox.flux.reconciler import Flux, KubeError, env_name

router = APIRouter()
DEADLINE_S = 600  # spec.progressDeadlineSeconds' default
PULL_RETRY_S = 5.0  # seconds a container that cannot pull shows ErrImagePull before ImagePullBackOff
NODE = "sandbox-worker-1"


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex(*key: object) -> str:
    return hashlib.sha256("|".join(map(str, key)).encode()).hexdigest()


def _uid(*key: object) -> str:
    h = _hex(*key)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _not_found(resource: str, group: str, name: str) -> KubeError:
    full = f"{resource}.{group}" if group else resource
    return KubeError(404, "NotFound", f'{full} "{name}" not found', {"name": name, "group": group, "kind": resource})


def _deployments(flux: Flux) -> dict[tuple[str, str], dict[str, Any]]:
    """``(namespace, name) -> kept Deployment`` (``Flux._record_deployments``) of every Kustomization, each with the
    ``env`` its Kustomization deploys."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    with flux.store.lock:
        for key, state in sorted(flux.store.data["kustomizations"].items()):
            for name, kept in (state.get("deployments") or {}).items():
                ns = (kept["manifest"].get("metadata") or {}).get("namespace") or "default"
                out.setdefault((ns, name), {**kept, "env": env_name(key)})
    return out


def _alive(flux: Flux, name: str, env: str, t: float) -> list[Container]:
    return [c for c in flux.sb.world.pods(name, env) if c.start <= t < c.end]


def _ready(pod: list[Container], t: float) -> bool:
    return all(c.ready(t) for c in pod)


def _by_pod(containers: list[Container]) -> dict[str, list[Container]]:
    pods: dict[str, list[Container]] = {}
    for c in containers:
        pods.setdefault(c.pod, []).append(c)
    return pods


def deployment(flux: Flux, name: str, kept: dict[str, Any], now: float) -> dict[str, Any]:
    """The Deployment ``name`` (``kept``: its record, with its ``env``) as the API serves it at ``now`` (epoch s)."""
    manifest, env = kept["manifest"], kept["env"]
    meta, spec = dict(manifest.get("metadata") or {}), dict(manifest.get("spec") or {})
    wanted = spec.get("replicas", 1) if isinstance(spec.get("replicas", 1), int) else 1
    deadline = spec.get("progressDeadlineSeconds", DEADLINE_S)
    deadline = deadline if isinstance(deadline, int) and not isinstance(deadline, bool) else DEADLINE_S
    spec = {
        "progressDeadlineSeconds": deadline,
        "replicas": wanted,
        "revisionHistoryLimit": 10,
        "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
        **spec,
    }
    containers = flux.sb.world.pods(name, env)
    alive = [c for c in containers if c.start <= now < c.end]
    current = [c for c in containers if c.end == math.inf]
    rs = max(current, key=lambda c: c.start).replica_set if current else f"{name}-unknown"
    newest = min((c.start for c in current if c.replica_set == rs), default=-math.inf)
    pods = _by_pod(alive)
    updated = {p: cs for p, cs in pods.items() if all(c.replica_set == rs for c in cs)}
    ready = sum(_ready(cs, now) for cs in pods.values())
    status: dict[str, Any] = {"observedGeneration": kept["generation"]}
    counts = {
        "replicas": len(pods),
        "updatedReplicas": len(updated),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, wanted - ready),
    }
    status.update({k: v for k, v in counts.items() if v})
    origin = newest if newest > -math.inf else now - 86400
    since = _first_available(flux, name, env, rs, newest, wanted, min(now, origin + deadline))
    change = _ts(max(origin, 0.0))
    minimum = wanted - wanted // 4
    available = {
        "lastTransitionTime": change,
        "lastUpdateTime": change,
        "message": "Deployment has minimum availability."
        if ready >= minimum
        else "Deployment does not have minimum availability.",
        "reason": "MinimumReplicasAvailable" if ready >= minimum else "MinimumReplicasUnavailable",
        "status": "True" if ready >= minimum else "False",
        "type": "Available",
    }
    if since is not None:
        progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs}" has successfully progressed.', since)
    elif now - origin > deadline:
        progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs}" has timed out progressing.',
                       origin + deadline)  # fmt: skip
    else:
        progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs}" is progressing.', origin)
    st, reason, message, at = progressing
    status["conditions"] = [
        available,
        {
            "lastTransitionTime": change,
            "lastUpdateTime": _ts(max(at, 0.0)),
            "message": message,
            "reason": reason,
            "status": st,
            "type": "Progressing",
        },
    ]
    namespace = meta.get("namespace") or "default"
    meta.update(
        annotations={**(meta.get("annotations") or {}), "deployment.kubernetes.io/revision": str(kept["generation"])},
        creationTimestamp=kept["created"],
        generation=kept["generation"],
        namespace=namespace,
        resourceVersion=str(1000 + kept["generation"]),
        uid=kept["uid"],
    )
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec, "status": status}


def _first_available(
    flux: Flux, name: str, env: str, rs: str, newest: float, wanted: int, until: float
) -> float | None:
    """The first moment in ``[newest, until]`` (``newest``: the ReplicaSet ``rs``'s creation) when ``wanted`` of its
    pods were all ready, or None; the seeded template (``-inf``) counts as available all along. Checked each second
    and at each container's readiness time."""
    if newest == -math.inf:
        return until - 86400
    ours = [c for c in flux.sb.world.pods(name, env) if c.replica_set == rs]
    times = {newest + s for s in range(int(until - newest) + 1)} | {c.ready_at for c in ours}
    for t in sorted(x for x in times if newest <= x <= until):
        pods = _by_pod([c for c in ours if c.start <= t < c.end])
        if len(pods) >= wanted and all(_ready(cs, t) for cs in pods.values()):
            return t
    return None


def pod(flux: Flux, name: str, kept: dict[str, Any], pod_name: str, cs: list[Container], now: float) -> dict[str, Any]:
    """The Pod ``pod_name`` (its containers ``cs``) of Deployment ``name`` as the API serves it at ``now``."""
    manifest = kept["manifest"]
    template = (manifest.get("spec") or {}).get("template") or {}
    tspec = dict(template.get("spec") or {})
    namespace = (manifest.get("metadata") or {}).get("namespace") or "default"
    rs = cs[0].replica_set
    pod_hash = rs.rsplit("-", 1)[-1]
    uid = _uid("pod", pod_name)
    template_images = {str(c.get("name")): str(c.get("image", "")) for c in tspec.get("containers") or []}
    images = {c.name: c.image or template_images.get(c.name, "") for c in cs}
    tspec["containers"] = [
        {**c, "image": images.get(str(c.get("name")), c.get("image"))} for c in tspec.get("containers") or []
    ]
    started = min(c.start for c in cs)
    created = _ts(started if started > -math.inf else now - 86400)
    statuses = []
    for c in sorted(cs, key=lambda c: c.name):
        state, _used, restarts, last_oom = c.state(now)
        image = images.get(c.name, "")
        since = c.since(now)
        since_ts = _ts(since if since > -math.inf else now - 86400)
        cid = "containerd://" + _hex(pod_name, c.name, restarts)
        current: dict[str, Any]
        if c.pull_error:
            current = {"waiting": _pull_waiting(image, now - c.start)}
        elif state == "running":
            current = {"running": {"startedAt": since_ts}}
        elif state == "terminated":
            current = {"terminated": _oom(cid, since_ts, since_ts)}
        else:
            msg = f"back-off {int(BACKOFF_S)}s restarting failed container={c.name} pod={pod_name}_{namespace}({uid})"
            current = {"waiting": {"message": msg, "reason": "CrashLoopBackOff"}}
        last: dict[str, Any] = {}
        if last_oom and (restarts or state == "waiting"):  # backing off: the killed container is the last state
            prev = "containerd://" + _hex(pod_name, c.name, restarts if state == "waiting" else restarts - 1)
            last = {"terminated": _oom(prev, created, since_ts)}
        repo = re.sub(r"[:@].*$", "", image.rsplit("/", 1)[-1])
        repo = image[: len(image) - len(image.rsplit("/", 1)[-1])] + repo
        statuses.append(
            {
                "containerID": cid,
                "image": image,
                "imageID": "" if c.pull_error else f"{repo}@sha256:{_hex(image)}",
                "lastState": last,
                "name": c.name,
                "ready": c.ready(now),
                "restartCount": restarts,
                "started": state == "running",
                "state": current,
            }
        )
        if c.pull_error:
            statuses[-1].pop("containerID")
    unready = [s["name"] for s in statuses if not s["ready"]]
    ready = "False" if unready else "True"
    why = {"message": f"containers with unready status: [{' '.join(unready)}]", "reason": "ContainersNotReady"}

    def cond(type_: str, status: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"lastProbeTime": None, "lastTransitionTime": created, **(extra or {}), "status": status, "type": type_}

    labels = {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": pod_hash}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "creationTimestamp": created,
            "generateName": f"{rs}-",
            "labels": labels,
            "name": pod_name,
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "blockOwnerDeletion": True,
                    "controller": True,
                    "kind": "ReplicaSet",
                    "name": rs,
                    "uid": _uid("rs", rs),
                }
            ],
            "resourceVersion": str(int(now)),
            "uid": uid,
        },
        "spec": {
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "nodeName": NODE,
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoExecute", "key": k, "operator": "Exists", "tolerationSeconds": 300}
                for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
            ],
            **tspec,
        },
        "status": {
            "conditions": [
                cond("Initialized", "True"),
                cond("Ready", ready, why if unready else None),
                cond("ContainersReady", ready, why if unready else None),
                cond("PodScheduled", "True"),
            ],
            "containerStatuses": statuses,
            "hostIP": "10.89.0.2",
            "phase": "Running",
            "podIP": f"10.244.0.{int(_hex(pod_name)[:2], 16) % 250 + 2}",
            "qosClass": "Burstable",
            "startTime": created,
        },
    }


def _pull_waiting(image: str, waited: float) -> dict[str, str]:
    """The ``waiting`` state of a container whose image the registry lacks (containerd's messages)."""
    if waited < PULL_RETRY_S:
        return {
            "message": f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to '
            f'resolve reference "{image}": {image}: not found',
            "reason": "ErrImagePull",
        }
    return {"message": f'Back-off pulling image "{image}"', "reason": "ImagePullBackOff"}


def _oom(cid: str, started: str, finished: str) -> dict[str, Any]:
    return {"containerID": cid, "exitCode": 137, "finishedAt": finished, "reason": "OOMKilled", "startedAt": started}


def pods(flux: Flux, namespace: str) -> list[dict[str, Any]]:
    now = flux.sb.clock().timestamp()
    out = []
    for (ns, name), kept in sorted(_deployments(flux).items()):
        if ns != namespace:
            continue
        for pod_name, cs in sorted(_by_pod(_alive(flux, name, kept["env"], now)).items()):
            out.append(pod(flux, name, kept, pod_name, cs, now))
    return out


_REQ = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a label selector string (the API's syntax, see the module docstring);
    ``KubeError`` 400 for one that does not parse."""
    for part in re.split(r",(?![^(]*\))", selector) if selector.strip() else []:
        m = _REQ.match(part)
        if m is None:
            raise KubeError(400, "BadRequest", f"unable to parse requirement: {part[:100]!r}")
        neg, key, eq, value, setop, values = m.groups()
        have = labels.get(key)
        if eq:
            ok = (have == value) if eq in ("=", "==") else (have != value)
        elif setop:
            options = {v.strip() for v in values.split(",")}
            ok = (have in options) if setop == "in" else (have not in options)
        else:
            ok = (have is None) if neg else (have is not None)
        if not ok:
            return False
    return True


def _list(kind: str, api: str, items: list[dict[str, Any]], limit: int | None, cont: str | None) -> dict[str, Any]:
    start = int(cont) if cont and cont.isdigit() else 0
    end = len(items) if not limit else start + limit
    page = items[start:end]
    for item in page:
        item.pop("apiVersion", None), item.pop("kind", None)  # list items carry neither
    more = end < len(items)
    return {
        "apiVersion": api,
        "items": page,
        "kind": f"{kind}List",
        "metadata": {"resourceVersion": "1000", **({"continue": str(end)} if more else {})},
    }


@router.get("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
def get_deployment(ns: str, name: str, flux: Flux = FLUX) -> dict[str, Any]:
    kept = _deployments(flux).get((ns, name))
    if kept is None:
        raise _not_found("deployments", "apps", name)
    return deployment(flux, name, kept, flux.sb.clock().timestamp())


@router.get("/apis/apps/v1/namespaces/{ns}/deployments")
@router.get("/apis/apps/v1/deployments")
def list_deployments(
    ns: str | None = None,
    flux: Flux = FLUX,
    labelSelector: str = "",  # noqa: N803 - the API's parameter name
    limit: int | None = Query(default=None, ge=1),
    cont: str | None = Query(default=None, alias="continue"),
) -> dict[str, Any]:
    now = flux.sb.clock().timestamp()
    items = [deployment(flux, n, k, now) for (d_ns, n), k in sorted(_deployments(flux).items()) if ns in (None, d_ns)]
    items = [d for d in items if matches(labelSelector, d["metadata"].get("labels") or {})]
    return _list("Deployment", "apps/v1", items, limit, cont)


@router.get("/api/v1/namespaces/{ns}/pods/{name}")
def get_pod(ns: str, name: str, flux: Flux = FLUX) -> dict[str, Any]:
    found = next((p for p in pods(flux, ns) if p["metadata"]["name"] == name), None)
    if found is None:
        raise _not_found("pods", "", name)
    return found


@router.get("/api/v1/namespaces/{ns}/pods")
def list_pods(
    ns: str,
    flux: Flux = FLUX,
    labelSelector: str = "",  # noqa: N803 - the API's parameter name
    limit: int | None = Query(default=None, ge=1),
    cont: str | None = Query(default=None, alias="continue"),
) -> dict[str, Any]:
    items = [p for p in pods(flux, ns) if matches(labelSelector, p["metadata"]["labels"])]
    return _list("Pod", "v1", items, limit, cont)
