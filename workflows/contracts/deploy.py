"""Contracts of the deploy stage: the inputs and outputs of ``fixloop.activities.deploy`` (``flux.deploy_state``,
``deploy.rollout_state``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from fixloop.core.rollout import RolloutVerdict


class DeployStateInput(BaseModel):
    """``merge_sha``: the commit the target branch got (hex, 7 to 64 characters); ``kustomization``:
    ``namespace/name``, None for the configured default; ``helmrelease``: ``namespace/name`` of a HelmRelease
    whose release decides instead (``fixloop.activities.deploy``, "HelmRelease targets"), None: the Kustomization
    alone (the default, as before)."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    merge_sha: str
    kustomization: str | None = None
    helmrelease: str | None = Field(default=None, max_length=400)


class DeployState(BaseModel):
    """What Flux did with the merge.

    ``revision``: the revision the outcome is about, in Flux's format (``main@sha1:<sha>``): the applied revision
    when ``applied``, the attempted one when ``failed``, else the last applied revision (what runs now; None before
    any). ``applied_at`` (only when ``applied``): when Flux says it applied it, the Ready condition's
    ``lastTransitionTime`` (a HelmRelease: Helm's ``lastDeployed`` of the deployed release), in the cluster's clock;
    None when Flux does not say. ``message``: the Ready condition's message (bounded). ``via_descendant``: applied
    through a later commit than the merge. The remaining fields are the status as read (``ready`` None when the
    Ready condition is absent or Unknown; ``reason`` e.g. ``ReconciliationSucceeded``, ``BuildFailed``,
    ``HealthCheckFailed``).

    For a HelmRelease target (``helmrelease`` set): ``ready``/``reason``/``message`` are the HelmRelease's Ready
    condition (``UpgradeSucceeded``, ``UpgradeFailed``, ...), ``revision``/``last_applied_revision``/
    ``last_attempted_revision`` its chart versions (the deployed one, the attempted one), ``chart_*``,
    ``app_version``, ``values_digest``, ``release_*`` the newest Helm release (v2 ``status.history[0]``),
    ``chart_sha`` the commit in its chart version, ``kustomization`` / ``kustomization_revision`` the Kustomization
    consulted (None when the chart version decided alone) and ``workloads`` what the release applied, to check
    their rollout (``rollout_state``)."""

    model_config = ConfigDict(extra="forbid")

    applied: bool = False
    failed: bool = False
    revision: str | None = None  # e.g. "main@sha1:<sha>"
    applied_at: AwareDatetime | None = None  # when applied: by Flux's account (see the class docstring)
    message: str | None = None
    kustomization: str | None = None  # namespace/name
    ready: bool | None = None
    reason: str | None = None
    last_applied_revision: str | None = None
    last_attempted_revision: str | None = None
    via_descendant: bool = False
    # the Kustomization's spec.wait / spec.healthChecks: Ready=True includes kustomize-controller's health check
    health_checked: bool = False
    # HelmRelease targets (None / empty for a Kustomization): see the class docstring
    helmrelease: str | None = None  # namespace/name
    chart_name: str | None = None
    chart_version: str | None = None  # of the newest release, e.g. "6.6.1+0cc9a8446c95"
    app_version: str | None = None
    values_digest: str | None = None  # v2 configDigest "sha256:<hex>", v2beta1 values checksum
    release_version: int | None = None  # Helm's release number (<release>.v<N>)
    release_status: str | None = None  # Helm's: deployed | failed | superseded | pending-upgrade ...
    chart_sha: str | None = None  # the source commit in the chart version (reconcileStrategy Revision)
    kustomization_revision: str | None = None  # the consulted Kustomization's lastAppliedRevision
    workloads: list[str] = Field(default_factory=list, max_length=50)  # "Kind/namespace/name" of the inventory


class RolloutStateInput(BaseModel):
    """The workload whose rollout is read: ``kind`` ``namespace/name``; ``expected_image``: the built image (tag
    reference or digest, ``fixloop.core.rollout``), None: not checked; ``previous_restarts``: the ``restarts`` of the
    last ``RolloutState`` (``<pod>/<container>`` -> restartCount), so restart growth between two reads is stuck."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    namespace: str
    name: str
    kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    expected_image: str | None = Field(default=None, max_length=300)
    previous_restarts: dict[str, int] = Field(default_factory=dict, max_length=200)


class RolloutState(BaseModel):
    """The workload's rollout verdict (``fixloop.core.rollout.RolloutVerdict``: complete | progressing | stuck, the
    reasons in words and numbers, the replica figures, the restart counts) and how many pods were read."""

    model_config = ConfigDict(extra="forbid")

    workload: str  # kind/namespace/name
    verdict: RolloutVerdict
    pods: int = 0
