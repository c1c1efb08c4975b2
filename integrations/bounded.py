"""A small read-only JSON client over httpx, shared by the metadata clients (``pypi``, ``endoflife``): anonymous,
short timeouts, redirects followed (at most 3), and every body streamed and refused past a byte cap, so a
registry's answer cannot exhaust the worker's memory."""

from __future__ import annotations

import json
from typing import Any, Self

import httpx

from fixloop.integrations.errors import IntegrationError, map_exceptions, status_error, transport_error


class JsonApi:
    """GETs of JSON documents from ``base_url`` for ``system`` (its name in errors), each at most ``max_bytes``.
    Use as a context manager, or call ``close()``."""

    def __init__(
        self, system: str, base_url: str, timeout: float, max_bytes: int, transport: httpx.BaseTransport | None
    ) -> None:
        self.system = system
        self.max_bytes = max_bytes
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Accept": "application/json", "User-Agent": "fixloop"},
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

    def get_json(self, path: str) -> Any:
        """The JSON body of ``GET path``. ``HttpStatusError`` (``NotFound`` for 404, retryable for 429/5xx) for an
        error status, ``TransportError`` without an answer, ``IntegrationError`` for a body over ``max_bytes``
        bytes or not JSON. Messages name the path, never the body."""
        what = f"GET {path}"
        errors = {httpx.TransportError: transport_error(self.system), httpx.InvalidURL: transport_error(self.system)}
        with map_exceptions(errors, what), self._http.stream("GET", path) as resp:
            if resp.status_code >= 400:
                raise status_error(self.system, resp.status_code, what)
            raw = bytearray()
            for chunk in resp.iter_bytes():
                raw += chunk
                if len(raw) > self.max_bytes:
                    raise IntegrationError(self.system, f"{what}: the answer is over {self.max_bytes} bytes")
        try:
            return json.loads(bytes(raw))
        except ValueError:
            raise IntegrationError(self.system, f"{what}: the answer is not JSON") from None
