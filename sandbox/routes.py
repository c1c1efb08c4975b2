"""The route skeleton every stand-in is built on: one FastAPI sub-application of per-resource ``APIRouter``s, its
state passed to each route explicitly, every error in the vendor's shape.

``stand_in(title, state, errors, routers)`` is the whole pattern written once:

* **the state**: ``state`` (the stand-in's object: its store, credentials, rules) is kept on the application and
  handed to a route by ``Depends(service)``, so routers are plain module-level ``APIRouter``s, not closures;
* **auth**: per route as a dependency (GitLab's ``PRIVATE-TOKEN`` user), in the route (Datadog's keys), or before
  routing for every path, ``guard`` (Jira's basic auth, the Kubernetes bearer token): a function of the request that
  returns the vendor's refusal, or ``None`` to go on;
* **errors as the vendor shapes them**: ``errors`` maps exception types to the response for one. It must cover
  Starlette's ``HTTPException`` (unknown path, wrong method), FastAPI's ``RequestValidationError`` (a parameter of the
  wrong type) and ``Exception`` (a crash: logged with the method and path, then answered in the vendor's shape, never
  a stack trace); a stand-in adds its own error types (GitLab's ``ApiError``, Jira's ``JiraError``, ...);
* **JSON**: routes return plain dicts and lists (FastAPI renders them), or a ``JSONResponse`` when headers matter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

ErrorShapes = Mapping[type[Exception], Callable[[Any], Response]]
Guard = Callable[[Request], Response | None]
REQUIRED_ERRORS = (StarletteHTTPException, RequestValidationError, Exception)


def service(request: Request) -> Any:
    """The dependency giving a route its stand-in's state (the ``state`` given to ``stand_in``)."""
    return request.app.state.service


def stand_in(
    title: str,
    state: Any,
    errors: ErrorShapes,
    routers: Iterable[APIRouter],
    *,
    guard: Guard | None = None,
    before: Callable[[Request], Any] | None = None,
) -> FastAPI:
    """A stand-in's application: ``routers`` included in order, ``state`` for ``Depends(service)``, ``errors`` as
    exception handlers (see the module docstring; raises ``ValueError`` if one of ``REQUIRED_ERRORS`` is missing).
    ``guard`` runs before routing on every request (its response, if any, is the answer); then ``before`` (an async
    function of the request, e.g. Flux's periodic reconciliation), then the route."""
    missing = [e.__name__ for e in REQUIRED_ERRORS if e not in errors]
    if missing:
        raise ValueError(f"{title}: no vendor error shape for {', '.join(missing)}")
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = state
    for exc_type, shape in errors.items():
        app.add_exception_handler(exc_type, _handler(title, exc_type, shape))
    if guard is not None or before is not None:

        @app.middleware("http")
        async def check(request: Request, call_next: Callable[[Request], Any]) -> Response:
            refusal = guard(request) if guard is not None else None
            if refusal is not None:
                return refusal
            if before is not None:
                await before(request)
            return await call_next(request)

    for router in routers:
        app.include_router(router)
    return app


def _handler(title: str, exc_type: type[Exception], shape: Callable[[Any], Response]) -> Callable[..., Any]:
    if exc_type is Exception:

        async def crash(request: Request, exc: Exception) -> Response:
            log.error("sandbox %s: %s %s failed", title, request.method, request.url.path, exc_info=exc)
            return shape(exc)

        return crash

    async def handle(_request: Request, exc: Exception) -> Response:
        return shape(exc)

    return handle
