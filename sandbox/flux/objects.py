"""The read routes of one Flux object kind, as the Kubernetes API serves a resource: get one in a namespace, list
a namespace, list all namespaces (``{"kind": "<Kind>List", "items": [...]}``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from fixloop.sandbox.flux.reconciler import RESOURCES, VERSION, Flux
from fixloop.sandbox.routes import service

FLUX = Depends(service)


def resource_router(resource: str) -> APIRouter:
    """``GET /apis/<group>/v1[/namespaces/{ns}]/<resource>[/{name}]`` for ``resource`` (a key of ``RESOURCES``)."""
    group, _kind = RESOURCES[resource]
    base = f"/apis/{group}/{VERSION}"
    router = APIRouter()

    @router.get(f"{base}/namespaces/{{ns}}/{resource}/{{name}}")
    def get_one(ns: str, name: str, flux: Flux = FLUX) -> dict[str, Any]:
        return flux.get(resource, ns, name)

    @router.get(f"{base}/namespaces/{{ns}}/{resource}")
    def list_ns(ns: str, flux: Flux = FLUX) -> dict[str, Any]:
        return flux.list(resource, ns)

    @router.get(f"{base}/{resource}")
    def list_all(flux: Flux = FLUX) -> dict[str, Any]:
        return flux.list(resource, None)

    return router
