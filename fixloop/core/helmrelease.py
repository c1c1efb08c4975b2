"""A Flux HelmRelease's verdict: deployed, failed or progressing, and which chart and values it released. Pure, on
the object as the Kubernetes API serves it (a dict of ``helm.toolkit.fluxcd.io`` ``v2``, ``v2beta2`` or
``v2beta1``).

Sources: fluxcd/helm-controller ``docs/spec/v2/helmreleases.md`` ("HelmRelease Status": History, Conditions, Failure
Counters, Observed Generation, Last Attempted Revision / Config Digest / Release Action) and
``docs/spec/v2beta1/helmreleases.md`` (status examples "Install success", "Upgrade failure"); source-controller
``internal/controller/helmchart_controller.go`` (``reconcileStrategy: Revision``, below).

What is read
  * ``metadata``: ``name``, ``namespace``, ``generation``; ``status.observedGeneration`` (the latest generation
    that ended Ready or stalled) and, v2, ``status.lastAttemptedGeneration``.
  * ``status.conditions[]`` (metav1.Condition): ``Ready`` (True: installed/upgraded, tested, up to date, reasons
    ``InstallSucceeded``/``UpgradeSucceeded``/``TestSucceeded``, v2beta1 ``ReconciliationSucceeded``; False:
    ``InstallFailed``, ``UpgradeFailed``, ``TestFailed``, ``RollbackSucceeded``, ``RollbackFailed``,
    ``UninstallSucceeded``, ``UninstallFailed``, ``ArtifactFailed``, ``DependencyNotReady`` or any error; Unknown
    ``Progressing`` while a Helm action runs), ``Released``, ``TestSuccess``, ``Remediated`` (True after a rollback
    or uninstall), ``Reconciling``, ``Stalled`` (``RetriesExceeded``).
  * v2 ``status.history[]``, newest first (at most ``spec.maxHistory``, default 5): ``chartName``,
    ``chartVersion``, ``appVersion``, ``configDigest`` (digest of the values), ``digest``, ``ociDigest``,
    ``status`` (Helm's: ``deployed``, ``failed``, ``superseded``, ``pending-install``, ``pending-upgrade``,
    ``pending-rollback``, ``uninstalled``, ...), ``action`` (``install``/``upgrade``), ``version`` (the Helm release
    number, ``<name>.v<version>``), ``firstDeployed``/``lastDeployed``; ``status.lastAttemptedRevision`` (the chart
    version last attempted), ``lastAttemptedConfigDigest``, ``lastAttemptedReleaseAction``, ``failures``,
    ``installFailures``, ``upgradeFailures``, ``helmChart`` (``<namespace>/<name>`` of the HelmChart),
    ``inventory.entries[]`` (``<namespace>_<name>_<group>_<kind>``: the workloads the release applied).
  * v2beta1/v2beta2: ``status.lastAppliedRevision`` / ``lastAttemptedRevision`` (chart versions),
    ``lastAttemptedValuesChecksum`` (SHA-1 of the values), ``lastReleaseRevision`` (the Helm release number).

The verdict (``state``)
  * **deployed**: Ready=True, the status is current (``observedGeneration >= generation``; v2:
    ``lastAttemptedGeneration``, when set, too) and the last attempt did not fail;
  * **failed**: the last attempt failed (``attempt_failed``): the latest history entry's status is ``failed``,
    ``Released`` or ``TestSuccess`` is False, ``Remediated`` or ``Stalled`` is True, Ready=False with a Helm action
    reason (``ACTION_FAILURES``), or (v2beta1) Ready=False with ``lastAttemptedRevision`` != ``lastAppliedRevision``;
    or Ready=False for any other reason (a chart that does not build, a dependency not ready);
  * **progressing**: anything else (Ready Unknown or absent, a generation not observed yet).

The chart revision (``source_sha``): a chart from a GitRepository or Bucket with ``spec.chart.spec.reconcileStrategy:
Revision`` gets the version ``<Chart.yaml version>+<first 12 hex of the source revision>`` (and ``.<HelmChart
generation>`` appended when ``valuesFiles`` are set): that 12-hex build metadata is the commit the chart was built
from, and is what ``holds`` compares with a commit sha. With the default ``ChartVersion`` strategy (and for charts from
a HelmRepository) the version is Chart.yaml's alone (a chart from an OCI registry gets ``+<first 12 hex of its
``ociDigest``>``, which names no commit and is not read as one): it names no commit, and a chart change without a
version bump is not released by Flux at all.

Anything malformed is read as absent: this never raises (fuzzed). Texts are bounded (``MESSAGE_MAX``, ``NAME_MAX``),
the history to ``HISTORY_MAX`` entries, the workloads to ``WORKLOADS_MAX``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from fixloop.core.parsing import clean

GROUP = "helm.toolkit.fluxcd.io"
MESSAGE_MAX = 2_000
NAME_MAX = 253
VALUE_MAX = 200  # a chart version, digest or reason
HISTORY_MAX = 10
WORKLOADS_MAX = 50
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
# Ready=False reasons of a Helm action that ran and failed, or was remediated (helmreleases.md "Failed HelmRelease")
ACTION_FAILURES = frozenset(
    {
        "InstallFailed",
        "UpgradeFailed",
        "TestFailed",
        "RollbackSucceeded",
        "RollbackFailed",
        "UninstallSucceeded",
        "UninstallFailed",
        "RetriesExceeded",
    }
)
_BUILD_SHA = re.compile(r"^[0-9a-f]{12,64}$")


class HelmReleaseState(StrEnum):
    DEPLOYED = "deployed"
    FAILED = "failed"
    PROGRESSING = "progressing"


class HelmReleaseEntry(BaseModel):
    """One Helm release of the HelmRelease (a v2 ``status.history[]`` entry; for v2beta1 the one built from
    ``lastAppliedRevision``/``lastAttemptedValuesChecksum``/``lastReleaseRevision``). Empty strings and 0 when
    absent."""

    model_config = ConfigDict(frozen=True)

    chart_name: str = ""
    chart_version: str = ""
    app_version: str = ""
    config_digest: str = ""  # v2: sha256:<hex> of the values; v2beta1: the SHA-1 values checksum
    digest: str = ""
    oci_digest: str = ""
    status: str = ""  # deployed | failed | superseded | pending-* | uninstalled ...
    action: str = ""  # install | upgrade
    version: int = 0  # Helm's release number (<release>.v<version>)
    last_deployed: str = ""


class WorkloadRef(BaseModel):
    """A workload of the release's inventory (``<namespace>_<name>_<group>_<kind>``)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    namespace: str
    name: str


