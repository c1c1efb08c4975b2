"""The gateway's ASGI app (``create_app``): the routes, their OpenAPI description and exception handlers, and the
signal and report endpoints (``Gateway.signals``); the endpoints, answers and bounds are described in
``fixloop.app.gateway``'s docstring."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from temporalio.client import Client

from fixloop import __version__
from fixloop.app.gateway.auth import GITLAB_TOKEN_HEADER, SIGNATURE_HEADER, TOKEN_HEADER, SharedToken
from fixloop.app.gateway.batching import Batcher
from fixloop.app.gateway.hooks import FluxHook, GitLabHook
from fixloop.app.gateway.metrics import Metrics
from fixloop.app.gateway.requests import (
    Rejected,
    Unavailable,
    check_content_type,
    json_answer,
    json_path,
    parse_signals,
    read_body,
)
from fixloop.app.gateway.settings import GatewaySettings
from fixloop.app.temporal import submit_signals
from fixloop.core.config import IntakeSettings, LoopSettings, TemporalSettings, load
from fixloop.core.models import Signal, Source
from fixloop.core.parsing import clean
from fixloop.integrations.flux import FluxSettings
from fixloop.integrations.gitlab.webhook import WebhookSettings
from fixloop.workflows.contracts.intake import intake_id

log = logging.getLogger(__name__)

REPORT_SOURCES = (
    Source.TRIVY, Source.GITLAB, Source.GRYPE, Source.SNYK, Source.OSV, Source.PIP_AUDIT, Source.FIXLOOP,
)  # fmt: skip
THREAD_PARSE_BYTES = 256 << 10  # larger bodies are parsed in a thread, so the event loop keeps answering
WARNINGS_SHOWN = 10
DELIVERED_REMEMBERED = 100_000  # fingerprints this process delivered, for the duplicates metric

Connect = Callable[[], Awaitable[Client]]


class Gateway:
    """What the routes share: settings, the lazily connected Temporal client, the batcher, the hooks, the metrics."""

    def __init__(
        self,
        settings: GatewaySettings,
        connect: Connect,
        *,
        task_queue: str,
        intake: IntakeSettings,
        flux: FluxSettings,
        gitlab_webhook: WebhookSettings,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self.task_queue = task_queue
        self.intake = intake
        self.loop = load(LoopSettings)  # the timings of the loops an intake this starts will start
        self.flux = flux
        self.gitlab_webhook = gitlab_webhook
        self.metrics = Metrics()
        self.client: Client | None = None
        self._connecting: asyncio.Task[Client] | None = None
        self._parse_lock = asyncio.Lock()  # one large body parsed at a time: the parse memory bound is per process
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self.token = SharedToken(settings.token)
        self.batcher = Batcher(settings, self.metrics, self._send)
        self.gitlab_hook = GitLabHook(settings, gitlab_webhook, self.temporal)
        self.flux_hook = FluxHook(settings, flux, self.temporal)

    async def serve(self, endpoint: str, request: Request, work: Callable[[], Awaitable[tuple[int, dict]]]) -> Response:
        """Run one endpoint's ``work``: the answer, the metrics and a log line for a rejection."""
        m = self.metrics
        received, accepted, ignored, latency = m.of(endpoint)
        received.inc()
        started = time.perf_counter()
        try:
            status, body = await work()
        except Rejected as e:
            m.rejected.labels(endpoint, e.reason).inc()
            log.info("%s %s: %d %s (%s)", request.method, endpoint, e.status, e.reason, e.field or "-")
            return json_answer(e.status, {"error": e.error, "field": e.field}, e.headers)
        except ClientDisconnect:  # the sender went away mid-body (or the server's body deadline closed it)
            m.rejected.labels(endpoint, "client_disconnect").inc()
            log.warning("%s %s: client gone before its body was read; nothing recorded", request.method, endpoint)
            return json_answer(400, {"error": "client disconnected", "field": "body"})
        except Exception:
            m.rejected.labels(endpoint, "internal_error").inc()
            log.exception("%s %s: internal error", request.method, endpoint)
            return json_answer(500, {"error": "internal error (a bug in fixloop; nothing was recorded)", "field": None})
        finally:
            latency.observe(time.perf_counter() - started)
        (ignored if "ignored" in body else accepted).inc()
        return json_answer(status, body)

    async def temporal(self) -> Client:
        """The Temporal client, connected on first use; ``Unavailable`` while it cannot be (retried per request).
        Concurrent requests share one connection attempt and each waits for it at most
        FIXLOOP_GATEWAY_CONNECT_TIMEOUT seconds, so while Temporal is down every request gets its 503 within that
        time (not one attempt after another's)."""
        if self.client is not None:
            return self.client
        attempt = self._connecting
        if attempt is None:
            attempt = self._connecting = asyncio.create_task(self._connect_once(), name="gateway-temporal-connect")
        try:
            return await asyncio.wait_for(asyncio.shield(attempt), self.settings.connect_timeout)
        except Exception as e:  # connect raises RuntimeError, TimeoutError, or the CLI's own errors
            log.warning("cannot connect to Temporal: %s: %s", type(e).__name__, clean(e, 300))
            raise Unavailable() from None

    async def _connect_once(self) -> Client:
        """One connection attempt (bounded by FIXLOOP_GATEWAY_CONNECT_TIMEOUT); the next request after a failure
        makes a new one."""
        try:
            self.client = await asyncio.wait_for(self._connect(), self.settings.connect_timeout)
            return self.client
        finally:
            self._connecting = None

    async def signals(self, request: Request, source: Source | None) -> tuple[int, dict]:
        """A webhook payload or scanner report of ``source`` (None: detected) -> its signals, into the intake."""
        self.token.authorize(request)
        check_content_type(request)
        body = await read_body(request, self.settings.max_body_bytes)
        delivery = uuid.uuid4().hex[:16]
        if len(body) > THREAD_PARSE_BYTES:
            async with self._parse_lock:
                result = await asyncio.to_thread(parse_signals, body, f"delivery:{delivery}", source, self.settings)
            del body
        else:
            result = parse_signals(body, f"delivery:{delivery}", source, self.settings)
        answer: dict[str, Any] = {"signals": len(result.signals), "intake": None, "delivery": delivery}
        truncated = sum(1 for s in result.signals if s.truncated)
        if truncated:  # signals whose oversized fields were cut (each counts what it lost in its ``truncated``)
            answer["truncated"] = truncated
        if result.warnings:
            answer["warnings"] = [clean(w, 300) for w in result.warnings[:WARNINGS_SHOWN]]
        if not result.signals:
            return 200, answer
        answer["intake"] = await self.batcher.submit(self.settings.scope, result.signals)
        again = self._remember(result.signals)
        label = result.source.value if result.source else "unknown"
        self.metrics.signals.labels(label).inc(len(result.signals))
        if result.duplicates + again:
            self.metrics.duplicates.labels(label).inc(result.duplicates + again)
        answer["duplicates"] = result.duplicates + again
        return 202, answer

    def _remember(self, signals: Sequence[Signal]) -> int:
        """Record delivered fingerprints (bounded); how many had been delivered before."""
        seen = self._delivered
        again = 0
        for s in signals:
            if s.fingerprint in seen:
                again += 1
                seen.move_to_end(s.fingerprint)
            else:
                seen[s.fingerprint] = None
        while len(seen) > DELIVERED_REMEMBERED:
            seen.popitem(last=False)
        return again

    async def _send(self, scope: str, signals: list[Signal]) -> str:
        client = await self.temporal()
        return await submit_signals(
            client,
            scope,
            signals,
            task_queue=self.task_queue,
            intake=self.intake,
            loop=self.loop,
            max_bytes=self.settings.batch_max_bytes,
            paced=False,  # a webhook's answer does not wait for a triage (FIXLOOP_GATEWAY_MAX_BODY_BYTES bounds one)
        )


