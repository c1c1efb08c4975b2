"""Flux activities: whether a merge commit has been applied by its Kustomization (the poll fallback and source of
truth of the deploy stage). Interface here; the Kubernetes/Flux implementation is issue 6's.

Applied means the Kustomization's ``status.lastAppliedRevision`` holds the merge SHA (or a descendant) and its
``Ready`` condition is ``True``; ``Ready=False`` with that revision attempted is a failed deploy
(Flux kustomize-controller API, ``Kustomization`` status).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEPLOY_STATE = "flux.deploy_state"


class DeployStateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str
    merge_sha: str


class DeployState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applied: bool = False
    failed: bool = False
    revision: str | None = None  # e.g. "main@sha1:<sha>"
    message: str | None = None
