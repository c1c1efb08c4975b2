"""Deploy activities (on Flux): whether a merge commit has been applied by its Kustomization (the poll fallback and
source of truth of the deploy stage), and ``deploy_event``, which turns a Flux notification into the workflow's signal.

Applied means the Kustomization's ``status.lastAppliedRevision`` holds the merge SHA or a descendant of it (a later
commit on the branch deploys the merge too), its ``Ready`` condition is ``True`` and the status is current
(``observedGeneration >= generation``); failed means ``Ready=False`` with ``status.lastAttemptedRevision`` holding the
merge SHA or a descendant, while the last applied revision does not hold it (Flux kustomize-controller API v1,
``docs/spec/v1/kustomizations.md``, "Kustomization Status"). Anything else is neither: not reconciled yet, or still
reconciling. Flux keeps retrying a failed revision at ``retryInterval``, and a later fix on the branch is applied as a
descendant; the workflow decides what a failure means.

"Descendant" is asked of GitLab (``GitLabClient.is_ancestor``, ``GET /repository/merge_base``) on the project of the
GitLab settings (the GitOps repository the Kustomization's source tracks); without GitLab settings only the exact
merge SHA counts. A revert of the merge is a descendant too: "applied" says the merge reached the cluster, not that it
is still in effect.

Which Kustomization: ``DeployStateInput.kustomization`` (``namespace/name``), else ``FluxSettings.kustomization``
(``FIXLOOP_FLUX_KUSTOMIZATION``, default ``flux-system/apps-production``). ``DeployState.health_checked`` says
whether it has ``spec.wait`` or ``spec.healthChecks``: only then does its Ready=True include kustomize-controller's
health check of the applied workloads (Ready=False ``HealthCheckFailed`` when they did not become healthy).

HelmRelease targets (``DeployStateInput.helmrelease``, ``namespace/name``; ``helm.toolkit.fluxcd.io/v2``, judged by
``fixloop.core.helmrelease``). The rule that can actually be checked on the objects:

* the release must be **deployed**: Ready=True, for the current generation (``observedGeneration`` and
  ``lastAttemptedGeneration`` >= ``metadata.generation``), the last attempt not failed (history ``failed``,
  ``Released=False``, ``Remediated``, an ``*Failed`` reason);
* and it must be a release **after the merge**. When the chart version names a commit (a chart from the GitOps
  repository's GitRepository with ``reconcileStrategy: Revision``: ``<version>+<first 12 hex of the commit>``), the
  deployed chart's commit must be the merge or a descendant of it (GitLab's ancestry check, as for Kustomizations);
  with ``DeployStateInput.kustomization`` set, that Kustomization must also have applied the merge. Otherwise (the
  default ``ChartVersion`` strategy, a HelmRepository chart) the version names no commit: the Kustomization (the
  input's, else the configured one) must have applied the merge — it applies the HelmRelease's spec, so the merge
  reached the spec, and Ready=True for the current generation says helm-controller released that spec. A chart
  change there without a Chart.yaml version bump is never released by Flux and cannot be told apart: use
  ``reconcileStrategy: Revision``.
* failed: the release is failed (any Ready=False included) for the current generation's attempt, and that
  attempt is about the merge (its chart version's commit holds it; without one: the Kustomization applied or
  failed the merge).

The HelmRelease's workloads (its ``status.inventory``: Deployments, StatefulSets, DaemonSets) are returned in
``DeployState.workloads`` for the same rollout check (``rollout_state``) as a Kustomization's.

``rollout_state`` (``kubernetes.rollout_state``) reads a Deployment or StatefulSet and the pods it selects
(``fixloop.integrations.kube``: kubeconfig with any user, exec plugins included, a token, or in-cluster) and returns
``fixloop.core.rollout``'s verdict: complete, progressing or stuck, with the reasons.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from fixloop.activities.errors import as_application_errors
from fixloop.core.helmrelease import HelmReleaseState, HelmReleaseVerdict, holds
from fixloop.core.parsing import clean, opt, timestamp
from fixloop.core.rollout import rollout
from fixloop.integrations.errors import NotFound
from fixloop.integrations.flux import KS_GROUP, FluxEvent, FluxSettings, KubeClient, KustomizationStatus, parse_revision
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.kube import WorkloadClient
from fixloop.workflows.contracts.deploy import DeployState, DeployStateInput, RolloutState, RolloutStateInput
from fixloop.workflows.contracts.loop import DeployEvent

# Temporal activity names, unchanged since activities/flux.py (running histories and the worker's metrics name them):
DEPLOY_STATE = "flux.deploy_state"
ROLLOUT_STATE = "kubernetes.rollout_state"
MESSAGE_MAX = 2_000  # chars of a Flux message kept (``DeployEvent.message``'s bound)
SUCCEEDED = "ReconciliationSucceeded"  # the reason of kustomize-controller's "applied and healthy" info event
# ``namespace/name``: a DNS-1123 label (namespace) and a DNS-1123 subdomain (name), as Kubernetes validates them
KUSTOMIZATION_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
T = TypeVar("T")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _sha(revision: str | None) -> str | None:
    try:
        return parse_revision(revision)[1] if revision else None
    except ValueError:
        return None


def _same(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


def deploy_state_of(
    status: KustomizationStatus, merge_sha: str, is_ancestor: Callable[[str, str], bool] | None = None
) -> DeployState:
    """The ``DeployState`` of ``merge_sha`` given a Kustomization's status (see the module docstring);
    ``is_ancestor(ancestor, descendant)`` answers the descendant question (None: only the exact SHA counts)."""
    descends = _memo(is_ancestor)
    applied = status.applied(merge_sha, descends)
    failed = not applied and status.failed(merge_sha, descends)
    revision = status.last_attempted_revision if failed else status.last_applied_revision
    applied_sha = _sha(status.last_applied_revision)
    return DeployState(
        applied=applied,
        failed=failed,
        revision=revision,
        applied_at=status.ready_since if applied else None,
        message=opt(status.ready_message, MESSAGE_MAX),
        kustomization=f"{status.namespace}/{status.name}",
        ready=status.ready,
        reason=status.ready_reason,
        last_applied_revision=status.last_applied_revision,
        last_attempted_revision=status.last_attempted_revision,
        via_descendant=applied and applied_sha is not None and not _same(applied_sha, merge_sha),
        health_checked=status.health_checked,
    )


def _memo(is_ancestor: Callable[[str, str], bool] | None) -> Callable[[str, str], bool] | None:
    """``descends(revision_sha, merge_sha)`` from ``is_ancestor(ancestor, descendant)``, each pair asked once."""
    if is_ancestor is None:
        return None
    asked: dict[tuple[str, str], bool] = {}

    def descends(revision_sha: str, merge: str) -> bool:
        if (revision_sha, merge) not in asked:
            asked[revision_sha, merge] = is_ancestor(merge, revision_sha)
        return asked[revision_sha, merge]

    return descends


def helmrelease_state_of(
    release: HelmReleaseVerdict,
    merge_sha: str,
    kustomization: KustomizationStatus | None = None,
    is_ancestor: Callable[[str, str], bool] | None = None,
) -> DeployState:
    """The ``DeployState`` of ``merge_sha`` for a HelmRelease target (module docstring, "HelmRelease targets"):
    ``release`` its verdict, ``kustomization`` the status of the Kustomization that must have applied the merge
    (None: the chart version's commit decides alone; needed when the version names none), ``is_ancestor`` as for
    ``deploy_state_of``."""
    descends = _memo(is_ancestor)
    deployed_sha, attempted_sha = release.deployed_sha(), release.attempted_sha()
    ks_applied = kustomization is not None and kustomization.applied(merge_sha, descends)
    ks_failed = kustomization is not None and not ks_applied and kustomization.failed(merge_sha, descends)
    if deployed_sha is not None or attempted_sha is not None:
        chart_applied = holds(deployed_sha, merge_sha, descends)
        chart_attempted = holds(attempted_sha, merge_sha, descends)
        applied = release.deployed and chart_applied and (kustomization is None or ks_applied)
        failed = not applied and (
            ks_failed or (release.state is HelmReleaseState.FAILED and release.attempt_current and chart_attempted)
        )
    else:
        applied = release.deployed and ks_applied
        failed = not applied and (
            ks_failed or (release.state is HelmReleaseState.FAILED and release.attempt_current and ks_applied)
        )
    latest = release.latest
    deployed_version = next((e.chart_version for e in release.history if e.status == "deployed"), None)
    deployed_version = deployed_version or release.last_applied_revision
    attempted_version = release.last_attempted_revision or (latest.chart_version if latest else None)
    via = applied and (
        (deployed_sha is not None and not _same(deployed_sha, merge_sha))
        or (kustomization is not None and not _same(_sha(kustomization.last_applied_revision) or merge_sha, merge_sha))
    )
    if ks_failed and kustomization is not None:
        message, reason, ready = kustomization.ready_message, kustomization.ready_reason, kustomization.ready
    else:
        message, reason, ready = release.ready_message, release.ready_reason, release.ready
    deployed = next((e for e in release.history if e.status == "deployed"), None)
    return DeployState(
        applied=applied,
        failed=failed,
        revision=attempted_version if failed else deployed_version,
        applied_at=timestamp(deployed.last_deployed) if applied and deployed is not None else None,
        message=opt(message, MESSAGE_MAX),
        kustomization=f"{kustomization.namespace}/{kustomization.name}" if kustomization is not None else None,
        ready=ready,
        reason=reason,
        last_applied_revision=deployed_version,
        last_attempted_revision=attempted_version,
        via_descendant=bool(via),
        health_checked=kustomization.health_checked if kustomization is not None else False,
        helmrelease=f"{release.namespace}/{release.name}",
        chart_name=(latest.chart_name or None) if latest else None,
        chart_version=release.chart_version,
        app_version=(latest.app_version or None) if latest else None,
        values_digest=release.values_digest,
        release_version=(latest.version or None) if latest else None,
        release_status=(latest.status or None) if latest else None,
        chart_sha=deployed_sha if not failed else (attempted_sha or deployed_sha),
        kustomization_revision=kustomization.last_applied_revision if kustomization is not None else None,
        workloads=[f"{w.kind}/{w.namespace}/{w.name}" for w in release.workloads],
    )


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidInput", non_retryable=True)


class DeployActivities:
    """The deploy-stage activity on the Kubernetes API of ``flux`` (``KubeClient.from_settings``: raises
    ``IntegrationError`` when there is no token, so a worker without Kubernetes access fails at start) and, for the
    descendant check, the GitLab project of ``gitlab``. ``kube`` replaces the client (tests). Call ``close()`` when
    the worker stops. ``workloads`` replaces the workload reader (``WorkloadClient.from_settings(flux)``, built on
    the first ``rollout_state``)."""

    def __init__(
        self,
        flux: FluxSettings,
        gitlab: GitLabSettings | None = None,
        *,
        kube: KubeClient | None = None,
        workloads: WorkloadClient | None = None,
    ):
        self.settings = flux
        self.kube = kube or KubeClient.from_settings(flux)
        self.gitlab = GitLabClient(gitlab) if gitlab is not None else None
        self.workloads = workloads

    def close(self) -> None:
        self.kube.close()
        if self.workloads is not None:
            self.workloads.close()

    @activity.defn(name=ROLLOUT_STATE)
    async def rollout_state(self, inp: RolloutStateInput) -> RolloutState:
        """Read the workload and its pods once and judge the rollout (``fixloop.core.rollout.rollout``; no waiting:
        the workflow polls and hands ``restarts`` back as ``previous_restarts``). Errors: a malformed namespace or
        name -> non-retryable ``InvalidInput``; a workload that does not exist -> non-retryable ``WorkloadNotFound``;
        no credentials -> non-retryable; API unreachable, 429/5xx -> retryable; 401/403 -> non-retryable
        ``AuthError`` (``fixloop.activities.errors``)."""
        if not _DNS_LABEL.match(inp.namespace):
            raise _invalid(f"namespace {clean(inp.namespace, 80)!r} is not a DNS label")
        if not _DNS_NAME.match(inp.name):
            raise _invalid(f"name {clean(inp.name, 80)!r} is not a DNS subdomain")
        with as_application_errors():
            return await asyncio.to_thread(self._rollout, inp)

    def _rollout(self, inp: RolloutStateInput) -> RolloutState:
        if self.workloads is None:
            self.workloads = WorkloadClient.from_settings(self.settings)
        what = f"{inp.kind}/{inp.namespace}/{inp.name}"
        try:
            obj = self.workloads.get_workload(inp.kind, inp.namespace, inp.name)
        except NotFound as e:
            raise ApplicationError(
                f"{what} not found ({e.message})", type="WorkloadNotFound", non_retryable=True
            ) from e
        pods = self.workloads.pods_of(obj)
        verdict = rollout(obj, pods, inp.expected_image, inp.previous_restarts)
        return RolloutState(workload=what, verdict=verdict, pods=len(pods))

    @activity.defn(name=DEPLOY_STATE)
    async def deploy_state(self, inp: DeployStateInput) -> DeployState:
        """Read the Kustomization and say whether ``inp.merge_sha`` is applied, failed, or neither (one read, no
        waiting: the workflow polls). Errors: a malformed SHA or Kustomization name -> non-retryable ``InvalidInput``;
        a Kustomization that does not exist -> non-retryable ``KustomizationNotFound`` naming it; Kubernetes or GitLab
        unreachable, 429/5xx -> retryable; 401/403 -> non-retryable ``AuthError`` (``fixloop.activities.errors``)."""
        if not _SHA_RE.match(inp.merge_sha):
            raise _invalid(f"merge_sha {clean(inp.merge_sha, 80)!r} is not a commit sha")
        key = inp.kustomization or self.settings.kustomization
        if not KUSTOMIZATION_RE.match(key):
            raise _invalid(f"kustomization {clean(key, 80)!r} is not namespace/name")
        if inp.helmrelease is not None and not KUSTOMIZATION_RE.match(inp.helmrelease):
            raise _invalid(f"helmrelease {clean(inp.helmrelease, 80)!r} is not namespace/name")
        with as_application_errors():
            if inp.helmrelease is not None:
                ks = inp.kustomization
                return await asyncio.to_thread(self._read_release, inp.helmrelease, ks, key, inp.merge_sha.lower())
            return await asyncio.to_thread(self._read, key, inp.merge_sha.lower())

    def _read(self, key: str, merge_sha: str) -> DeployState:
        status = read_kustomization(self.kube, key, "DeployStateInput.kustomization")
        return deploy_state_of(status, merge_sha, self.gitlab.is_ancestor if self.gitlab else None)

    def _read_release(self, release_key: str, given: str | None, default: str, merge_sha: str) -> DeployState:
        """The Kustomization first (when it is needed: ``given``, or a chart version naming no commit), then the
        HelmRelease: a Kustomization that applied the merge has already written the HelmRelease's new spec."""
        ancestry = self.gitlab.is_ancestor if self.gitlab else None
        ks = read_kustomization(self.kube, given, "DeployStateInput.kustomization") if given else None
        release = read_helmrelease(self.kube, release_key)
        if ks is None and release.deployed_sha() is None and release.attempted_sha() is None:
            ks = read_kustomization(self.kube, default, "DeployStateInput.kustomization")
            release = read_helmrelease(self.kube, release_key)
        return helmrelease_state_of(release, merge_sha, ks, ancestry)


def _read_object(fetch: Callable[[str, str], T], kind: str, key: str, hint: str) -> T:
    """``fetch(namespace, name)`` of ``key`` (``namespace/name``, already checked); ``NotFound`` becomes a
    non-retryable ``<kind>NotFound`` naming it and where to set another (``hint``)."""
    namespace, name = key.split("/", 1)
    try:
        return fetch(namespace, name)
    except NotFound as e:
        raise ApplicationError(
            f"{kind} {key} not found ({e.message}); set {hint}", type=f"{kind}NotFound", non_retryable=True
        ) from e


def read_kustomization(kube: KubeClient, key: str, field: str) -> KustomizationStatus:
    """The status of Kustomization ``key`` (``namespace/name``, already checked); one that does not exist is a
    non-retryable ``KustomizationNotFound`` naming it and where to set another (``field`` of the input, or
    ``FIXLOOP_FLUX_KUSTOMIZATION``); other errors as ``KubeClient.get_kustomization``."""
    return _read_object(kube.get_kustomization, "Kustomization", key, f"{field} or FIXLOOP_FLUX_KUSTOMIZATION")


def read_helmrelease(kube: KubeClient, key: str) -> HelmReleaseVerdict:
    """The verdict of HelmRelease ``key`` (``namespace/name``, already checked); one that does not exist is a
    non-retryable ``HelmReleaseNotFound`` naming it; other errors as ``KubeClient.get_helmrelease``."""
    return _read_object(kube.get_helmrelease, "HelmRelease", key, "DeployStateInput.helmrelease")


def deploy_event(event: FluxEvent, kustomization: str | None = None) -> DeployEvent | None:
    """The ``deploy_event`` signal of the RemediationWorkflow for a Flux notification (already verified), or None when
    the event is not a deploy outcome.

    Outcomes are events of a Kustomization (``kustomize.toolkit.fluxcd.io``) that carry a revision (metadata key
    ``kustomize.toolkit.fluxcd.io/revision`` since Flux 2.0, ``revision`` before; ``main@sha1:<sha>`` or
    ``master/<sha>``): severity ``info`` with reason ``ReconciliationSucceeded`` -> ``ready=True``; severity
    ``error`` (``BuildFailed``, ``ValidationFailed``, ``HealthCheckFailed``, ...) -> ``ready=False``. Everything else
    -> None: ``Progressing`` and other info events, sources' ``NewArtifact``, other kinds, events without a
    revision, and with ``kustomization`` (``namespace/name``) events of another Kustomization. The revision is
    rewritten as ``<ref>@sha1:<sha>`` (``sha256`` for 64-hex SHAs; no ref: ``sha1:<sha>``), the message is bounded.

    Pure; lives here rather than in ``fixloop.integrations.flux`` because it builds the workflow's own signal model
    (``fixloop.workflows.contracts.loop.DeployEvent``)."""

    obj = event.involvedObject
    group = (obj.apiVersion or f"{KS_GROUP}/").split("/")[0]
    if obj.kind != "Kustomization" or group != KS_GROUP:
        return None
    if kustomization is not None and f"{obj.namespace or ''}/{obj.name}" != kustomization:
        return None
    ref, sha = event.ref, event.sha
    if sha is None:
        return None
    severity = event.severity.strip().lower()
    if severity == "error":
        ready = False
    elif severity == "info" and event.reason == SUCCEEDED:
        ready = True
    else:
        return None
    algo = "sha256" if len(sha) == 64 else "sha1"
    revision = f"{clean(ref, 255)}@{algo}:{sha}" if ref else f"{algo}:{sha}"
    return DeployEvent(revision=revision, ready=ready, message=opt(event.message, MESSAGE_MAX))
