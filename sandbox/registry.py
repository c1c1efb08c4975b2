"""The container registry stand-in (``/registry``): the OCI distribution API behind the registry token flow.

* every ``/v2/...`` request needs ``Authorization: Bearer <token>`` of this registry's token service, with the
  ``repository:<name>:pull`` scope for a repository path; without one -> 401 ``UNAUTHORIZED`` and
  ``WWW-Authenticate: Bearer realm="<base>/registry/token",service="registry.sandbox.local",scope="repository:
  <name>:pull"`` (no scope for ``/v2/``), as Docker Hub, GHCR and the GitLab registry answer (distribution's
  token spec, ``docs/content/spec/auth/token.md``);
* ``GET /token?service=...&scope=...[&scope=...]`` -> ``{"token", "access_token", "expires_in": 300, "issued_at"}``:
  with ``Authorization: Basic`` it must be the sandbox's ``registry_username``/``registry_password`` (else 401
  ``{"details": "incorrect username or password"}``, Docker Hub's answer); anonymous when ``registry_anonymous`` (the
  default) as for Docker Hub's public images, else 401. ``POST /token`` (the OAuth2 spec ``oauth.md``: form
  ``grant_type=refresh_token&refresh_token=<registry_identity_token>`` or ``grant_type=password&username&password``)
  answers the same. Pull is granted on every requested repository, push never; tokens expire on
  ``sb.clock``;
* ``GET /v2/`` -> 200 ``{}`` (API version check);
* ``GET /v2/<name>/tags/list[?n=<int>&last=<tag>]`` -> ``{"name": ..., "tags": [...]}``, tags in lexical order; with
  ``n``, at most ``n`` tags after ``last`` and, when more remain, a ``Link: </v2/<name>/tags/list?n=<n>&last=<tag>>;
  rel="next"`` header (distribution-spec "Listing Tags"; the path carries the ``/registry`` mount prefix so it
  resolves against this server). An unknown name -> 404 ``{"errors": [{"code": "NAME_UNKNOWN", "message":
  "repository name not known to registry", "detail": {"name": ...}}]}``;
* ``HEAD|GET /v2/<name>/manifests/<tag or digest>`` -> the tag's multi-platform manifest (linux/amd64 and
  linux/arm64): an OCI image index when the ``Accept`` header takes ``application/vnd.oci.image.index.v1+json``, else
  a Docker manifest list when it takes ``application/vnd.docker.distribution.manifest.list.v2+json``, else 404
  ``MANIFEST_UNKNOWN``; ``Docker-Content-Digest`` is the sha256 of the body (HEAD: the headers only). An unknown
  tag or digest -> 404 ``MANIFEST_UNKNOWN``.

The repositories are the Docker Hub official images the seeded GitOps repo builds from (``library/alpine``,
``library/debian``, ``library/node``, ``library/python``, ``library/golang``) with realistic tag sets (``TAGS``),
generated from version ranges, plus the tags pushed to it (``push_tag``: the CI stand-in's builds of
``registry.sandbox.local/<name>``, each with its OCI image manifest, its digest and the commit it was built from, in
``sb.store("registry")``). Docker Hub manifests are derived from the name and tag (deterministic digests); a pushed
tag's manifest is a single-platform OCI image manifest (``application/vnd.oci.image.manifest.v1+json``, linux/amd64,
one config and one layer descriptor, annotations ``org.opencontainers.image.revision`` = the source commit and
``org.opencontainers.image.ref.name`` = the tag), served by tag and by digest when the ``Accept`` header takes that
type (else 404 ``MANIFEST_UNKNOWN``), its ``Docker-Content-Digest`` the one ``push_tag`` recorded (the sha256 of the
body). The issued tokens are in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from fixloop.sandbox.routes import service, stand_in
from fixloop.sandbox.store import JsonStore

HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
SERVICE = "registry.sandbox.local"  # the token service's ``service`` name
HOST = "registry.sandbox.local"  # the pushed images' host; their repository names are the rest of the reference
TOKEN_TTL = 300  # seconds, as Docker Hub's tokens
MAX_TOKENS = 10_000
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
PLATFORMS = ("amd64", "arm64")
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


def registry_store(sb: Any) -> JsonStore:
    """The pushed tags: ``{"pushed": {name: {tag: {"digest": "sha256:...", "pushed_at": ISO 8601, "source": commit
    sha, "manifest": the manifest's JSON text}}}}`` (an older state may lack ``source`` and ``manifest``)."""
    store = sb.store("registry")
    with store.lock:
        store.data.setdefault("pushed", {})
    return store


def image_manifest(name: str, tag: str, source: str) -> bytes:
    """The OCI image manifest of ``name:tag`` built from commit ``source`` (module docstring; deterministic)."""

    def blob(kind: str) -> str:
        return "sha256:" + hashlib.sha256(f"{name}:{tag}@{source}:{kind}".encode()).hexdigest()

    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob("config"), "size": 1469},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": blob("layer"),
                "size": 3_000_000 + int(blob("size")[7:13], 16) % 1_000_000,
            }
        ],
        "annotations": {"org.opencontainers.image.ref.name": tag, "org.opencontainers.image.revision": source},
    }
    return json.dumps(doc, indent=3).encode()