# ---------------------------------------------------------------- the app

SECURITY_SCHEMES = {
    "fixloopToken": {
        "type": "apiKey",
        "in": "header",
        "name": TOKEN_HEADER,
        "description": "FIXLOOP_GATEWAY_TOKEN (or `Authorization: Bearer <token>`).",
    },
    "gitlabToken": {
        "type": "apiKey",
        "in": "header",
        "name": GITLAB_TOKEN_HEADER,
        "description": "The GitLab webhook's secret token (FIXLOOP_GITLAB_WEBHOOK_TOKEN).",
    },
    "fluxSignature": {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": "`<sha224|sha256|sha384|sha512>=<hex HMAC of the body>` keyed with FIXLOOP_FLUX_HMAC_KEY "
        "(Flux `generic-hmac` Provider).",
    },
}

_ERROR = {
    "content": {"application/json": {"example": {"error": "field alerts.0.labels: ...", "field": "alerts[0].labels"}}}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON, or not this endpoint's format.", **_ERROR},
    401: {"description": "Missing or wrong secret.", **_ERROR},
    413: {"description": "Body over the size limit, or too many JSON values or finding-list elements.", **_ERROR},
    415: {"description": "Not application/json.", **_ERROR},
    422: {"description": "Valid JSON with invalid values.", **_ERROR},
    503: {"description": "Temporal unavailable: nothing was recorded; retry.", **_ERROR},
}


