"""Container registry tag listing over the OCI distribution API (httpx; no official Python client exists).

Vendor doc: github.com/opencontainers/distribution-spec ``spec.md``, "Listing Tags": ``GET /v2/<name>/tags/list
?n=<int>&last=<tag>`` -> ``{"name": ..., "tags": [...]}`` in lexical order, the next page named by a
``Link: <url>; rel="next"`` header; errors are ``{"errors": [{"code", "message", "detail"}]}`` (``NAME_UNKNOWN`` with
404 for an unknown repository).

Errors: ``NotFound`` (unknown repository), ``AuthError`` (401/403), ``Invalid`` (400), ``HttpStatusError``
(429/5xx, retryable), ``TransportError`` (no answer), ``IntegrationError`` (a body that is not a tag list).
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field, SecretStr
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


class RegistrySettings(BaseSettings):
    """``FIXLOOP_REGISTRY_URL`` (base URL, e.g. ``https://registry-1.docker.io`` or the sandbox's
    ``http://127.0.0.1:8900/registry``), optional ``FIXLOOP_REGISTRY_TOKEN`` (sent as a bearer token),
    ``FIXLOOP_REGISTRY_TIMEOUT`` (seconds per request), ``FIXLOOP_REGISTRY_LIBRARY_PREFIX`` (names without a ``/``
    get Docker Hub's ``library/``, as ``docker pull alpine`` does; default on)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_REGISTRY_", env_file=".env", extra="ignore")

    url: str = Field(description="Base URL of the container registry (OCI distribution API); enables tag lookups.")
    token: SecretStr | None = Field(default=None, description="Bearer token sent to the registry.")
    timeout: float = Field(default=15.0, gt=0, le=300, description="Seconds per HTTP request.")
    library_prefix: bool = Field(
        default=True, description="Names without a / get Docker Hub's library/ prefix, as docker pull does."
    )


# httpx's exceptions as ``fixloop.integrations.errors`` (``map_exceptions``).
_ERRORS: ExceptionMap = {httpx.TransportError: transport_error(SYSTEM)}


class RegistryClient:
    """Use as a context manager, or call ``close()``."""

    def __init__(self, settings: RegistrySettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"Accept": "application/json"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._http = httpx.Client(
            base_url=settings.url.rstrip("/"), headers=headers, timeout=settings.timeout, transport=transport
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, url: str, params: dict[str, Any] | None = None) -> httpx.Response:
        with map_exceptions(_ERRORS, f"GET {url.split('?')[0]}"):
            resp = self._http.get(url, params=params)
        if resp.status_code >= 400:
            raise status_error(SYSTEM, resp.status_code, _reason(resp))
        return resp

    def check(self) -> None:
        """``GET /v2/``: the registry speaks the distribution API and accepts the credentials."""
        self._get("/v2/")

    def tags(self, name: str) -> list[str]:
        """Every tag of repository ``name`` (e.g. ``library/alpine``), following the ``Link`` pages, in the
        registry's (lexical) order. ``NotFound`` when the registry doesn't know ``name``."""
        if self.settings.library_prefix and "/" not in name:
            name = f"library/{name}"
        out: list[str] = []
        url: str | None = f"/v2/{name}/tags/list"
        params: dict[str, Any] | None = {"n": PAGE_SIZE}
        for _ in range(MAX_PAGES):
            if url is None:
                return out
            resp = self._get(url, params)
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


def _reason(resp: httpx.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code')}: {first.get('message')}"[:300]
    except (ValueError, AttributeError, IndexError, TypeError):
        return resp.reason_phrase or "error"


def check(settings: RegistrySettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s registry line: ``GET /v2/`` (the OCI distribution API answers and takes the
    token), bounded by ``timeout`` seconds."""
    target = settings.url.rstrip("/")
    try:
        with RegistryClient(bounded(settings, timeout)) as client:
            client.check()
    except IntegrationError as e:
        return failed("registry", target, e, hint(e, {AuthError: "FIXLOOP_REGISTRY_TOKEN"}, "FIXLOOP_REGISTRY_URL"))
    return CheckResult(Status.OK, "registry", f"{target} (/v2/ answered)")
