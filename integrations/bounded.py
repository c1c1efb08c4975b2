"""A small read-only JSON client over httpx, shared by the metadata clients (``pypi``, ``endoflife``) and the
monitoring APIs (``prometheus``, ``alertmanager.api``): short timeouts, TLS verified, redirects followed (at most 3;
httpx drops ``Authorization`` on a redirect to another origin), and every body streamed and refused past a byte
cap, so an answer cannot exhaust the worker's memory.

The monitoring APIs share their access settings (``ApiAccess``: a base URL, a bearer token or a username and
password, an extra CA bundle, a timeout and a byte cap), mixed into each system's settings class, which reads them
under its own ``FIXLOOP_<SYSTEM>_`` prefix.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Self

import httpx
from pydantic import AfterValidator, BaseModel, Field, SecretStr, ValidationInfo, field_validator

from fixloop.core.parsing import clean
from fixloop.integrations.errors import IntegrationError, map_exceptions, status_error, transport_error

ERROR_BODY_MAX = 64 << 10  # bytes of an error answer read for the server's reason
REASON_MAX = 300  # characters of the server's reason kept in a message

Params = Mapping[str, str] | Sequence[tuple[str, str]]
Reason = Callable[[Any], str | None]  # the server's reason in an error answer's JSON, or None


class JsonApi:
    """GETs of JSON documents from ``base_url`` for ``system`` (its name in errors), each at most ``max_bytes``.
    ``headers`` and ``auth`` are sent with every request; ``verify``: True (the system's CAs) or an
    ``ssl.SSLContext``; ``reason`` reads the server's short reason out of an error answer's JSON (at most
    ``ERROR_BODY_MAX`` bytes of it are read; the reason is cut to ``REASON_MAX`` characters, and each of
    ``secrets`` in it, the credentials sent, is masked: a proxy may echo a header). Use as a context manager, or
    call ``close()``."""

    def __init__(
        self,
        system: str,
        base_url: str,
        timeout: float,
        max_bytes: int,
        transport: httpx.BaseTransport | None,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        verify: ssl.SSLContext | bool = True,
        reason: Reason | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.system = system
        self.max_bytes = max_bytes
        self._reason = reason
        self._secrets = [x for x in secrets if x]
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Accept": "application/json", "User-Agent": "fixloop", **(headers or {})},
            auth=auth,
            verify=verify,
            timeout=timeout,
            transport=transport,
            follow_redirects=True,
            max_redirects=3,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get_json(self, path: str, params: Params | None = None) -> Any:
        """The JSON body of ``GET path?params`` (a repeated name: a sequence of pairs). ``HttpStatusError``
        (``AuthError`` for 401/403, ``NotFound`` for 404, ``Invalid`` for 400/422, retryable for 429/5xx) for an
        error status, with the server's reason when ``reason`` finds one; ``TransportError`` without an answer;
        ``IntegrationError`` for a body over ``max_bytes`` bytes, not JSON or nested too deep to decode. Messages
        name the path, never the query, a header or the body."""
        what = f"GET {path}"
        errors = {httpx.TransportError: transport_error(self.system), httpx.InvalidURL: transport_error(self.system)}
        with map_exceptions(errors, what), self._http.stream("GET", path, params=params) as resp:
            if resp.status_code >= 400:
                why = self._error_reason(resp)
                raise status_error(self.system, resp.status_code, f"{what}: {why}" if why else what)
            raw = self._read(resp, self.max_bytes)
            if raw is None:
                raise IntegrationError(self.system, f"{what}: the answer is over {self.max_bytes} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise IntegrationError(self.system, f"{what}: the answer is not JSON") from None
        except RecursionError:  # thousands of nested arrays fit in a small body
            raise IntegrationError(self.system, f"{what}: the answer is nested too deep") from None

    @staticmethod
    def _read(resp: httpx.Response, limit: int) -> bytes | None:
        raw = bytearray()
        for chunk in resp.iter_bytes():
            raw += chunk
            if len(raw) > limit:
                return None
        return bytes(raw)

    def _error_reason(self, resp: httpx.Response) -> str | None:
        if self._reason is None:
            return None
        raw = self._read(resp, ERROR_BODY_MAX)
        try:
            why = self._reason(json.loads(raw)) if raw else None
        except (ValueError, RecursionError):
            return None
        if not isinstance(why, str):
            return None
        for secret in self._secrets:
            why = why.replace(secret, "***")
        return clean(why, REASON_MAX) or None


def json_pointer(parts: tuple[object, ...]) -> str:
    """The RFC 6901 pointer of ``parts`` (object keys and array indexes), each cut to 64 characters: where a wrong
    value of an answer is, for a message."""
    return "/" + "/".join(clean(str(p), 64).replace("~", "~0").replace("/", "~1") for p in parts)


# -- access to a monitoring API: its settings' fields and the client options they give --------------------------
def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return url.rstrip("/")


BaseUrl = Annotated[str, AfterValidator(_http_url), Field(max_length=2000)]  # a subclass's ``url`` keeps this type


class ApiAccess(BaseModel):
    """The access settings of a monitoring API, mixed into each system's ``BaseSettings`` class (which sets its
    ``env_prefix`` and says in its ``url`` description what setting it enables): a base URL, a bearer token or a
    username and password (not both; ``ValueError`` naming the variables), a per-request timeout (seconds), an
    extra CA bundle (TLS is always verified) and a cap on an answer's bytes."""

    url: BaseUrl = Field(description="Base URL of the API.")
    token: SecretStr | None = Field(
        default=None, description="Bearer token (sent as Authorization: Bearer); exclusive with the username."
    )
    username: str | None = Field(
        default=None, min_length=1, max_length=200, description="Username of HTTP basic authentication."
    )
    password: SecretStr | None = Field(
        default=None,
        validate_default=True,  # checked when unset too: a username without a password
        description="Password of HTTP basic authentication (with the username; not with a token).",
    )
    timeout: float = Field(default=15.0, gt=0, le=300, description="Seconds per HTTP request.")
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle trusted in addition to the system's (TLS is always verified)."
    )
    max_bytes: int = Field(
        default=32 << 20, ge=1024, le=1 << 30, description="Bytes of one answer at most; a larger one is an error."
    )

    @field_validator("password")
    @classmethod
    def _one_credential(cls, password: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A token or basic authentication, and a username and password together (the token and username are
        validated before the password: the fields' order)."""
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        basic = info.data.get("username") is not None or password is not None
        if info.data.get("token") is not None and basic:
            raise ValueError(f"{prefix}TOKEN and {prefix}USERNAME/{prefix}PASSWORD are exclusive: set one of them")
        if basic and (info.data.get("username") is None or password is None):
            raise ValueError(f"{prefix}USERNAME and {prefix}PASSWORD go together: set both")
        return password


def access_options(settings: ApiAccess, system: str, reason: Reason | None = None) -> dict[str, Any]:
    """``JsonApi``'s keyword arguments for ``settings`` (all but ``system`` and ``transport``): its base URL,
    timeout and byte cap, ``reason``, the bearer token or basic authentication, the system's CAs plus ``ca_file``,
    and the credentials to mask in messages; ``IntegrationError`` when ``ca_file`` is not a readable PEM bundle."""
    headers = {"Authorization": f"Bearer {settings.token.get_secret_value()}"} if settings.token else {}
    auth = None
    if settings.username is not None and settings.password is not None:
        auth = httpx.BasicAuth(settings.username, settings.password.get_secret_value())
    verify: ssl.SSLContext | bool = True
    if settings.ca_file is not None:
        verify = ssl.create_default_context()
        try:
            verify.load_verify_locations(cafile=str(settings.ca_file))
        except (OSError, ssl.SSLError) as e:
            raise IntegrationError(system, f"the CA file cannot be read ({type(e).__name__})") from None
    secrets = [x.get_secret_value() for x in (settings.token, settings.password) if x is not None]
    if settings.username is not None and settings.password is not None:  # the header's own form too
        pair = f"{settings.username}:{settings.password.get_secret_value()}".encode()
        secrets.append(base64.b64encode(pair).decode())
    return {
        "base_url": settings.url,
        "timeout": settings.timeout,
        "max_bytes": settings.max_bytes,
        "reason": reason,
        "headers": headers,
        "auth": auth,
        "verify": verify,
        "secrets": secrets,
    }
