"""The errors every API client in ``integrations`` raises, shaped after httpx's ``_exceptions.py``: transport
failures apart from HTTP status errors, and each one says whether a retry can help.

The activity layer turns ``retryable=False`` into ``ApplicationError(non_retryable=True, type=type(e).__name__)``;
Temporal's retry policy is the only retry layer (clients never retry by themselves). Messages are short and safe to
log or record on a work item: never a token, a header or a whole response body.
"""

from __future__ import annotations


class IntegrationError(Exception):
    """Any failure talking to an external system. ``system`` names it (``jira``, ``gitlab``, ...)."""

    retryable: bool = False

    def __init__(self, system: str, message: str) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.message = message


class TransportError(IntegrationError):
    """No HTTP answer: connection refused or reset, DNS, TLS, timeout. Retryable."""

    retryable = True


class HttpStatusError(IntegrationError):
    """An HTTP error answer. Retryable for 408, 429 and 5xx; the subclasses below are the non-retryable 4xx."""

    def __init__(self, system: str, status: int, message: str) -> None:
        super().__init__(system, f"HTTP {status}: {message}")
        self.status = status
        self.retryable = status in (408, 429) or status >= 500


class AuthError(HttpStatusError):
    """401/403: the credentials are wrong or lack a permission. Not retryable."""


class NotFound(HttpStatusError):
    """404: the object (or the API path) does not exist. Not retryable."""


class Conflict(HttpStatusError):
    """409: the object already exists or changed meanwhile. Not retryable as such; callers re-read."""


class Invalid(HttpStatusError):
    """400/422: the request was refused as invalid. Not retryable."""


def status_error(system: str, status: int, message: str) -> HttpStatusError:
    """The ``HttpStatusError`` subclass for ``status``."""
    cls: type[HttpStatusError] = {401: AuthError, 403: AuthError, 404: NotFound, 409: Conflict}.get(
        status, Invalid if status in (400, 422) else HttpStatusError
    )
    return cls(system, status, message)
