"""The container registry stand-in (``/registry``): the tag listing of the OCI distribution API, anonymous.

* ``GET /v2/`` -> 200 ``{}`` (API version check)
* ``GET /v2/<name>/tags/list[?n=<int>&last=<tag>]`` -> ``{"name": ..., "tags": [...]}``, tags in lexical order; with
  ``n``, at most ``n`` tags after ``last`` and, when more remain, a ``Link: </v2/<name>/tags/list?n=<n>&last=<tag>>;
  rel="next"`` header (distribution-spec "Listing Tags"; the path carries the ``/registry`` mount prefix so it
  resolves against this server). An unknown name -> 404 ``{"errors": [{"code": "NAME_UNKNOWN", "message":
  "repository name not known to registry", "detail": {"name": ...}}]}``.

The repositories are the Docker Hub official images the seeded GitOps repo builds from (``library/alpine``,
``library/debian``, ``library/node``, ``library/python``, ``library/golang``) with realistic tag sets (``TAGS``),
generated from version ranges, plus the tags pushed to it (``push_tag``: the CI stand-in's builds of
``registry.sandbox.local/<name>``, with their digests, in ``sb.store("registry")``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from fixloop.sandbox.routes import service, stand_in
from fixloop.sandbox.store import JsonStore

HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
HOST = "registry.sandbox.local"  # the pushed images' host; their repository names are the rest of the reference
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def _versions(major_minors: dict[str, int]) -> list[str]:
    """``{"3.9": 6}`` -> ``3.9, 3.9.0 ... 3.9.6``."""
    return [v for mm, last in major_minors.items() for v in (mm, *(f"{mm}.{p}" for p in range(last + 1)))]


def _variants(versions: list[str], suffixes: tuple[str, ...]) -> list[str]:
    return [v + s for v in versions for s in suffixes]


_ALPINE = _versions(
    {"3.8": 5, "3.9": 6, "3.10": 9, "3.11": 13, "3.12": 12, "3.13": 12, "3.14": 10}
    | {"3.15": 11, "3.16": 9, "3.17": 7, "3.18": 9, "3.19": 4, "3.20": 3}
)
_DEBIAN_CODENAMES = ("buster", "bullseye", "bookworm")
_DEBIAN = [
    *(f"{c}{s}" for c in _DEBIAN_CODENAMES for s in ("", "-slim", "-backports")),
    *("buster-20190910", "buster-20200803", "buster-20210511", "buster-20240612", "bullseye-20240904"),
    *("bookworm-20240904", "bookworm-20241016", "bookworm-20241016-slim", "trixie", "trixie-slim", "sid"),
    *("10", *(f"10.{i}" for i in range(1, 14)), "10-slim", "10.13-slim"),
    *("11", *(f"11.{i}" for i in range(1, 12)), "11-slim", "11.11-slim"),
    *("12", *(f"12.{i}" for i in range(1, 9)), "12-slim", "12.8-slim"),
    "stable",
    "stable-slim",
    "latest",
]
_NODE_VERSIONS = [
    *("14", "14.17", "14.17.0", "14.17.6", "14.21", "14.21.3", "16", "16.20", "16.20.2"),
    *("18", "18.19", "18.19.1", "18.20", "18.20.4", "20", "20.11", "20.11.1", "20.18", "20.18.0"),
    *("22", "22.11", "22.11.0"),
]
_NODE = [
    *_variants(_NODE_VERSIONS, ("", "-alpine", "-slim", "-bullseye", "-bookworm")),
    *("lts", "lts-alpine", "current", "current-alpine", "latest", "alpine"),
]
_PYTHON_VERSIONS = [*_versions({"3.8": 20, "3.9": 20, "3.10": 15, "3.11": 10, "3.12": 7}), "3"]
_PYTHON = [*_variants(_PYTHON_VERSIONS, ("", "-slim", "-alpine", "-slim-bookworm", "-bullseye")), "latest", "slim"]
_GOLANG = [
    *_variants(
        _versions({"1.17": 13, "1.18": 10, "1.19": 13, "1.20": 14, "1.21": 13, "1.22": 9}),
        ("", "-alpine", "-bookworm", "-bullseye"),
    ),
    *("alpine", "bookworm", "latest"),
]

TAGS: dict[str, list[str]] = {
    "library/alpine": [*_ALPINE, "edge", "latest"],
    "library/debian": _DEBIAN,
    "library/node": _NODE,
    "library/python": _PYTHON,
    "library/golang": _GOLANG,
}


def registry_store(sb: Any) -> JsonStore:
    """The pushed tags: ``{"pushed": {name: {tag: {"digest": "sha256:...", "pushed_at": ISO 8601}}}}``."""
    store = sb.store("registry")
    with store.lock:
        store.data.setdefault("pushed", {})
    return store


def push_tag(store: JsonStore, image: str, tag: str, digest: str, when: datetime) -> None:
    """Record ``image`` (``registry.sandbox.local/<name>``, no tag) ``tag`` with ``digest``, as ``docker push``."""
    name = image.removeprefix(HOST + "/")
    with store.lock:
        store.data["pushed"].setdefault(name, {})[tag] = {"digest": digest, "pushed_at": when.isoformat()}
        store.save()


def _errors(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    body = {"errors": [{"code": code, "message": message, "detail": detail if detail is not None else {}}]}
    return JSONResponse(body, status_code=status, headers=HEADERS)


def _http(exc: HTTPException) -> JSONResponse:
    if exc.status_code == 405:
        return _errors(405, "UNSUPPORTED", "The operation is unsupported.")
    return _errors(exc.status_code, "NOT_FOUND" if exc.status_code == 404 else "UNKNOWN", str(exc.detail))


ERRORS = {
    HTTPException: _http,
    RequestValidationError: lambda exc: _errors(
        400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested", str(exc.errors()[0])
    ),
    Exception: lambda exc: _errors(500, "UNKNOWN", "unknown error"),
}

router = APIRouter()  # the one resource: tags (and the API version check)


@router.get("/v2/")
def version() -> JSONResponse:
    return JSONResponse({}, headers=HEADERS)


@router.get("/v2/{name:path}/tags/list")
def tags_list(
    request: Request, name: str, n: int | None = None, last: str | None = None, sb: Any = Depends(service)
) -> JSONResponse:
    if not _NAME.match(name):
        return _errors(400, "NAME_INVALID", "invalid repository name", {"name": name})
    sb.bus.publish("registry.read", {"name": name})  # the CI stand-in pushes what is due first
    store = registry_store(sb)
    with store.lock:
        pushed = list(store.data["pushed"].get(name, {}))
    if name not in TAGS and not pushed:
        return _errors(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})
    if n is not None and n < 0:
        return _errors(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested", {"n": n})
    tags = sorted(set(TAGS.get(name, [])) | set(pushed))
    if last is not None:
        tags = [t for t in tags if t > last]
    headers = dict(HEADERS)
    if n is not None and len(tags) > n:
        tags = tags[:n]
        if tags:
            root = request.scope.get("root_path", "")  # the mount prefix, so the path resolves on this host
            headers["Link"] = f'<{root}/v2/{name}/tags/list?n={n}&last={quote(tags[-1], safe="")}>; rel="next"'
    return JSONResponse({"name": name, "tags": tags}, headers=headers)


def build(sb: Any) -> FastAPI:
    """The registry stand-in; mounted at ``/registry`` by ``fixloop.sandbox.app``."""
    return stand_in("registry (sandbox)", sb, ERRORS, [router])
