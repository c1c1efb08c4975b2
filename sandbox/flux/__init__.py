"""The Flux stand-in: a sandbox cluster's Kubernetes API (Flux objects only), its reconciler and its notifications.

What it models
  * ``GitRepository flux-system/flux-system`` tracks branch ``main`` of the sandbox repository ``platform/gitops``
    (its ``spec`` is read from ``clusters/sandbox/*.yaml`` when declared there; the tracked project/branch are fixed).
  * Every ``Kustomization`` (``kustomize.toolkit.fluxcd.io/v1``) declared in ``clusters/sandbox/*.yaml`` is
    "applied" at each new head: its ``spec.path`` is rendered with ``fixloop.sandbox.kustomize`` (a kustomize subset),
    the
    Deployments' containers are recorded, and the status is set as kustomize-controller v1 sets it: Ready=True
    ``ReconciliationSucceeded`` "Applied revision: main@sha1:<sha>" (+ Healthy=True when ``spec.wait``), or
    Ready=False ``BuildFailed``/``ArtifactFailed`` with Reconciling=True ``ProgressingWithRetry``,
    ``lastAttemptedRevision`` = the new revision and ``lastAppliedRevision`` unchanged. A later good revision recovers.
  * After each applied revision of every Kustomization whose rendering has Deployments, ``sb.world.record_deploy``
    gets, as environment ``<env>`` (the Kustomization ``apps-<env>``; another name is its own environment):
    ``{Deployment: {container: image, "base-image": last FROM of services/<Deployment>/Dockerfile}}``, the
    ``services/<Deployment>/`` files of the commit that *built the running image* (the sandbox registry's record of
    the tag, ``source``, pushed by the CI stand-in; for a tag without a record, the revision that first applied it
    here) and the applied revision's ``apps/base/<Deployment>/`` files (the world keeps those its rules read), each
    rendered Deployment's replicas, env and resources (``fixloop.sandbox.containers.spec_of``: what the world's pods
    run with), and ``unpulled``: the Deployments whose image changed to a ``registry.sandbox.local`` tag the
    registry lacks and this Kustomization never ran (their pods back off pulling; the world keeps what ran). So a
    merged Dockerfile change alone changes nothing that runs; the new tag in ``apps/<env>`` does, there only. A
    failing world is logged only.
  * Events as notification-controller's ``generic`` / ``generic-hmac`` providers post them (notification-controller
    ``docs/spec/v1beta3/providers.md``, "Generic webhook (with HMAC)"; ``events.md`` "Event structure"): the JSON
    event, ``Content-Type: application/json``, ``Gotk-Component: kustomize-controller`` and, for generic-hmac,
    ``X-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed with ``sb.credentials.flux_hmac_key``. They are
    delivered in order by one background thread (5 s timeout, no retry) and every delivery is recorded.

When it reconciles (no free-running thread: a mounted sub-application gets no lifespan events to stop one)
  * on a ``"git.push"`` bus event for ``platform/gitops``/``main``, synchronously in the publisher's thread;
  * on ``POST /kube/sandbox/reconcile`` (what ``flux reconcile source git flux-system`` triggers), answering the
    outcome; tests use it to reconcile deterministically;
  * lazily, at most every ``sb.config.flux_interval`` seconds of ``sb.clock()``: any request to ``/kube`` first
    checks the branch head when the interval has elapsed (so a poller sees a head that moved without a bus event);
  * once when built, so a restarted sandbox catches up.
  An already attempted revision (same ``generation``) is never re-applied, also after a restart: state, the
  applied-revision history per Kustomization and the deliveries live in ``sb.store("flux")``.

Kubernetes API (``Authorization: Bearer <sb.credentials.kube_token>``): ``GET /kube/api``, ``/kube/apis``,
``/kube/apis/kustomize.toolkit.fluxcd.io/v1[/namespaces/{ns}]/kustomizations[/{name}]`` and
``/kube/apis/source.toolkit.fluxcd.io/v1[/namespaces/{ns}]/gitrepositories[/{name}]``,
``/kube/apis/helm.toolkit.fluxcd.io/v2[/namespaces/{ns}]/helmreleases[/{name}]`` (``helmreleases``: the HelmReleases
declared in ``clusters/sandbox``, their status derived from the chart folder at each reconciliation), and the world's
workloads of every environment (``workloads``: ``shop-staging``, ``shop-production``):
``/kube/apis/apps/v1[/namespaces/{ns}]/deployments[/{name}]`` and ``/kube/api/v1/namespaces/{ns}/pods[/{name}]``.
Errors are ``Status`` objects (401 Unauthorized, 404 NotFound "<resource>.<group> "<name>" not found", 405, 400, 500).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fixloop.sandbox.flux import control, discovery, gitrepositories, helmreleases, kustomizations, workloads
from fixloop.sandbox.flux.reconciler import Flux, KubeError
from fixloop.sandbox.routes import stand_in

log = logging.getLogger(__name__)

# the catch-all for other groups and resources goes last: it answers what the API server answers for them
ROUTERS = (
    discovery.router,
    kustomizations.router,
    gitrepositories.router,
    helmreleases.router,
    workloads.router,
    control.router,
    discovery.fallback,
)


def kube_error(exc: KubeError) -> JSONResponse:
    """A Kubernetes ``Status`` object with the error's code."""
    return JSONResponse(exc.body, status_code=exc.code)


def _http(exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 405:
        return kube_error(
            KubeError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})
        )
    if exc.status_code == 404:
        return kube_error(KubeError(404, "NotFound", "the server could not find the requested resource", {}))
    return kube_error(KubeError(exc.status_code, "BadRequest", str(exc.detail)))


ERRORS = {
    KubeError: kube_error,
    StarletteHTTPException: _http,
    RequestValidationError: lambda exc: kube_error(KubeError(400, "BadRequest", "invalid request")),
    Exception: lambda exc: kube_error(
        KubeError(500, "InternalError", "Internal error occurred: the sandbox failed", {})
    ),
}


def build_app(sb: Any, flux: Flux) -> FastAPI:
    """The Kubernetes API of ``flux``: every request needs ``Authorization: Bearer <kube_token>`` (else a 401
    ``Status``) and first lets the reconciler check the branch head when ``flux_interval`` has elapsed."""
    token = sb.credentials.kube_token.get_secret_value()

    def bearer(request: Request) -> JSONResponse | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return kube_error(KubeError(401, "Unauthorized", "Unauthorized"))
        return None

    async def poll(_request: Request) -> None:
        try:
            await anyio.to_thread.run_sync(flux.maybe_reconcile)
        except Exception:
            log.exception("flux: periodic reconciliation failed")

    return stand_in("sandbox Kubernetes API (Flux)", flux, ERRORS, ROUTERS, guard=bearer, before=poll)


def build(sb: Any) -> FastAPI:
    """The stand-in: reconciles once now, subscribes to ``"git.push"``, serves the Kubernetes API."""
    flux = Flux(sb)
    sb.bus.subscribe("git.push", flux.on_push)
    try:
        flux.reconcile()
    except Exception:
        log.exception("flux: the initial reconciliation failed")
    return build_app(sb, flux)