class HelmReleaseVerdict(BaseModel):
    """The HelmRelease as read (see the module docstring): ``state`` and why not deployed (``reasons``), its Ready
    condition (``ready`` None when absent or Unknown), generations, the last attempt, and the releases newest first
    (``history``)."""

    model_config = ConfigDict(frozen=True)

    state: HelmReleaseState
    reasons: list[str] = []
    api_version: str = ""
    name: str = ""
    namespace: str = ""
    generation: int | None = None
    observed_generation: int | None = None
    last_attempted_generation: int | None = None
    ready: bool | None = None
    ready_reason: str | None = None
    ready_message: str | None = None
    reconciling: bool = False
    attempt_failed: bool = False
    last_applied_revision: str | None = None  # v2beta1 (chart version)
    last_attempted_revision: str | None = None  # chart version last attempted
    last_attempted_values_digest: str | None = None  # v2 lastAttemptedConfigDigest | v2beta1 ...ValuesChecksum
    last_attempted_action: str | None = None  # v2: install | upgrade
    last_attempted_oci_digest: str | None = None  # v2 lastAttemptedRevisionDigest (charts from OCIRepository)
    failures: int = 0
    helm_chart: str | None = None  # namespace/name of the HelmChart
    history: list[HelmReleaseEntry] = []
    workloads: list[WorkloadRef] = []

    @property
    def deployed(self) -> bool:
        return self.state is HelmReleaseState.DEPLOYED

    @property
    def latest(self) -> HelmReleaseEntry | None:
        """The newest release (``history[0]``), None before any."""
        return self.history[0] if self.history else None

    @property
    def current(self) -> bool:
        """``observedGeneration >= generation`` (true when either is absent) and, when set, v2's
        ``lastAttemptedGeneration >= generation``."""
        return _current(self.generation, self.observed_generation, self.last_attempted_generation)

    @property
    def attempt_current(self) -> bool:
        """The last attempt was made for the current spec: ``lastAttemptedGeneration`` (v2; else
        ``observedGeneration``) ``>= generation`` (true when absent)."""
        attempted = self.last_attempted_generation
        if attempted is None:
            attempted = self.observed_generation
        return self.generation is None or attempted is None or attempted >= self.generation

    @property
    def chart_version(self) -> str | None:
        """The chart version of the newest release, else the last applied (v2beta1) or attempted revision."""
        latest = self.latest
        return (latest.chart_version if latest else None) or self.last_applied_revision or self.last_attempted_revision

    @property
    def values_digest(self) -> str | None:
        """The values digest of the newest release, else of the last attempt."""
        latest = self.latest
        return (latest.config_digest if latest else None) or self.last_attempted_values_digest

    def deployed_sha(self) -> str | None:
        """The source commit (12 hex or more) of the newest *deployed* release's chart version (``source_sha``);
        None when it names none or nothing is deployed."""
        for entry in self.history:
            if entry.status == "deployed":
                return _not_oci(source_sha(entry.chart_version), entry.oci_digest)
        return source_sha(self.last_applied_revision)

    def attempted_sha(self) -> str | None:
        """The source commit of the last attempted chart version (``lastAttemptedRevision``, else the newest
        release's)."""
        latest = self.latest
        sha = source_sha(self.last_attempted_revision or (latest.chart_version if latest else None))
        return _not_oci(_not_oci(sha, self.last_attempted_oci_digest or ""), latest.oci_digest if latest else "")


