"""Contracts of the investigate stage: the input and output of ``fixloop.activities.investigate``
(``investigate.culprit``, the culprit change of an incident's top candidates).

Payload arithmetic (Temporal's 2 MB payload limit): the input holds at most ``CANDIDATES_MAX`` candidates of at most
``PATHS_MAX`` paths of at most ``PATH_MAX`` characters (5 x 20 x 500 = 50 KB) and ``APPLIED_MAX`` applied revisions
(about 400 B each: 80 KB). The output holds per candidate one culprit (its commit: title and names bounded by the
core, at most ``FILES_MAX`` files of at most ``PATH_MAX`` characters: under 40 KB; evidence 2,000 characters) and at
most ``PATHS_MAX`` x ``COMMITS_PER_PATH`` shas not applied (20 x 20 x 64 = 26 KB): under 350 KB in all.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fixloop.core.culprit import AppliedRevision, Culprit

CANDIDATES_MAX = 5  # candidates investigated per call (the ranking's top ones)
PATHS_MAX = 20  # repository paths per candidate
PATH_MAX = 500  # characters of one path
COMMITS_PER_PATH = 20  # newest commits read per path (GitLab's commits API, one page)
FILES_MAX = 50  # files of one commit's diff kept
APPLIED_MAX = 200  # applied revisions handed in (Flux events the gateway received)
LOOKBACK_MAX = 30 * 86_400  # seconds


class CulpritCandidate(BaseModel):
    """A root-cause candidate (``entity``: its topology id, e.g. a service name) and the repository paths of its
    workload: manifests, image references, config, Helm values (files or directories, relative to the root). No
    paths: the activity finds them in the repository (``fixloop.activities.investigate.candidate_paths``)."""

    model_config = ConfigDict(extra="forbid")

    entity: str = Field(min_length=1, max_length=200)
    paths: list[str] = Field(default_factory=list, max_length=PATHS_MAX)

    @field_validator("paths")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if not p.strip("/ ") or len(p) > PATH_MAX or ".." in p.split("/") or not p.isprintable():
                raise ValueError(f"path {p[:80]!r}: empty, over {PATH_MAX} characters, with '..' or control characters")
        return paths


class CulpritInput(BaseModel):
    """``onset``: when the incident began (aware); ``lookback_seconds``: how far before it commits are read;
    ``candidates``: the top candidates, in rank order; ``applied``: what Flux applied and when as the gateway saw
    it (``fixloop.integrations.flux.applied_revisions`` of the received events), added to the Kustomization's status;
    ``kustomization``: ``namespace/name``, None for the configured default (``FIXLOOP_FLUX_KUSTOMIZATION``)."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    onset: datetime
    lookback_seconds: int = Field(default=86_400, gt=0, le=LOOKBACK_MAX)
    candidates: list[CulpritCandidate] = Field(min_length=1, max_length=CANDIDATES_MAX)
    applied: list[AppliedRevision] = Field(default_factory=list, max_length=APPLIED_MAX)
    kustomization: str | None = None


class CandidateCulprit(BaseModel):
    """One candidate's answer: ``paths`` the repository paths read for it (handed in or found; none found: no
    commit is read); ``culprit`` None when no commit touching its paths was applied in the window;
    ``commits_read``: distinct commits read; ``truncated``: a path had more than ``COMMITS_PER_PATH`` commits in the
    window (older ones were not read)."""

    model_config = ConfigDict(extra="forbid")

    entity: str
    paths: list[str] = Field(default_factory=list, max_length=PATHS_MAX)
    culprit: Culprit | None = None
    commits_read: int = 0
    truncated: bool = False


class CulpritOutput(BaseModel):
    """Per candidate, in the input's order; ``applied``: the applied history the answer used, oldest first."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[CandidateCulprit]
    applied: list[AppliedRevision] = []
