"""Build activities (on GitLab CI and the registry): what became of a merged source change.

``BuildActivities.build_state`` (activity ``gitlab.build_state``; contracts ``fixloop.workflows.contracts.build``)
reads, once (the workflow polls), the newest GitLab pipeline of the merge commit (``GET /projects/:id/pipelines?sha=``,
then its jobs when it failed: ``fixloop.integrations.gitlab.pipelines.build_outcome``) and, once it succeeded, the
image the tag rule of ``fixloop.yaml`` names (``fixloop.core.change.images.next_tag``: ``semver-patch`` from the tag
the first environment ran, ``sha`` from the merge commit) in the registry: its manifest digest (``HEAD
/v2/<name>/manifests/<tag>``, the OCI token flow of ``fixloop.integrations.registry``). The image's repository name
at the registry is its reference without the host (``registry.example/shop/catalog`` -> ``shop/catalog``): the
registry of ``FIXLOOP_REGISTRY_URL`` is taken to be the one CI pushes to. The ``pipeline`` tag rule needs the tag
from the pipeline, which GitLab's pipeline API does not carry: such an image is ``missing`` with the reason.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from fixloop.activities.errors import as_application_errors
from fixloop.core.change.images import ImageChainError, next_tag
from fixloop.core.parsing import clean
from fixloop.integrations.errors import NotFound
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.gitlab.pipelines import build_outcome
from fixloop.integrations.registry import RegistryClient, RegistrySettings
from fixloop.workflows.contracts.build import BuildState, BuildStateInput

BUILD_STATE = "gitlab.build_state"


def repository_name(image: str) -> str:
    """The registry's name of ``image`` (a reference without tag): the path after a host (a first component with a
    dot, a port or ``localhost``), else the whole reference."""
    first, _, rest = image.partition("/")
    return rest if rest and ("." in first or ":" in first or first == "localhost") else image


class BuildActivities:
    """``gitlab.build_state`` on the GitLab project of ``gitlab`` and the registry of ``registry`` (None: a
    successful pipeline's image cannot be checked, and is reported ``missing`` with that reason)."""

    def __init__(self, gitlab: GitLabSettings, registry: RegistrySettings | None = None) -> None:
        self.gitlab = GitLabClient(gitlab)
        self.registry = RegistryClient(registry) if registry is not None else None

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()

    @activity.defn(name=BUILD_STATE)
    async def build_state(self, inp: BuildStateInput) -> BuildState:
        """One read of the build of ``inp.image`` from ``inp.merge_sha`` (see the module docstring). A tag the rule
        cannot make (a current tag that is not ``MAJOR.MINOR.PATCH``) is ``missing`` with the reason; GitLab or
        registry errors -> ``ApplicationError`` (retryable when transient, ``fixloop.activities.errors``)."""
        with as_application_errors():
            return await asyncio.to_thread(self._read, inp)

    def _read(self, inp: BuildStateInput) -> BuildState:
        pipelines = self.gitlab.pipelines_for(inp.merge_sha, inp.ref, limit=5)
        if not pipelines:
            return BuildState(state="pending", message=f"no pipeline for {inp.merge_sha[:12]} yet")
        pipeline = pipelines[0]  # newest first: a retried pipeline supersedes the earlier one
        seen = {"pipeline_id": pipeline.id, "pipeline_url": pipeline.web_url, "status": pipeline.status}
        jobs = self.gitlab.pipeline_jobs(pipeline.id) if pipeline.status in ("failed", "canceled", "skipped") else []
        outcome = build_outcome(pipeline, jobs)
        if outcome.state == "running":
            return BuildState(
                state="running", **seen, message=f"pipeline {pipeline.id} is {clean(pipeline.status, 40)}"
            )
        if outcome.state == "failed":
            named = ", ".join(outcome.failed_jobs) or "no job named"
            return BuildState(
                state="failed",
                **seen,
                failed_jobs=list(outcome.failed_jobs),
                failed_jobs_count=outcome.failed_jobs_count,
                message=clean(f"pipeline {pipeline.id} {pipeline.status}: {named}", 2_000),
            )
        try:
            tag = next_tag(inp.image.tag, current=inp.current_tag, sha=inp.merge_sha)
        except ImageChainError as e:
            return BuildState(state="missing", **seen, message=clean(f"{inp.image.name}: {e}", 2_000))
        if self.registry is None:
            return BuildState(state="missing", **seen, tag=tag, message="no registry configured (FIXLOOP_REGISTRY_URL)")
        try:
            digest = self.registry.digest(repository_name(inp.image.image), tag)
        except NotFound:
            return BuildState(
                state="missing", **seen, tag=tag, message=f"the registry has no {clean(inp.image.image, 255)}:{tag}"
            )
        return BuildState(state="built", **seen, tag=tag, digest=digest, message=f"{inp.image.image}:{tag} {digest}")