def _not_oci(sha: str | None, oci_digest: str) -> str | None:
    """None for the build metadata helm-controller adds to a chart from an OCI registry (the first 12 hex of its
    ``ociDigest``), which names no commit."""
    return None if sha and oci_digest.lower().startswith(f"sha256:{sha}") else sha


def source_sha(chart_version: str | None) -> str | None:
    """The source commit in a chart version's build metadata (``6.0.0+0123456789ab`` or ``6.0.0+0123456789ab.3``,
    ``reconcileStrategy: Revision``), lower-case; None when there is none."""
    if not isinstance(chart_version, str) or "+" not in chart_version:
        return None
    meta = chart_version.partition("+")[2].split(".")[0].strip().lower()
    return meta if _BUILD_SHA.match(meta) else None


def holds(chart_sha: str | None, merge_sha: str, is_descendant: Callable[[str, str], bool] | None = None) -> bool:
    """Whether a chart built from ``chart_sha`` (``source_sha``) contains ``merge_sha``: the same commit (prefix
    match, at least 7 hex) or, with ``is_descendant(chart_sha, merge_sha)``, a commit that descends from it."""
    if not chart_sha or not isinstance(merge_sha, str):
        return False
    a, b = chart_sha.lower(), merge_sha.strip().lower()
    if min(len(a), len(b)) >= 7 and (a.startswith(b) or b.startswith(a)):
        return True
    return bool(is_descendant and is_descendant(a, b))


def _current(generation: int | None, observed: int | None, attempted: int | None) -> bool:
    if generation is None:
        return True
    return (observed is None or observed >= generation) and (attempted is None or attempted >= generation)


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any, limit: int = VALUE_MAX) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return clean(value, limit) if isinstance(value, str | int | float) else ""


def _opt(value: Any, limit: int = VALUE_MAX) -> str | None:
    return _str(value, limit) or None


def _entry(raw: dict[str, Any]) -> HelmReleaseEntry:
    return HelmReleaseEntry(
        chart_name=_str(raw.get("chartName"), NAME_MAX),
        chart_version=_str(raw.get("chartVersion")),
        app_version=_str(raw.get("appVersion")),
        config_digest=_str(raw.get("configDigest")),
        digest=_str(raw.get("digest")),
        oci_digest=_str(raw.get("ociDigest")),
        status=_str(raw.get("status"), 40),
        action=_str(raw.get("action"), 40),
        version=_int(raw.get("version")) or 0,
        last_deployed=_str(raw.get("lastDeployed"), 40),
    )


def _workloads(status: dict[str, Any]) -> list[WorkloadRef]:
    out: list[WorkloadRef] = []
    for entry in _items(_d(status.get("inventory")).get("entries")):
        parts = _str(entry.get("id"), 600).split("_")
        if len(parts) == 4 and parts[3] in WORKLOAD_KINDS and parts[1] and len(out) < WORKLOADS_MAX:
            out.append(WorkloadRef(kind=parts[3], namespace=parts[0][:63], name=parts[1][:NAME_MAX]))
    return out


