"""Contracts of the build stage: the input and output of ``fixloop.activities.build`` (``gitlab.build_state``): the
GitLab pipeline of a merged source change and the image it pushed to the registry."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.change.images import ImageSpec


class BuildStateInput(BaseModel):
    """The build of ``image`` from ``merge_sha`` (the merge commit of the source change, 40 hex) on branch ``ref``
    (None: any); ``current_tag``: the tag the first environment ran when the change was planned (the
    ``semver-patch`` rule's base)."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    merge_sha: str = Field(pattern=r"^[0-9a-f]{40}$")
    image: ImageSpec
    current_tag: str | None = Field(default=None, max_length=128)
    ref: str | None = Field(default=None, max_length=255)


class BuildState(BaseModel):
    """One read of the build.

    ``state``: ``pending`` (no pipeline for the commit yet), ``running``, ``failed`` (``failed_jobs`` names the jobs
    that failed it, at most 20 of ``failed_jobs_count``), ``built`` (the pipeline succeeded and the registry has
    ``tag`` with ``digest``), or ``missing`` (the pipeline succeeded but the registry has no ``tag``: the tag rule and
    the pipeline disagree, or the push is late). ``pipeline_id`` / ``pipeline_url`` / ``status``: GitLab's."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["pending", "running", "failed", "built", "missing"]
    pipeline_id: int | None = None
    pipeline_url: str = Field(default="", max_length=2_048)
    status: str = Field(default="", max_length=255)
    failed_jobs: list[str] = Field(default_factory=list, max_length=20)
    failed_jobs_count: int = 0
    tag: str | None = Field(default=None, max_length=128)
    digest: str | None = Field(default=None, max_length=80)
    message: str = Field(default="", max_length=2_000)
