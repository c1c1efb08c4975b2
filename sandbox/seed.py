"""The seeded GitOps repository ``platform/gitops``: a Kustomize repo whose services match the real scanner reports.

Layout (Flux's "flux2-kustomize-helm-example" shape, one sandbox cluster with two environments)::

    fixloop.yaml                                  fixloop's policy (allow-list, verification queries)
    clusters/sandbox/apps-staging.yaml            Flux Kustomization flux-system/apps-staging    -> ./apps/staging
    clusters/sandbox/apps-production.yaml         Flux Kustomization flux-system/apps-production -> ./apps/production
    apps/base/<service>/{kustomization,deployment,service}.yaml
    apps/{staging,production}/kustomization.yaml  resources ../base/<service>, ``images:`` tags per environment
    services/<service>/Dockerfile (+ lockfiles)   what CI builds the images from

Services: ``catalog`` (alpine 3.9.4 base image), ``legacy-api`` (debian 10.8 "buster"), ``storefront`` (node,
package-lock.json), ``payments`` (python, requirements.txt), ``inventory`` (go, go.mod).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fixloop.sandbox.repos import Action, Person, RepoStore

GITOPS_PROJECT = "platform/gitops"
DEFAULT_BRANCH = "main"
SERVICES = ("catalog", "legacy-api", "storefront", "payments", "inventory")
IMAGE_PREFIX = "registry.sandbox.local/shop/"  # workload images: registry.sandbox.local/shop/<service>:<tag>
SEED_DIR = Path(__file__).parent / "gitops_seed"
SEED_AUTHOR = Person(name="Platform Team", email="platform@sandbox.local")
SEED_MESSAGE = "Initial GitOps layout: five shop services, staging and production"


def seed_files() -> dict[str, str]:
    """``{repository path: text}`` of the seeded repository, from ``sandbox/gitops_seed/``."""
    return {
        p.relative_to(SEED_DIR).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(SEED_DIR.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def seed_gitops(repos: RepoStore, when: datetime) -> str:
    """Create ``platform/gitops`` with its initial commit on ``main`` (by "fixloop sandbox"); returns the commit sha.
    Raises ``RepoError(409)`` if the repository exists."""
    repos.create(GITOPS_PROJECT, DEFAULT_BRANCH)
    actions = [Action(action="create", file_path=path, content=text) for path, text in seed_files().items()]
    return repos.commit(GITOPS_PROJECT, DEFAULT_BRANCH, actions, SEED_MESSAGE, SEED_AUTHOR, when).id