def push_tag(store: JsonStore, image: str, tag: str, when: datetime, source: str) -> str:
    """Record ``image`` (``registry.sandbox.local/<name>``, no tag) ``tag``, built from commit ``source``, as
    ``docker push`` does: its manifest (``image_manifest``) and digest (the manifest's sha256), returned."""
    name = image.removeprefix(HOST + "/")
    body = image_manifest(name, tag, source)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    record = {"digest": digest, "pushed_at": when.isoformat(), "source": source, "manifest": body.decode()}
    with store.lock:
        store.data["pushed"].setdefault(name, {})[tag] = record
        store.save()
    return digest


def pushed(store: JsonStore, image: str) -> dict[str, Any] | None:
    """The record of a pushed image reference ``registry.sandbox.local/<name>:<tag>`` (``registry_store``'s
    shape), or None: another host, no tag, or a tag never pushed."""
    if not image.startswith(HOST + "/"):
        return None
    name, sep, tag = image.removeprefix(HOST + "/").partition("@")[0].rpartition(":")
    if not sep or "/" in tag:
        return None
    with store.lock:
        found = store.data["pushed"].get(name, {}).get(tag)
        return dict(found) if found else None


class Registry:
    """The token service's state: issued tokens (token -> granted repositories, expiry on ``sb.clock``)."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.tokens: dict[str, tuple[frozenset[str], datetime]] = {}
        self.issued = 0  # tokens issued since start (tests count the flow's round trips)
        self._lock = threading.Lock()

    def issue(self, scopes: list[str]) -> dict[str, Any]:
        names = frozenset(_pulls(scopes))
        now = self.sb.clock()
        token = "sbx." + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
            if len(self.tokens) >= MAX_TOKENS:
                self.tokens.pop(next(iter(self.tokens)))
            self.tokens[token] = (names, now + timedelta(seconds=TOKEN_TTL))
            self.issued += 1
        issued_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": TOKEN_TTL, "issued_at": issued_at}

    def allows(self, header: str, name: str | None) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._lock:
            found = self.tokens.get(token.strip())
        if found is None or found[1] <= self.sb.clock():
            return False
        return name is None or name in found[0]

    def basic_ok(self, header: str) -> bool | None:
        """None: no basic credentials; else whether they are the sandbox's."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            return False
        c = self.sb.credentials
        return secrets.compare_digest(user, c.registry_username) and secrets.compare_digest(
            password, c.registry_password.get_secret_value()
        )


def _pulls(scopes: list[str]) -> list[str]:
    """The repositories of ``repository:<name>:<actions>`` scopes whose actions include pull."""
    out = []
    for scope in (s for value in scopes for s in value.split(" ") if s):
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name and "pull" in actions.split(","):
            out.append(name)
    return out


def _repository(path: str) -> str | None:
    """The repository a ``/v2/...`` path (relative to the mount) names, None for ``/v2/`` itself."""
    rest = path.split("/v2/", 1)[1] if "/v2/" in path else ""
    for marker in ("/tags/list", "/manifests/", "/blobs/"):
        if marker in rest:
            return rest.split(marker, 1)[0]
    return None


def _guard(reg: Registry) -> Any:
    def guard(request: Request) -> Response | None:
        root = request.scope.get("root_path", "")
        path = request.url.path.removeprefix(root)
        if not path.startswith("/v2"):
            return None
        name = _repository(path)
        if reg.allows(request.headers.get("authorization", ""), name):
            return None
        challenge = f'Bearer realm="{reg.sb.url("/registry", "/token")}",service="{SERVICE}"'
        detail: Any = {}
        if name is not None:
            challenge += f',scope="repository:{name}:pull"'
            detail = [{"Type": "repository", "Name": name, "Action": "pull"}]
        resp = _errors(401, "UNAUTHORIZED", "authentication required", detail)
        resp.headers["WWW-Authenticate"] = challenge
        return resp

    return guard


tokens = APIRouter()  # the token service (not behind the guard: it is outside /v2)


def _refused(message: str) -> JSONResponse:
    return JSONResponse({"details": message}, status_code=401)


@tokens.get("/token")
def get_token(request: Request, reg: Registry = Depends(service)) -> JSONResponse:
    svc = request.query_params.get("service")
    if svc is not None and svc != SERVICE:
        return _errors(400, "DENIED", "unknown service", {"service": svc})
    ok = reg.basic_ok(request.headers.get("authorization", ""))
    if ok is False:
        return _refused("incorrect username or password")
    if ok is None and not reg.sb.config.registry_anonymous:
        return _refused("authentication required")
    return JSONResponse(reg.issue(request.query_params.getlist("scope")))


