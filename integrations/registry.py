"""Container registries over the OCI distribution API (httpx; no official Python client exists): tag lists and
manifest digests, with the registry token flow and credentials per registry host.

Vendor docs:

* github.com/opencontainers/distribution-spec ``spec.md``: "Listing Tags", ``GET /v2/<name>/tags/list?n=<int>
  &last=<tag>`` -> ``{"name": ..., "tags": [...]}`` in lexical order, the next page named by a ``Link: <url>;
  rel="next"`` header; "Pulling manifests", ``HEAD|GET /v2/<name>/manifests/<reference>`` with an ``Accept`` of the
  manifest media types, the digest in ``Docker-Content-Digest``; errors are ``{"errors": [{"code", "message",
  "detail"}]}`` (``NAME_UNKNOWN`` / ``MANIFEST_UNKNOWN`` with 404).
* distribution.github.io/distribution/spec/auth/token/ (the token flow Docker Hub, GHCR and the GitLab registry
  speak): a 401 carries ``WWW-Authenticate: Bearer realm="<token URL>",service="<name>",scope="repository:<name>:
  pull"``; ``GET <realm>?service=<service>&scope=<scope>`` (``scope`` repeated, basic credentials when configured,
  anonymous otherwise) -> ``{"token" | "access_token": ..., "expires_in": <seconds, default 60>, "issued_at"}``; the
  request is retried with ``Authorization: Bearer <token>``. With a docker ``identitytoken`` (a refresh token)
  fixloop asks the same realm the OAuth2 way (``.../spec/auth/oauth/``): ``POST`` form ``grant_type=refresh_token``.
* docker's ``config.json`` (docs.docker.com/reference/cli/docker/login/, "Credential stores"): ``{"auths": {"<host>":
  {"auth": base64("<user>:<password>")} | {"username", "password"} | {"identitytoken"}}}``; Docker Hub's key is
  ``https://index.docker.io/v1/``. Credential helpers (``credsStore``, ``credHelpers``) are not run: a host that
  needs one is a ``CredentialsError`` naming it.

Errors: ``NotFound`` (unknown repository or tag), ``AuthError`` (401/403, the token service refusing the
credentials), ``Invalid`` (400), ``HttpStatusError`` (429/5xx, retryable), ``TransportError`` (no answer),
``ChallengeError`` (a ``WWW-Authenticate`` fixloop cannot follow), ``CredentialsError`` (the docker config),
``IntegrationError`` (a body that is not a tag list, a token answer or a manifest). No message holds a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.integrations.checks import CheckResult, Status, bounded, failed, hint
from fixloop.integrations.errors import (
    AuthError,
    ExceptionMap,
    IntegrationError,
    map_exceptions,
    status_error,
    transport_error,
)

SYSTEM = "registry"
PAGE_SIZE = 100
MAX_PAGES = 200  # a guard against a registry whose Link header loops
MAX_CHALLENGE_BYTES = 8192  # a WWW-Authenticate longer than this is refused, not parsed
MAX_TOKEN_BYTES = 16384
DEFAULT_EXPIRES_IN = 60  # seconds: the token spec's default when expires_in is missing
EXPIRY_LEEWAY = 5.0  # seconds before its expiry a cached token is no longer sent
MAX_CONFIG_BYTES = 1 << 20
CLIENT_ID = "fixloop"  # the OAuth2 client_id sent with a refresh token

# Manifest media types a digest lookup accepts (the image-spec index and manifest, Docker's list and v2 manifest).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

DOCKER_HUB = "docker.io"  # the key fixloop files Docker Hub's credentials under, whatever alias names it
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_PATH = re.compile(r"^(?P<name>.+?)/(?:tags/list|manifests/[^/]+|blobs/[^/]+)$")


class ChallengeError(IntegrationError):
    """A ``WWW-Authenticate`` header fixloop cannot parse or follow (no realm, a realm that is not http(s), ...)."""


class CredentialsError(IntegrationError):
    """The docker config file cannot be read, or its entry for a host is not usable (bad base64, a credential
    helper fixloop does not run)."""


class RegistrySettings(BaseSettings):
    """``FIXLOOP_REGISTRY_URL`` (base URL, e.g. ``https://registry-1.docker.io``, ``https://ghcr.io``,
    ``https://registry.gitlab.com`` or the sandbox's ``http://127.0.0.1:8900/registry``); credentials for its host:
    ``FIXLOOP_REGISTRY_USERNAME`` + ``FIXLOOP_REGISTRY_PASSWORD`` (a password, personal access token or deploy
    token), else the host's entry in ``FIXLOOP_REGISTRY_DOCKER_CONFIG`` (a docker ``config.json``), else anonymous
    pulls; ``FIXLOOP_REGISTRY_TOKEN`` (a bearer token sent up front; a 401 challenge still runs the token flow),
    ``FIXLOOP_REGISTRY_TIMEOUT`` (seconds per request), ``FIXLOOP_REGISTRY_LIBRARY_PREFIX`` (names without a ``/``
    get Docker Hub's ``library/``, as ``docker pull alpine`` does; default on)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_REGISTRY_", env_file=".env", extra="ignore")

    url: str = Field(description="Base URL of the container registry (OCI distribution API); enables tag lookups.")
    username: str | None = Field(
        default=None, description="User for the registry's host (basic credentials sent to its token service)."
    )
    password: SecretStr | None = Field(
        default=None, description="Password, access token or deploy token of FIXLOOP_REGISTRY_USERNAME."
    )
    docker_config: Path | None = Field(
        default=None,
        description="A docker config.json (auths: {host: {auth | username/password | identitytoken}}): credentials "
        "per registry host, used when FIXLOOP_REGISTRY_USERNAME is not set. Credential helpers are not run.",
    )
    token: SecretStr | None = Field(
        default=None, description="A bearer token sent up front; a 401 challenge still runs the token flow."
    )
    timeout: float = Field(default=15.0, gt=0, le=300, description="Seconds per HTTP request.")
    library_prefix: bool = Field(
        default=True, description="Names without a / get Docker Hub's library/ prefix, as docker pull does."
    )

    @model_validator(mode="after")
    def _pair(self) -> RegistrySettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("FIXLOOP_REGISTRY_USERNAME and FIXLOOP_REGISTRY_PASSWORD go together")
        return self


# -- WWW-Authenticate ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header (RFC 9110 section 11.6.1): ``scheme`` lower-cased, ``params``
    with lower-cased names (quoted values unquoted), ``scopes`` every ``scope`` value split on spaces (the token
    spec allows several, in one parameter or repeated), ``token68`` for a scheme given one."""

    scheme: str
    params: dict[str, str]
    scopes: tuple[str, ...] = ()
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")


_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
# a value is quoted, or (leniently: registries put ``:`` and ``/`` in bare values) anything up to a comma or space
_PARAM = re.compile(rf'[ \t]*({_TCHAR}+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s",\\]+))[ \t]*(?=,|$)')
_SCHEME = re.compile(rf"[ \t]*({_TCHAR}+)(?=[ \t]|,|$)")
_TOKEN68 = re.compile(r"[ \t]+([A-Za-z0-9._~+/-]+=*)[ \t]*(?=,|$)")
_SEP = re.compile(r"[ \t]*,[ \t]*")
_UNQUOTE = re.compile(r"\\(.)")


def parse_challenges(headers: str | Iterable[str]) -> list[Challenge]:
    """Every challenge of one or more ``WWW-Authenticate`` values, in order (RFC 9110 ``#challenge``: ``scheme``
    then a token68 or comma-separated ``name=token`` / ``name="quoted"`` parameters, several challenges in one
    value). ``ChallengeError`` for anything else (never another exception) or a value over
    ``MAX_CHALLENGE_BYTES``."""
    values = [headers] if isinstance(headers, str) else list(headers)
    if sum(len(v.encode("utf-8", "replace")) for v in values) > MAX_CHALLENGE_BYTES:
        raise ChallengeError(SYSTEM, f"WWW-Authenticate over {MAX_CHALLENGE_BYTES} bytes")
    out: list[Challenge] = []
    for text in values:
        out.extend(_parse_one(text))
    return out


def _parse_one(text: str) -> list[Challenge]:
    out: list[Challenge] = []
    pos, end = 0, len(text)
    scheme: str | None = None
    params: dict[str, str] = {}
    scopes: list[str] = []
    token68: str | None = None

    def close() -> None:
        if scheme is not None:
            out.append(Challenge(scheme, dict(params), tuple(scopes), token68))

    while pos < end:
        sep = _SEP.match(text, pos)
        if sep:
            pos = sep.end()
            continue
        if text[pos] in " \t":
            pos += 1
            continue
        param = _PARAM.match(text, pos) if scheme is not None else None
        if param:
            name = param.group(1).lower()
            value = _UNQUOTE.sub(r"\1", param.group(2)) if param.group(2) is not None else param.group(3)
            if name == "scope":
                scopes.extend(s for s in value.split(" ") if s)
            params.setdefault(name, value)
            pos = param.end()
            continue
        new = _SCHEME.match(text, pos)
        if not new:
            raise ChallengeError(SYSTEM, f"WWW-Authenticate not parseable at character {pos}")
        close()
        scheme, params, scopes, token68 = new.group(1).lower(), {}, [], None
        pos = new.end()
        t68 = _TOKEN68.match(text, pos)
        if t68:  # RFC 9110: a token68 ("abc==") rather than a parameter when the whole item is one
            token68 = t68.group(1)
            pos = t68.end()
    close()
    return out


# -- credentials --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credential:
    """Who fixloop is at one registry host: ``username`` + ``password`` (basic credentials to the token service,
    or to a registry answering ``Basic``), or an ``identity_token`` (an OAuth2 refresh token, docker's
    ``identitytoken``)."""

    username: str | None = None
    password: SecretStr | None = None
    identity_token: SecretStr | None = None

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, password=***, identity_token=***)"


def registry_host(url_or_host: str) -> str:
    """The host (with its port) a credential is filed under: scheme and path dropped, lower-cased; every Docker Hub
    alias (``https://index.docker.io/v1/``, ``registry-1.docker.io``, ...) is ``docker.io``."""
    text = url_or_host.strip()
    netloc = urlsplit(text if "://" in text else f"//{text}").netloc.lower()
    netloc = netloc.rsplit("@", 1)[-1]
    return DOCKER_HUB if netloc in _DOCKER_HUB_ALIASES else netloc


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CredentialsError(SYSTEM, f"docker config {path}: {type(e).__name__}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise CredentialsError(SYSTEM, f"docker config {path}: over {MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(SYSTEM, f"docker config {path}: not JSON") from None
    if not isinstance(doc, dict):
        raise CredentialsError(SYSTEM, f"docker config {path}: not a JSON object")
    return doc


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _entry(key: str, entry: dict[str, Any], path: Path) -> Credential:
    def text(name: str) -> str | None:
        v = entry.get(name)
        return v if isinstance(v, str) and v else None

    if text("identitytoken"):
        return Credential(username=text("username"), identity_token=SecretStr(text("identitytoken") or ""))
    if text("auth"):
        try:
            user, sep, password = base64.b64decode(text("auth") or "", validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            raise CredentialsError(SYSTEM, f"docker config {path}: the auth of {key} is not base64") from None
        if not sep or not user:
            raise CredentialsError(SYSTEM, f"docker config {path}: the auth of {key} is not user:password")
        return Credential(username=user, password=SecretStr(password))
    if text("username") and text("password"):
        return Credential(username=text("username"), password=SecretStr(text("password") or ""))
    return Credential()


class DockerConfig:
    """A docker ``config.json`` (see the module docstring) read once: ``auths`` by ``registry_host``;
    ``credential(host)`` -> the host's ``Credential``, None when it has no entry (anonymous), ``CredentialsError``
    when only a credential helper holds it (``credHelpers``, or ``credsStore`` with an empty ``auths`` entry).
    ``CredentialsError`` on reading: the file is missing, over 1 MiB, not a JSON object, or an ``auth`` is not
    base64 of ``user:password``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        doc = _read_config(path)
        self.auths = {
            registry_host(str(k)): _entry(str(k), v, path)
            for k, v in _section(doc, "auths").items()
            if isinstance(v, dict)
        }
        self.helpers = {registry_host(str(k)): str(v) for k, v in _section(doc, "credHelpers").items()}
        self.store = doc.get("credsStore") if isinstance(doc.get("credsStore"), str) else None

    def credential(self, host: str) -> Credential | None:
        host = registry_host(host)
        found = self.auths.get(host)
        if found is not None and (found.password is not None or found.identity_token is not None):
            return found
        helper = self.helpers.get(host) or (self.store if found is not None else None)
        if helper:
            raise CredentialsError(
                SYSTEM,
                f"docker config {self.path}: {host}'s credentials are in the credential helper "
                f"docker-credential-{helper[:40]}, which fixloop does not run (put an auth entry in the file or set "
                "FIXLOOP_REGISTRY_USERNAME/FIXLOOP_REGISTRY_PASSWORD)",
            )
        return None


def credential_for(settings: RegistrySettings) -> Credential | None:
    """The credential for the host of ``settings.url``: the username/password settings, else the host's entry in
    the docker config, else None (anonymous)."""
    if settings.username is not None and settings.password is not None:
        return Credential(username=settings.username, password=settings.password)
    if settings.docker_config is not None:
        return DockerConfig(settings.docker_config).credential(settings.url)
    return None


# -- the token flow -----------------------------------------------------------------------------------------------
class TokenCache:
    """Bearer tokens by ``(host, scope)`` until ``expires_in`` (less ``EXPIRY_LEEWAY``) has passed on ``clock``
    (seconds, monotonic). ``scope`` is the challenge's scopes joined by a space (``""`` for ``GET /v2/``).
    Thread-safe: the activities share one client across threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._alias: dict[tuple[str, str], str] = {}  # (host, scope guessed from the path) -> challenge scope
        self._lock = threading.Lock()

    def get(self, host: str, path_scope: str) -> str | None:
        with self._lock:
            scope = self._alias.get((host, path_scope), path_scope)
            found = self._tokens.get((host, scope))
            if found is None:
                return None
            if self.clock() >= found[1]:
                del self._tokens[(host, scope)]
                return None
            return found[0]

    def put(self, host: str, path_scope: str, scope: str, token: str, expires_in: float) -> None:
        with self._lock:
            now = self.clock()
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            if expires_in > EXPIRY_LEEWAY:
                self._tokens[(host, scope)] = (token, now + expires_in - EXPIRY_LEEWAY)
            self._alias[(host, path_scope)] = scope

    def drop(self, host: str, path_scope: str) -> None:
        with self._lock:
            scope = self._alias.get((host, path_scope), path_scope)
            self._tokens.pop((host, scope), None)


def path_scope(path: str) -> str:
    """The scope a request path needs, as registries name it: ``/v2/<name>/tags/list`` (or ``manifests/<ref>``,
    ``blobs/<digest>``) -> ``repository:<name>:pull``; ``/v2/`` and anything else -> ``""``. A registry under a
    path prefix (the sandbox's ``/registry/v2/...``) is understood."""
    _, sep, rest = path.partition("/v2/")
    match = _REPO_PATH.match(rest) if sep else None
    return f"repository:{match.group('name')}:pull" if match else ""


class RegistryAuth(httpx.Auth):
    """httpx's auth flow for the distribution token spec: a cached token for the request's ``(host, scope)`` is
    sent up front (else ``token``, a static bearer token); a 401 with a ``Bearer`` challenge fetches a token from
    its realm (``service``, every ``scope``; basic credentials or an OAuth2 refresh token when ``credential`` has
    them, anonymous otherwise), caches it and retries the request once; a ``Basic`` challenge retries once with the
    basic credentials. The token service's refusal is an ``AuthError``; an unusable challenge a ``ChallengeError``.
    Credentials are sent to a realm only over https, or http when the registry itself is http (a local one)."""

    requires_response_body = True

    def __init__(
        self, credential: Credential | None, token: SecretStr | None = None, cache: TokenCache | None = None
    ) -> None:
        self.credential = credential
        self.token = token
        self.cache = cache or TokenCache()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        host = request.url.netloc.decode("ascii")
        scope = path_scope(request.url.path)
        cached = self.cache.get(host, scope)
        if cached is not None:
            request.headers["Authorization"] = f"Bearer {cached}"
        elif self.token is not None:
            request.headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        response = yield request
        if response.status_code != 401:
            return
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            if cached is not None:
                self.cache.drop(host, scope)
            token_response = yield self._token_request(bearer, request)
            token, expires_in = _token(token_response, host)
            self.cache.put(host, scope, " ".join(bearer.scopes), token, expires_in)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
        elif any(c.scheme == "basic" for c in challenges) and self._basic() is not None:
            request.headers["Authorization"] = self._basic() or ""
            yield request

    def _basic(self) -> str | None:
        c = self.credential
        if c is None or c.username is None or c.password is None:
            return None
        pair = f"{c.username}:{c.password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def _token_request(self, challenge: Challenge, request: httpx.Request) -> httpx.Request:
        realm = challenge.realm
        if not realm:
            raise ChallengeError(SYSTEM, "a Bearer challenge without a realm")
        try:
            url = httpx.URL(realm)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise ChallengeError(SYSTEM, "the Bearer challenge's realm is not a URL") from None
        if url.scheme not in ("https", "http") or not url.host:
            raise ChallengeError(SYSTEM, "the Bearer challenge's realm is not an http(s) URL")
        if url.scheme == "http" and request.url.scheme != "http":
            raise ChallengeError(SYSTEM, f"the token realm {url.host} is plain http for an https registry")
        extensions = {k: v for k, v in request.extensions.items() if k == "timeout"}
        params: list[tuple[str, str]] = [("service", challenge.service)] if challenge.service else []
        params += [("scope", s) for s in challenge.scopes]
        c = self.credential
        if c is not None and c.identity_token is not None:
            form = dict(params[:1]) | {
                "grant_type": "refresh_token",
                "refresh_token": c.identity_token.get_secret_value(),
                "client_id": CLIENT_ID,
            }
            if challenge.scopes:
                form["scope"] = " ".join(challenge.scopes)
            return httpx.Request("POST", url, data=form, extensions=extensions)
        headers = {"Accept": "application/json"}
        basic = self._basic()
        if basic is not None and c is not None and c.username is not None:
            headers["Authorization"] = basic
            params.append(("account", c.username))
        return httpx.Request("GET", url.copy_merge_params(params), headers=headers, extensions=extensions)


def _token(resp: httpx.Response, host: str) -> tuple[str, float]:
    """``(token, expires_in seconds)`` of a token service's answer; its refusal as an ``AuthError``."""
    where = f"token service of {host} ({resp.request.url.host})"
    if resp.status_code in (401, 403):
        raise AuthError(SYSTEM, resp.status_code, f"the {where} refused the credentials")
    if resp.status_code >= 400:
        raise status_error(SYSTEM, resp.status_code, f"the {where}: {_reason(resp)}")
    try:
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        expires = body.get("expires_in", DEFAULT_EXPIRES_IN)
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES or not token.isprintable():
            raise ValueError
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise ValueError
    except (ValueError, AttributeError):
        raise IntegrationError(SYSTEM, f"the {where} answered no token") from None
    return token, float(expires)


# -- the client ---------------------------------------------------------------------------------------------------
# httpx's exceptions as ``fixloop.integrations.errors`` (``map_exceptions``).
_ERRORS: ExceptionMap = {httpx.TransportError: transport_error(SYSTEM)}


class RegistryClient:
    """Tags and digests of one registry (``settings.url``), with the token flow (``RegistryAuth``) and the
    credential of its host (``credential_for``; a ``CredentialsError`` here when the docker config is unusable).
    ``clock`` (monotonic seconds) times the cached tokens. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        settings: RegistrySettings,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.auth = RegistryAuth(credential_for(settings), settings.token, TokenCache(clock))
        self._http = httpx.Client(
            base_url=settings.url.rstrip("/"),
            headers={"Accept": "application/json"},
            timeout=settings.timeout,
            transport=transport,
            auth=self.auth,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self, method: str, url: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        with map_exceptions(_ERRORS, f"{method} {url.split('?')[0]}"):
            resp = self._http.request(method, url, params=params, headers=headers)
        if resp.status_code >= 400:
            raise status_error(SYSTEM, resp.status_code, _reason(resp))
        return resp

    def _name(self, name: str) -> str:
        return f"library/{name}" if self.settings.library_prefix and "/" not in name else name

    def check(self) -> None:
        """``GET /v2/``: the registry speaks the distribution API and accepts the credentials (through the token
        flow when it challenges)."""
        self._send("GET", "/v2/")

    def tags(self, name: str) -> list[str]:
        """Every tag of repository ``name`` (e.g. ``library/alpine``), following the ``Link`` pages, in the
        registry's (lexical) order. ``NotFound`` when the registry doesn't know ``name``."""
        name = self._name(name)
        out: list[str] = []
        url: str | None = f"/v2/{name}/tags/list"
        params: dict[str, Any] | None = {"n": PAGE_SIZE}
        for _ in range(MAX_PAGES):
            if url is None:
                return out
            resp = self._send("GET", url, params)
            try:
                body = resp.json()
                page = body.get("tags") or []
                if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                    raise ValueError
            except (ValueError, AttributeError):
                raise IntegrationError(SYSTEM, f"{name}: the answer is not a tag list") from None
            out.extend(page)
            nxt = resp.links.get("next", {}).get("url")
            url, params = (str(resp.url.join(nxt)), None) if nxt and page else (None, None)
            if url and httpx.URL(url).netloc != resp.url.netloc:  # never send the token to another host
                raise IntegrationError(SYSTEM, f"{name}: the next page is on another host")
        raise IntegrationError(SYSTEM, f"{name}: more than {MAX_PAGES} pages of tags")

    def digest(self, name: str, tag: str) -> str:
        """The manifest digest (``sha256:<64 hex>``) ``name:tag`` resolves to, as ``docker pull`` records it: the
        image index / manifest list for a multi-platform image. ``HEAD /v2/<name>/manifests/<tag>`` accepting
        ``MANIFEST_TYPES``, its ``Docker-Content-Digest``; a registry that gives none on HEAD is asked with GET and
        the body's sha256 taken (and checked against the header when there is one). ``NotFound`` for an unknown
        repository or tag; ``IntegrationError`` for a tag that is not one, or a digest that does not match."""
        name = self._name(name)
        if not (_TAG.match(tag) or _DIGEST.match(tag)):
            raise IntegrationError(SYSTEM, f"{name}: {tag[:130]!r} is not a tag or a sha256 digest")
        url = f"/v2/{name}/manifests/{tag}"
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        try:
            head = self._send("HEAD", url, headers=accept)
        except IntegrationError as e:
            if getattr(e, "status", None) == 404:
                raise status_error(SYSTEM, 404, f"{name}:{tag}: MANIFEST_UNKNOWN") from None
            raise
        found = head.headers.get("Docker-Content-Digest", "")
        if _DIGEST.match(found):
            return found
        body = self._send("GET", url, headers=accept)
        computed = "sha256:" + hashlib.sha256(body.content).hexdigest()
        stated = body.headers.get("Docker-Content-Digest")
        if stated and stated != computed:
            raise IntegrationError(SYSTEM, f"{name}:{tag}: the manifest's sha256 is not its Docker-Content-Digest")
        return computed


def _reason(resp: httpx.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code')}: {first.get('message')}"[:300]
    except (ValueError, AttributeError, IndexError, TypeError):
        return resp.reason_phrase or "error"


def check(settings: RegistrySettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s registry line: ``GET /v2/`` through the token flow (the OCI distribution API
    answers and takes the credentials), bounded by ``timeout`` seconds."""
    target = settings.url.rstrip("/")
    creds = "FIXLOOP_REGISTRY_USERNAME/FIXLOOP_REGISTRY_PASSWORD or FIXLOOP_REGISTRY_DOCKER_CONFIG"
    try:
        with RegistryClient(bounded(settings, timeout)) as client:
            client.check()
    except IntegrationError as e:
        hints = {CredentialsError: "FIXLOOP_REGISTRY_DOCKER_CONFIG", AuthError: creds}
        return failed("registry", target, e, hint(e, hints, "FIXLOOP_REGISTRY_URL"))
    who = "anonymous" if client.auth.credential is None else "with credentials"
    return CheckResult(Status.OK, "registry", f"{target} (/v2/ answered, {who})")
