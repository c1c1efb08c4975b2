"""APM's service map: ``GET /api/v1/service_dependencies`` (``env`` required; ``primary_tag``, ``start``, ``end``
accepted as Datadog's API reference "Get all APM service dependencies" names them).

The sandbox does not trace requests: the calls are those the seeded repository's manifests configure, read at
request time from the head of ``platform/gitops``'s default branch. ``apps/<env>`` (the path of the Kustomization
``flux-system/apps-<env>``: ``production``, ``staging``) is rendered with ``fixloop.sandbox.kustomize``; a
Deployment whose container ``env`` values name a Service of the rendered objects (a URL or a host,
``<service>[.<namespace>[.svc[.cluster.local]]][:port]``) calls the service behind it. Every service of
``fixloop.sandbox.world.SERVICES`` is a key (``{"calls": []}`` when it calls none, as Datadog lists a leaf service);
an ``env`` without an ``apps/<env>`` folder (or not a plain name) answers ``{}``; a head that does not build answers
every service with no calls.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from fixloop.sandbox import kustomize
from fixloop.sandbox.datadog.service import DD, Datadog
from fixloop.sandbox.seed import GITOPS_PROJECT
from fixloop.sandbox.world import SERVICES

router = APIRouter()
_ENV = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _hosts(value: str) -> set[str]:
    """The first DNS label of each URL or host in ``value``."""
    out = set()
    for token in re.split(r"[\s,;]+", value):
        host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", token.lower()).split("/", 1)[0].rsplit("@", 1)[-1]
        out.add(host.split(":", 1)[0].split(".", 1)[0])
    return out


def service_map(repos: Any, env: str = "production") -> dict[str, dict[str, list[str]]]:
    """``{service: {"calls": [callee, ...]}}`` of ``apps/<env>`` at the head of ``platform/gitops`` (see the module
    docstring); ``{}`` for an environment without that folder."""
    if not _ENV.match(env):
        return {}
    calls: dict[str, set[str]] = {s: set() for s in SERVICES}
    sha = repos.resolve(GITOPS_PROJECT, repos.default_branch(GITOPS_PROJECT)) if repos.exists(GITOPS_PROJECT) else None
    try:
        snap = kustomize.Snapshot.from_repo(repos, GITOPS_PROJECT, sha) if sha else None
        objects = kustomize.build(snap, f"apps/{env}") if snap else []
    except kustomize.PathNotFound:
        return {}
    except kustomize.BuildError:
        objects = []
    names = {o["metadata"]["name"] for o in objects if o.get("kind") == "Service"} & set(SERVICES)
    for o in objects:
        caller = o.get("metadata", {}).get("name")
        if o.get("kind") != "Deployment" or caller not in calls:
            continue
        for c in kustomize.containers(o):
            for env in c.get("env") or []:
                value = env.get("value") if isinstance(env, dict) else None
                if isinstance(value, str):
                    calls[caller] |= (_hosts(value) & names) - {caller}
    return {s: {"calls": sorted(callees)} for s, callees in calls.items()}


@router.get("/api/v1/service_dependencies")
def service_dependencies(
    request: Request,
    env: str,
    primary_tag: str | None = None,
    start: int | None = None,
    end: int | None = None,
    dd: Datadog = DD,
) -> dict[str, Any]:
    dd.auth(request)
    return service_map(dd.sb.repos, env)