def helmrelease(obj: Any) -> HelmReleaseVerdict:
    """The ``HelmReleaseVerdict`` of a HelmRelease object (see the module docstring). Never raises."""
    o = _d(obj)
    meta, status, spec = _d(o.get("metadata")), _d(o.get("status")), _d(o.get("spec"))
    api = _str(o.get("apiVersion"), 80)
    name, namespace = _str(meta.get("name"), NAME_MAX), _str(meta.get("namespace"), 63)
    conditions: dict[str, dict[str, Any]] = {}
    for c in _items(status.get("conditions")):
        conditions.setdefault(_str(c.get("type"), 60), c)

    def cond(type_: str) -> str:
        return _str(conditions.get(type_, {}).get("status"), 10)

    ready_c = conditions.get("Ready", {})
    ready_s = cond("Ready")
    ready = True if ready_s == "True" else False if ready_s == "False" else None
    ready_reason = _opt(ready_c.get("reason"))
    ready_message = _opt(ready_c.get("message"), MESSAGE_MAX)
    history = [_entry(h) for h in _items(status.get("history"))[:HISTORY_MAX]]
    applied = _opt(status.get("lastAppliedRevision"))
    attempted = _opt(status.get("lastAttemptedRevision"))
    release_number = _int(status.get("lastReleaseRevision"))
    values = _opt(status.get("lastAttemptedConfigDigest")) or _opt(status.get("lastAttemptedValuesChecksum"))
    if not history and (applied or release_number):
        chart = _d(_d(spec.get("chart")).get("spec"))
        history = [
            HelmReleaseEntry(
                chart_name=_str(chart.get("chart"), NAME_MAX),
                chart_version=applied or "",
                config_digest=_opt(status.get("lastAttemptedValuesChecksum")) or "",
                status="deployed" if ready else "",
                version=release_number or 0,
            )
        ]

    reasons: list[str] = []
    label = f"HelmRelease {namespace or '?'}/{name or '?'}"
    if history and history[0].status == "failed":
        latest = history[0]
        reasons.append(f"{label}: release v{latest.version} of {latest.chart_name}@{latest.chart_version} failed")
    for type_, bad in (("Released", "False"), ("TestSuccess", "False"), ("Remediated", "True"), ("Stalled", "True")):
        if cond(type_) == bad:
            c = conditions[type_]
            why = _str(c.get("reason"), 60) or type_
            reasons.append(f"{label}: {type_}={bad} {why}: {_str(c.get('message'), 300)}".rstrip(": "))
    if ready is False and ready_reason in ACTION_FAILURES:
        reasons.append(f"{label}: Ready=False {ready_reason}: {clean(ready_message or '', 300)}".rstrip(": "))
    if ready is False and not history and attempted and applied and attempted != applied:
        reasons.append(f"{label}: chart {attempted} attempted, {applied} still applied")
    attempt_failed = bool(reasons)

    generation = _int(meta.get("generation"))
    observed = _int(status.get("observedGeneration"))
    attempted_gen = _int(status.get("lastAttemptedGeneration"))
    current = _current(generation, observed, attempted_gen)
    verdict_args: dict[str, Any] = {
        "api_version": api,
        "name": name,
        "namespace": namespace,
        "generation": generation,
        "observed_generation": observed,
        "last_attempted_generation": attempted_gen,
        "ready": ready,
        "ready_reason": ready_reason,
        "ready_message": ready_message,
        "reconciling": cond("Reconciling") == "True",
        "attempt_failed": attempt_failed,
        "last_applied_revision": applied,
        "last_attempted_revision": attempted,
        "last_attempted_values_digest": values,
        "last_attempted_action": _opt(status.get("lastAttemptedReleaseAction"), 40),
        "last_attempted_oci_digest": _opt(status.get("lastAttemptedRevisionDigest")),
        "failures": _int(status.get("failures")) or 0,
        "helm_chart": _opt(status.get("helmChart"), NAME_MAX + 64),
        "history": history,
        "workloads": _workloads(status),
    }
    if ready is False and not attempt_failed:
        reasons.append(f"{label}: Ready=False {ready_reason or '?'}: {clean(ready_message or '', 300)}".rstrip(": "))
    if attempt_failed or ready is False:
        state = HelmReleaseState.FAILED
    elif ready is True and current:
        state = HelmReleaseState.DEPLOYED
    else:
        state = HelmReleaseState.PROGRESSING
        if not current:
            reasons.append(
                f"{label}: generation {generation} not reconciled yet (observedGeneration {observed}"
                + (f", lastAttemptedGeneration {attempted_gen})" if attempted_gen is not None else ")")
            )
        if ready is None:
            reasons.append(f"{label}: Ready is {ready_s or 'absent'} ({ready_reason or 'no reason'})")
    return HelmReleaseVerdict(state=state, reasons=reasons[:12], **verdict_args)