def _body(description: str, scheme: str) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` and ``security`` of an endpoint (the handlers read the raw body and headers
    themselves: no per-request validation or dependency resolution)."""
    return {
        "security": [{scheme: []}],
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
        },
    }


_SIGNALS_ANSWER = {
    "description": "Recorded in the intake.",
    "content": {"application/json": {"example": {"signals": 1, "intake": "intake/platform/gitops", "delivery": "..."}}},
}


def create_app(
    settings: GatewaySettings,
    connect: Connect,
    *,
    task_queue: str | None = None,
    intake: IntakeSettings | None = None,
    flux: FluxSettings | None = None,
    gitlab_webhook: WebhookSettings | None = None,
) -> FastAPI:
    """The gateway's ASGI app. ``connect()`` returns a Temporal client (with pydantic's data converter, e.g.
    ``fixloop.app.temporal.connect``); it is called on the first request that needs Temporal and again after each
    failure, so a Temporal that is down is a 503 per request, not a failure to start. ``task_queue`` (default
    ``TemporalSettings``'), ``intake`` (the windows of an intake this starts), ``flux`` (HMAC key and
    Kustomization) and ``gitlab_webhook`` (the webhook token) default to the environment; an invalid variable
    raises ``fixloop.core.config.ConfigError`` naming it."""
    gw = Gateway(
        settings,
        connect,
        task_queue=task_queue or load(TemporalSettings).task_queue,
        intake=intake or load(IntakeSettings),
        flux=flux or load(FluxSettings),
        gitlab_webhook=gitlab_webhook or load(WebhookSettings),
    )
    app = FastAPI(
        title="fixloop gateway",
        version=__version__,
        description="Webhooks and scanner reports in; signals and loop events into Temporal. A 2xx means "
        "Temporal has recorded the delivery; retry on 5xx (retries are deduplicated).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        return json_answer(
            422, {"error": clean(first.get("msg", "invalid request"), 300), "field": json_path(first.get("loc", ()))}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return json_answer(
            exc.status_code, {"error": clean(exc.detail, 300), "field": None}, getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("%s %s: internal error", request.method, request.url.path)
        return json_answer(500, {"error": "internal error (a bug in fixloop)", "field": None})

    @app.post(
        "/v1/signals/datadog",
        status_code=202,
        summary="A Datadog monitor notification (Webhooks integration).",
        responses={202: _SIGNALS_ANSWER, **_ERRORS},
        openapi_extra=_body(
            "The webhook's payload template: the default or extended one (integrations/datadog).", "fixloopToken"
        ),
    )
    async def datadog(request: Request) -> Response:
        return await gw.serve("signals/datadog", request, lambda: gw.signals(request, Source.DATADOG))

    @app.post(
        "/v1/signals/alertmanager",
        status_code=202,
        summary="A Prometheus Alertmanager webhook notification.",
        responses={202: _SIGNALS_ANSWER, **_ERRORS},
        openapi_extra=_body("Alertmanager's webhook payload (version 4).", "fixloopToken"),
    )
    async def alertmanager(request: Request) -> Response:
        return await gw.serve("signals/alertmanager", request, lambda: gw.signals(request, Source.ALERTMANAGER))

    @app.post(
        "/v1/reports",
        status_code=202,
        summary="A scanner report or alert payload of any supported format, detected as `fixloop ingest` does.",
        responses={202: _SIGNALS_ANSWER, **_ERRORS},
        openapi_extra=_body(
            "Trivy, GitLab security report, Grype, Snyk, OSV-Scanner or pip-audit JSON.", "fixloopToken"
        ),
    )
    async def report(request: Request) -> Response:
        return await gw.serve("reports", request, lambda: gw.signals(request, None))

    @app.post(
        "/v1/reports/{source}",
        status_code=202,
        summary="A scanner report: source is trivy, gitlab, grype, snyk, osv, pip-audit or fixloop (fixloop inspect).",
        responses={202: _SIGNALS_ANSWER, 404: {"description": "Unknown source.", **_ERROR}, **_ERRORS},
        openapi_extra=_body("The scanner's JSON output (e.g. `trivy image --format json`).", "fixloopToken"),
    )
    async def report_of(request: Request, source: str) -> Response:
        known = {s.value: s for s in REPORT_SOURCES}
        endpoint = f"reports/{source}" if source in known else "reports/unknown"

        async def work() -> tuple[int, dict]:
            if source not in known:
                raise Rejected(404, "unknown_source", f"unknown report source; one of {', '.join(known)}", "source")
            return await gw.signals(request, known[source])

        return await gw.serve(endpoint, request, work)

    @app.post(
        "/v1/hooks/gitlab",
        summary="A GitLab merge request hook: approvals and state changes of fixloop's merge requests.",
        responses={200: {"description": "Delivered to the loop, or ignored (with the reason)."}, **_ERRORS},
        openapi_extra=_body("GitLab's Merge Request Hook body (X-Gitlab-Event: Merge Request Hook).", "gitlabToken"),
    )
    async def gitlab(request: Request) -> Response:
        return await gw.serve("hooks/gitlab", request, lambda: gw.gitlab_hook(request))

    @app.post(
        "/v1/hooks/flux",
        summary="A Flux notification-controller event (generic-hmac Provider): deploy outcomes.",
        responses={200: {"description": "Signalled to the loops awaiting a deploy, or ignored."}, **_ERRORS},
        openapi_extra=_body(
            "The event: {involvedObject, severity, timestamp, message, reason, metadata, ...}.", "fluxSignature"
        ),
    )
    async def flux_hook(request: Request) -> Response:
        return await gw.serve("hooks/flux", request, lambda: gw.flux_hook(request))

    @app.get("/healthz", summary="Liveness: the gateway answers; whether it has a Temporal connection.")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "temporal": "connected" if gw.client is not None else "not connected",
            "scope": settings.scope,
            "intake": intake_id(settings.scope),
        }

    @app.get("/metrics", summary="Prometheus metrics.", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
