"""The seeded GitOps repository with a base-image chain, for the tests that need one (the default seed has none: the
demo's and ``fixloop plan``'s exact texts stay what they are): an image ``base-python`` built from
``services/base-python/Dockerfile`` (FROM a Debian 10 point release the sandbox registry lists) and deployed nowhere,
and two of the seeded services, ``legacy-api`` and ``payments``, built FROM ``registry.sandbox.local/shop/base-python
:1.3.0``. ``seed_chain`` writes it into a sandbox state directory before the sandbox opens, so that the sandbox sees
it as its seed (no pipeline for it; the registry seeded with the base's tag its dependents FROM)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fixloop.sandbox.repos import Action, RepoStore
from fixloop.sandbox.seed import DEFAULT_BRANCH, GITOPS_PROJECT, SEED_AUTHOR, seed_files, seed_gitops

BASE = "registry.sandbox.local/shop/base-python"
BASE_DOCKERFILE = "services/base-python/Dockerfile"
BASE_ENTRY = f"  base-python: {{source: services/base-python, image: {BASE}, tag: semver-patch}}\n"


def chain_files(base_from: str = "debian:10.2", tag: str = "1.3.0") -> dict[str, str]:
    """The files the chain changes or adds in the seed: ``fixloop.yaml`` with the ``base-python`` image, its
    Dockerfile FROM ``base_from``, and the dependents' Dockerfiles FROM ``base-python:<tag>``."""
    seed = seed_files()
    envs = "environments: [staging, production]"
    policy = seed["fixloop.yaml"].replace(envs, BASE_ENTRY + envs)
    legacy = seed["services/legacy-api/Dockerfile"].replace("FROM debian:10.2", f"FROM {BASE}:{tag}", 1)
    payments = seed["services/payments/Dockerfile"].replace("FROM python:3.9.7-slim", f"FROM {BASE}:{tag}", 1)
    base = (
        f"FROM {base_from}\n\n"
        "RUN apt-get update \\\n"
        "    && apt-get install -y --no-install-recommends python3 ca-certificates \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
    )
    out = {
        "fixloop.yaml": policy,
        BASE_DOCKERFILE: base,
        "services/legacy-api/Dockerfile": legacy,
        "services/payments/Dockerfile": payments,
    }
    assert all(out[p] != seed.get(p) for p in out), "the seed changed: the chain's replacements no longer apply"
    return out


def seed_chain(state_dir: Path, when: datetime, files: dict[str, str] | None = None) -> str:
    """Create the sandbox's ``platform/gitops`` in ``state_dir`` (before ``Sandbox.open``) as the seed plus the
    chain (``chain_files()`` or ``files``) in a second commit; returns its sha."""
    repos = RepoStore(state_dir / "git")
    seed_gitops(repos, when)
    seed = seed_files()
    actions = [
        Action(action="update" if path in seed else "create", file_path=path, content=text)
        for path, text in (files or chain_files()).items()
    ]
    message = "Build legacy-api and payments on base-python"
    return repos.commit(GITOPS_PROJECT, DEFAULT_BRANCH, actions, message, SEED_AUTHOR, when).id
