"""``HelmRelease`` objects (``helm.toolkit.fluxcd.io/v2``) declared in ``clusters/sandbox/*.yaml``, with the status
helm-controller would give them, derived by the stand-in at each reconciliation (``reconcile``, called by
``Flux.reconcile`` after the Kustomizations). None is declared in the seed.

What it models (fluxcd/helm-controller ``docs/spec/v2/helmreleases.md``, "HelmRelease Status"; shapes compared with
the recorded objects in ``tests/sandbox/test_helmreleases.py``)
  * The chart is ``spec.chart.spec.chart``, a folder of the GitOps repository (``./charts/<name>``) from the
    ``GitRepository`` ``flux-system/flux-system``; its ``Chart.yaml`` must parse as a mapping with a string ``name``
    and a SemVer ``version``, its ``values.yaml`` (optional) as a mapping. Templates are not rendered and nothing runs
    in the world: only the status is modelled. A chart version is Chart.yaml's, with ``+<first 12 hex of the
    commit>`` when ``spec.chart.spec.reconcileStrategy`` is ``Revision`` (as source-controller builds it).
  * A Helm action runs when the chart version or the values digest (``configDigest``: ``sha256:`` of the canonical
    JSON of ``spec.values``; not byte-identical to helm-controller's) differs from the newest release, or after a
    failed one when the spec or the chart changed: ``install`` first, then ``upgrade``.
  * Success: a new ``status.history[0]`` (``status: deployed``, ``version`` N+1, the previous deployed release
    ``superseded``; at most ``spec.maxHistory``, default 5), ``Ready``/``Released`` True with reason
    ``InstallSucceeded``/``UpgradeSucceeded`` and message "Helm upgrade succeeded for release <ns>/<release>.v<N>
    with chart <chart>@<version>", failure counters reset.
  * Failure (a Chart.yaml or values.yaml that does not parse or is invalid): a history entry with ``status:
    failed``, ``Ready``/``Released`` False with reason ``UpgradeFailed`` (``InstallFailed`` when nothing was
    deployed before) and message "Helm upgrade failed for release <ns>/<release> with chart <chart>@<version>:
    <error>", ``failures`` and ``upgradeFailures``/``installFailures`` + 1. (A real helm-controller reports a chart
    that does not build as ``ArtifactFailed`` before any Helm action; the sandbox folds it into the failed action.)
    A chart folder without ``Chart.yaml`` or another source: Ready=False ``ArtifactFailed``, no history entry.
  * ``status``: ``observedGeneration``, ``lastAttemptedGeneration``, ``lastAttemptedRevision`` (chart version),
    ``lastAttemptedConfigDigest``, ``lastAttemptedReleaseAction``, ``helmChart`` (``flux-system/<ns>-<name>``),
    ``storageNamespace``, ``history``; ``metadata.generation`` + 1 when the declared spec changes. No events are
    emitted for HelmReleases.

Routes: ``GET /apis/helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases[/{name}]`` and
``/apis/helm.toolkit.fluxcd.io/v2/helmreleases`` (a ``HelmReleaseList``); 404 ``NotFound``
``helmreleases.helm.toolkit.fluxcd.io "<name>" not found``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter

from fixloop.sandbox.flux.objects import FLUX
from fixloop.sandbox.flux.reconciler import CLUSTER_DIR, SOURCE_KEY, Flux, KubeError, _condition, ts
from fixloop.sandbox.kustomize import BuildError, Snapshot, load_yaml_documents

log = logging.getLogger(__name__)

GROUP, VERSION, RESOURCE, KIND = "helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease"
HISTORY_DEFAULT = 5  # spec.maxHistory's default
ERROR_MAX = 400
# SemVer 2 (semver.org), as Helm requires of Chart.yaml's version
SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$",
)
router = APIRouter()


class ChartError(Exception):
    """The chart cannot be built; ``artifact``: it is missing altogether (``ArtifactFailed``); ``name`` and
    ``version``: what could be read of it (the version with its ``+<sha>`` under ``reconcileStrategy: Revision``)."""

    def __init__(self, message: str, artifact: bool = False, name: str = "", version: str = "") -> None:
        super().__init__(message)
        self.artifact, self.name, self.version = artifact, name, version


def _not_found(name: str) -> KubeError:
    return KubeError(
        404, "NotFound", f'{RESOURCE}.{GROUP} "{name}" not found', {"name": name, "group": GROUP, "kind": RESOURCE}
    )


def _objects(flux: Flux) -> dict[str, dict[str, Any]]:
    return {k: v["object"] for k, v in flux.store.data.get("helmreleases", {}).items()}


@router.get(f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{RESOURCE}/{{name}}")
def get_one(ns: str, name: str, flux: Flux = FLUX) -> dict[str, Any]:
    with flux.store.lock:
        obj = _objects(flux).get(f"{ns}/{name}")
        if obj is None:
            raise _not_found(name)
        return json.loads(json.dumps(obj))


def _list(flux: Flux, ns: str | None) -> dict[str, Any]:
    return flux.object_list(lambda: _objects(flux), f"{GROUP}/{VERSION}", KIND, ns)


@router.get(f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{RESOURCE}")
def list_ns(ns: str, flux: Flux = FLUX) -> dict[str, Any]:
    return _list(flux, ns)


@router.get(f"/apis/{GROUP}/{VERSION}/{RESOURCE}")
def list_all(flux: Flux = FLUX) -> dict[str, Any]:
    return _list(flux, None)


# -- reconciliation ---------------------------------------------------------------------------------------------
def _declared(snap: Snapshot) -> dict[str, dict[str, Any]] | None:
    """The HelmReleases of ``clusters/sandbox`` (``namespace/name`` -> document); None when that does not parse."""
    found: dict[str, dict[str, Any]] = {}
    try:
        for path in snap.listdir(CLUSTER_DIR):
            if path.endswith((".yaml", ".yml")):
                for doc in load_yaml_documents(snap.read(path), path):
                    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
                        continue
                    if doc.get("kind") == KIND and str(doc.get("apiVersion", "")).startswith(GROUP + "/"):
                        meta = doc["metadata"]
                        found[f"{meta.get('namespace') or 'flux-system'}/{meta.get('name')}"] = doc
    except BuildError as e:
        log.warning("flux: %s does not parse, keeping the previous HelmReleases: %s", CLUSTER_DIR, e)
        return None
    return found


def _chart(snap: Snapshot, spec: dict[str, Any], head: str) -> tuple[str, str, str]:
    """``(name, version, appVersion)`` of the declared chart at ``head``; ``ChartError`` when it does not build."""
    chart = spec.get("chart", {}).get("spec", {}) if isinstance(spec.get("chart"), dict) else {}
    chart = chart if isinstance(chart, dict) else {}
    ref = chart.get("sourceRef") if isinstance(chart.get("sourceRef"), dict) else {}
    source = f"{ref.get('namespace') or 'flux-system'}/{ref.get('name')}"
    if ref.get("kind") != "GitRepository" or source != SOURCE_KEY:
        raise ChartError(f"the sandbox builds charts from GitRepository {SOURCE_KEY} only, not {source}", True)
    folder = posixpath.normpath(str(chart.get("chart") or "").strip()).strip("/")
    if folder in ("", ".") or folder.startswith(".."):
        raise ChartError(f"chart path {chart.get('chart')!r} is not a folder of the repository", True)
    if f"{folder}/Chart.yaml" not in snap.files:
        raise ChartError(f"no chart found at '{folder}': Chart.yaml file is missing", True)
    revision = chart.get("reconcileStrategy") == "Revision"
    name = version = ""

    def fail(message: str) -> ChartError:
        full = f"{version.split('+')[0]}+{head[:12]}" if revision and version else version
        return ChartError(message, name=name, version=full)

    try:
        docs = load_yaml_documents(snap.read(f"{folder}/Chart.yaml"), f"{folder}/Chart.yaml")
    except BuildError as e:
        raise fail(str(e)) from None
    meta = docs[0] if len(docs) == 1 and isinstance(docs[0], dict) else {}
    name = meta["name"] if isinstance(meta.get("name"), str) else ""
    version = meta["version"] if isinstance(meta.get("version"), str) else ""
    if not name:
        raise fail(f"validation: chart.metadata.name is required ({folder}/Chart.yaml)")
    if not SEMVER.match(version):
        raise fail(f"validation: chart.metadata.version {meta.get('version')!r} is invalid ({folder}/Chart.yaml)")
    if f"{folder}/values.yaml" in snap.files:
        try:
            values = load_yaml_documents(snap.read(f"{folder}/values.yaml"), f"{folder}/values.yaml")
        except BuildError as e:
            raise fail(str(e)) from None
        if values and not isinstance(values[0], dict):
            raise fail(f"{folder}/values.yaml: values are not a map")
    if revision:
        version = f"{version.split('+')[0]}+{head[:12]}"
    return name, version, str(meta.get("appVersion") or "")


def reconcile(flux: Flux, snap: Snapshot, head: str, now: datetime) -> None:
    """Reconcile every declared HelmRelease at commit ``head`` (see the module docstring); removed ones go."""
    declared = _declared(snap)
    if declared is None:
        return
    with flux.store.lock:
        states = flux.store.data.setdefault("helmreleases", {})
        for key in [k for k in states if k not in declared]:
            del states[key]
        for key, doc in declared.items():
            _reconcile_one(flux, states, key, doc, snap, head, now)


def _reconcile_one(
    flux: Flux, states: dict[str, Any], key: str, doc: dict[str, Any], snap: Snapshot, head: str, now: datetime
) -> None:
    spec = json.loads(json.dumps(doc.get("spec") if isinstance(doc.get("spec"), dict) else {}, default=str))
    state = states.get(key)
    if state is None:
        obj = flux._new_object(GROUP, KIND, key, spec, now)
        obj["apiVersion"] = f"{GROUP}/{VERSION}"  # the reconciler's objects are v1
        state = states[key] = {"object": obj, "head": None}
    obj = state["object"]
    if obj["spec"] != spec:
        obj["spec"], obj["metadata"]["generation"] = spec, obj["metadata"]["generation"] + 1
    gen, status = obj["metadata"]["generation"], obj["status"]
    if state.get("head") == head and status.get("lastAttemptedGeneration", status.get("observedGeneration")) == gen:
        return
    state["head"] = head
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    release_ns = spec.get("targetNamespace") or ns
    release = spec.get("releaseName") or (f"{spec['targetNamespace']}-{name}" if spec.get("targetNamespace") else name)
    values = spec.get("values") if isinstance(spec.get("values"), dict) else {}
    digest = "sha256:" + hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    history: list[dict[str, Any]] = status.get("history", [])
    deployed_before = any(h.get("status") in ("deployed", "superseded") for h in history)
    action = "upgrade" if deployed_before else "install"
    base = {
        "observedGeneration": gen,
        "lastAttemptedGeneration": gen,
        "helmChart": f"flux-system/{ns}-{name}",
        "storageNamespace": release_ns,
        "history": history,
    }
    for counter in ("failures", "installFailures", "upgradeFailures"):
        if counter in status:
            base[counter] = status[counter]
    try:
        chart, version, app_version = _chart(snap, spec, head)
    except ChartError as e:
        if e.artifact:
            message = " ".join(str(e).split())[:ERROR_MAX]
            base["conditions"] = [_condition(obj, "Ready", "False", "ArtifactFailed", message, now, gen)]
            base.update({k: status[k] for k in ("lastAttemptedRevision", "lastAttemptedConfigDigest") if k in status})
            _write(flux, obj, base)
            return
        newest = history[0] if history else None
        if newest and newest.get("status") == "failed" and newest.get("chartVersion") == e.version:
            if newest.get("configDigest") == digest:  # the same broken chart: no new attempt
                _write(flux, obj, {**status, "observedGeneration": gen, "lastAttemptedGeneration": gen})
                return
        _release(flux, obj, base, release_ns, release, e.name, e.version, "", digest, action, now, error=str(e))
        return
    newest = history[0] if history else None
    same = (
        newest is not None
        and newest.get("chartVersion") == version
        and newest.get("configDigest") == digest
        and newest.get("chartName") == chart
    )
    if same and newest is not None and newest.get("status") == "deployed":
        message = (
            f"Helm {newest.get('action', action)} succeeded for release {release_ns}/{release}.v{newest['version']} "
            f"with chart {chart}@{version}"
        )
        reason = "UpgradeSucceeded" if newest.get("action") == "upgrade" else "InstallSucceeded"
        base["conditions"] = [
            _condition(obj, "Ready", "True", reason, message, now, gen),
            _condition(obj, "Released", "True", reason, message, now, gen),
        ]
        base.update(lastAttemptedRevision=version, lastAttemptedConfigDigest=digest, lastAttemptedReleaseAction=action)
        _write(flux, obj, base)
        return
    _release(flux, obj, base, release_ns, release, chart, version, app_version, digest, action, now)


def _release(
    flux: Flux,
    obj: dict[str, Any],
    base: dict[str, Any],
    release_ns: str,
    release: str,
    chart: str,
    version: str,
    app_version: str,
    digest: str,
    action: str,
    now: datetime,
    error: str | None = None,
) -> None:
    """Run the Helm action: a new history entry, deployed or failed, and the conditions helm-controller sets."""
    spec, gen = obj["spec"], obj["metadata"]["generation"]
    history = [dict(h) for h in base["history"]]
    number = max((h.get("version", 0) for h in history), default=0) + 1
    chart = chart or posixpath.basename(str(((spec.get("chart") or {}).get("spec") or {}).get("chart") or "chart"))
    entry = {
        "appVersion": app_version,
        "chartName": chart,
        "chartVersion": version,
        "configDigest": digest,
        "digest": "sha256:"
        + hashlib.sha256(f"{release_ns}/{release}.v{number}|{chart}@{version}".encode()).hexdigest(),
        "firstDeployed": next((h["firstDeployed"] for h in reversed(history) if "firstDeployed" in h), ts(now)),
        "lastDeployed": ts(now),
        "name": release,
        "namespace": release_ns,
        "status": "failed" if error else "deployed",
        "action": action,
        "version": number,
    }
    if not error:
        for h in history:
            if h.get("status") == "deployed":
                h["status"] = "superseded"
    history.insert(0, entry)
    keep = spec.get("maxHistory") if isinstance(spec.get("maxHistory"), int) and spec["maxHistory"] > 0 else None
    del history[keep or HISTORY_DEFAULT :]
    verb = action.capitalize()
    if error:
        detail = " ".join(error.split())[:ERROR_MAX]
        message = f"Helm {action} failed for release {release_ns}/{release} with chart {chart}@{version}: {detail}"
        reason = f"{verb}Failed"
        base["conditions"] = [
            _condition(obj, "Ready", "False", reason, message, now, gen),
            _condition(obj, "Released", "False", reason, message, now, gen),
        ]
        base["failures"] = base.get("failures", 0) + 1
        counter = f"{action}Failures"
        base[counter] = base.get(counter, 0) + 1
    else:
        message = f"Helm {action} succeeded for release {release_ns}/{release}.v{number} with chart {chart}@{version}"
        reason = f"{verb}Succeeded"
        base["conditions"] = [
            _condition(obj, "Ready", "True", reason, message, now, gen, moved=True),
            _condition(obj, "Released", "True", reason, message, now, gen, moved=True),
        ]
        for counter in ("failures", "installFailures", "upgradeFailures"):
            base.pop(counter, None)
    base.update(
        history=history,
        lastAttemptedRevision=version,
        lastAttemptedConfigDigest=digest,
        lastAttemptedReleaseAction=action,
    )
    _write(flux, obj, base)


def _write(flux: Flux, obj: dict[str, Any], status: dict[str, Any]) -> None:
    obj["status"] = dict(sorted(status.items()))
    obj["metadata"]["resourceVersion"] = flux._next_rv()
