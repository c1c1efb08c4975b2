"""API discovery (``GET /api``, ``GET /apis``) and, as ``fallback`` (included after every resource router), what
the API server answers for any other group or resource: 404 ``NotFound`` "the server could not find the requested
resource"."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fixloop.sandbox.flux.reconciler import KS_GROUP, SRC_GROUP, VERSION, KubeError

router = APIRouter()
fallback = APIRouter()


@router.get("/api")
def core_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }


@router.get("/apis")
def groups() -> dict[str, Any]:
    def group(name: str, version: str = VERSION) -> dict[str, Any]:
        v = {"groupVersion": f"{name}/{version}", "version": version}
        return {"name": name, "versions": [v], "preferredVersion": v}

    groups = [group("apps"), group(KS_GROUP), group(SRC_GROUP), group("helm.toolkit.fluxcd.io", "v2")]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


@fallback.get("/apis/{group}/v1/namespaces/{ns}/{resource}/{name}")
@fallback.get("/apis/{group}/v1/namespaces/{ns}/{resource}")
@fallback.get("/apis/{group}/v1/{resource}")
def unknown_resource() -> dict[str, Any]:
    raise KubeError(404, "NotFound", "the server could not find the requested resource", {})
