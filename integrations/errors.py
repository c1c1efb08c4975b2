"""The errors every API client in ``integrations`` raises, shaped after httpx's ``_exceptions.py``: transport
failures apart from HTTP status errors, and each one says whether a retry can help; and the one translator of a
library's exceptions into them (``map_exceptions``, the shape of httpx's ``_transports/default.py``
``map_httpcore_exceptions``: a mapping from the library's exception types to ours, the most specific one wins).

The activity layer turns ``retryable=False`` into ``ApplicationError(non_retryable=True, type=type(e).__name__)``;
Temporal's retry policy is the only retry layer (clients never retry by themselves). Messages are short and safe to
log or record on a work item: never a token, a header or a whole response body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any


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


Translate = Callable[[Any, str], Exception]  # (the library's exception, what was being done) -> ours
ExceptionMap = Mapping[type[BaseException], Translate]


@contextmanager
def map_exceptions(mapping: ExceptionMap, what: str = "") -> Iterator[None]:
    """Translate what the block raises: an exception that is an instance of a key of ``mapping`` is replaced by
    ``mapping[key](exc, what)``, where ``key`` is the most specific such class (the first one in the exception's
    MRO, so ``requests``' ``JSONDecodeError`` is not taken for the ``RequestException`` it also is); anything else,
    our own errors included, passes unchanged. The library's exception is not chained (``from None``): it may hold
    the request, headers and credentials included."""
    try:
        yield
    except Exception as exc:
        for cls in type(exc).__mro__:
            translate = mapping.get(cls)
            if translate is not None:
                raise translate(exc, what) from None
        raise


def transport_error(system: str) -> Translate:
    """``TransportError(system, "<what>: <exception class>")``: no HTTP answer (the exception's text may name hosts
    or hold the request, so only its class is kept)."""
    return lambda e, what: TransportError(system, f"{what}: {type(e).__name__}")


def answer_error(system: str, reason: str) -> Translate:
    """``IntegrationError(system, "<what>: <reason>")``: an answer that is not what the API gives (not JSON, ...)."""
    return lambda e, what: IntegrationError(system, f"{what}: {reason}")


def by_status(system: str, status: Callable[[Any], int | None], reason: Callable[[Any], str]) -> Translate:
    """The status-code mapper of a library error that carries the HTTP status: ``status_error(system, status(e),
    "<what>: <reason(e)>")``, or an ``IntegrationError`` when the library gives no status (it failed before or
    after the HTTP exchange)."""

    def translate(e: Any, what: str) -> Exception:
        code = status(e)
        if code is None:
            return IntegrationError(system, f"{what}: {reason(e)}")
        return status_error(system, code, f"{what}: {reason(e)}")

    return translate
