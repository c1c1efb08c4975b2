"""Contracts of the deploy stage: the inputs and outputs of ``fixloop.activities.deploy`` (``flux.deploy_state``,
``deploy.rollout_state``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.rollout import RolloutVerdict


class DeployStateInput(BaseModel):
    """``merge_sha``: the commit the target branch got (hex, 7 to 64 characters); ``kustomization``:
    ``namespace/name``, None for the configured default."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    merge_sha: str
    kustomization: str | None = None


class DeployState(BaseModel):
    """What Flux did with the merge.

    ``revision``: the revision the outcome is about, in Flux's format (``main@sha1:<sha>``): the applied revision
    when ``applied``, the attempted one when ``failed``, else the last applied revision (what runs now; None before
    any). ``message``: the Ready condition's message (bounded). ``via_descendant``: applied through a later commit
    than the merge. The remaining fields are the status as read (``ready`` None when the Ready condition is absent or
    Unknown; ``reason`` e.g. ``ReconciliationSucceeded``, ``BuildFailed``, ``HealthCheckFailed``)."""

    model_config = ConfigDict(extra="forbid")

    applied: bool = False
    failed: bool = False
    revision: str | None = None  # e.g. "main@sha1:<sha>"
    message: str | None = None
    kustomization: str | None = None  # namespace/name
    ready: bool | None = None
    reason: str | None = None
    last_applied_revision: str | None = None
    last_attempted_revision: str | None = None
    via_descendant: bool = False


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