@tokens.post("/token")
async def post_token(request: Request, reg: Registry = Depends(service)) -> JSONResponse:
    form = parse_qs((await request.body()).decode("utf-8", "replace")[:8192])
    one = {k: v[0] for k, v in form.items()}
    c = reg.sb.credentials
    grant = one.get("grant_type")
    if grant == "refresh_token":
        ok = secrets.compare_digest(one.get("refresh_token", ""), c.registry_identity_token.get_secret_value())
    elif grant == "password":
        ok = secrets.compare_digest(one.get("username", ""), c.registry_username) and secrets.compare_digest(
            one.get("password", ""), c.registry_password.get_secret_value()
        )
    else:
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if not ok:
        return _refused("invalid grant")
    body = reg.issue(form.get("scope", []))
    return JSONResponse(body | {"scope": " ".join(form.get("scope", []))})


router = APIRouter()  # the distribution API: the version check, tags, manifests


@router.get("/v2/")
def version() -> JSONResponse:
    return JSONResponse({}, headers=HEADERS)


@router.get("/v2/{name:path}/tags/list")
def tags_list(
    request: Request, name: str, n: int | None = None, last: str | None = None, reg: Any = Depends(service)
) -> JSONResponse:
    if not _NAME.match(name):
        return _errors(400, "NAME_INVALID", "invalid repository name", {"name": name})
    reg.sb.bus.publish("registry.read", {"name": name})  # the CI stand-in pushes what is due first
    store = registry_store(reg.sb)
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


@lru_cache(maxsize=16)
def _manifests(name: str) -> dict[str, tuple[bytes, str]]:
    """Every manifest of ``name`` by tag and by digest: ``{"<tag>|<media type>" or "<digest>": (body, type)}``."""
    out: dict[str, tuple[bytes, str]] = {}
    for tag in TAGS.get(name, []):
        for index_type, child_type in ((OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)):
            children = [
                {
                    "mediaType": child_type,
                    "digest": "sha256:" + hashlib.sha256(f"{name}:{tag}:{arch}:{child_type}".encode()).hexdigest(),
                    "size": 1000 + len(tag) * 7 + len(arch),
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for arch in PLATFORMS
            ]
            body = json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": children}, indent=3).encode()
            out[f"{tag}|{index_type}"] = (body, index_type)
            out["sha256:" + hashlib.sha256(body).hexdigest()] = (body, index_type)
    return out


def _pushed_manifest(reg: Any, name: str, reference: str, accept: str) -> Response | None:
    """The manifest of a pushed tag or its digest (module docstring); None when ``name`` has no pushed tag."""
    reg.sb.bus.publish("registry.read", {"name": name})  # the CI stand-in pushes what is due first
    store = registry_store(reg.sb)
    with store.lock:
        tags = {t: dict(r) for t, r in store.data["pushed"].get(name, {}).items()}
    if not tags:
        return None
    record = tags.get(reference) or next((r for r in tags.values() if r.get("digest") == reference), None)
    if record is None:
        return _errors(404, "MANIFEST_UNKNOWN", "manifest unknown", {"name": name, "reference": reference})
    if OCI_MANIFEST not in accept and "*/*" not in accept:
        return _errors(404, "MANIFEST_UNKNOWN", "OCI manifest found, but accept header does not support OCI manifests")
    tag = next(t for t, r in tags.items() if r is record or r == record)
    body = (record.get("manifest") or "").encode() or image_manifest(name, tag, str(record.get("source") or ""))
    headers = HEADERS | {
        "Docker-Content-Digest": str(record["digest"]),
        "Content-Type": OCI_MANIFEST,
        "Content-Length": str(len(body)),
    }
    return Response(body, headers=headers, media_type=OCI_MANIFEST)


@router.api_route("/v2/{name:path}/manifests/{reference}", methods=["GET", "HEAD"])
def manifest(request: Request, name: str, reference: str, reg: Any = Depends(service)) -> Response:
    if not _NAME.match(name):
        return _errors(400, "NAME_INVALID", "invalid repository name", {"name": name})
    accept = request.headers.get("accept", "")
    if name not in TAGS:
        served = _pushed_manifest(reg, name, reference, accept)
        if served is None:
            return _errors(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})
        if request.method == "HEAD" and served.status_code == 200:
            return Response(b"", headers=dict(served.headers), media_type=served.media_type)
        return served
    found = _manifests(name).get(reference)
    if found is None:
        wanted = OCI_INDEX if OCI_INDEX in accept else DOCKER_LIST if DOCKER_LIST in accept else None
        if wanted is None and f"{reference}|{OCI_INDEX}" in _manifests(name):
            return _errors(404, "MANIFEST_UNKNOWN", "OCI index found, but accept header does not support OCI indexes")
        found = _manifests(name).get(f"{reference}|{wanted}")
    if found is None:
        return _errors(404, "MANIFEST_UNKNOWN", "manifest unknown", {"name": name, "reference": reference})
    body, media_type = found
    headers = HEADERS | {
        "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest(),
        "Content-Type": media_type,
        "Content-Length": str(len(body)),
    }
    return Response(b"" if request.method == "HEAD" else body, headers=headers, media_type=media_type)


def build(sb: Any) -> FastAPI:
    """The registry stand-in and its token service; mounted at ``/registry`` by ``fixloop.sandbox.app``."""
    reg = Registry(sb)
    return stand_in("registry (sandbox)", reg, ERRORS, [tokens, router], guard=_guard(reg))
