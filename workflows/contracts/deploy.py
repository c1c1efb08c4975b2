"""Contracts of the deploy stage: the input and output of ``fixloop.activities.deploy`` (``flux.deploy_state``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
