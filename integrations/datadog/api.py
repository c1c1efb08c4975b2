"""Datadog REST API: metric queries, monitors, events and APM service dependencies, on the official
``datadog-api-client`` (v1 endpoints).

Vendor docs: docs.datadoghq.com/api/latest/metrics/#query-timeseries-points (``GET /api/v1/query``: ``from``/``to``
epoch seconds, ``series[].pointlist`` of ``[epoch ms, value|null]``; timestamps are floats in older responses, ints
in newer ones), .../monitors/#get-a-monitors-details (``GET /api/v1/monitor/{id}``), .../events/#post-an-event
(``POST /api/v1/events``), .../authentication/#validate-api-key (``GET /api/v1/validate``),
.../service-dependencies/#get-all-apm-service-dependencies (``GET /api/v1/service_dependencies``, public beta: the
library has no API class for it, so ``service_dependencies`` declares the endpoint with the library's own
``Endpoint``, on the same client, keys, timeout and errors as the others).

Every call has a timeout (``DatadogSettings.timeout``, seconds, per request); the library's own retries stay off
(urllib3 retries disabled too), so Temporal's retry policy is the only one. Errors: ``AuthError`` (403 for a wrong
API or application key), ``Invalid`` (400, e.g. a query Datadog can't parse), ``NotFound`` (404), ``HttpStatusError``
(429/5xx, retryable), ``TransportError`` (no answer), ``IntegrationError`` (an answer the library could not parse).
Messages carry Datadog's ``errors`` text, never a key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import urllib3
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.api_client import Endpoint
from datadog_api_client.exceptions import ApiException, OpenApiException
from datadog_api_client.v1.api.authentication_api import AuthenticationApi
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.api.metrics_api import MetricsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.integrations.checks import CheckResult, Status, bounded, failed, hint
from fixloop.integrations.errors import (
    AuthError,
    ExceptionMap,
    IntegrationError,
    TransportError,
    map_exceptions,
    status_error,
    transport_error,
)

SYSTEM = "datadog"
T = TypeVar("T")
# The library logs response bodies at DEBUG (datadog_api_client.rest); keep them out of fixloop's logs.
logging.getLogger("datadog_api_client").setLevel(logging.WARNING)


class DatadogSettings(BaseSettings):
    """``FIXLOOP_DATADOG_SITE`` (``datadoghq.com``, ``datadoghq.eu``, ``us5.datadoghq.com``...) or
    ``FIXLOOP_DATADOG_HOST`` (a full base URL, e.g. the sandbox's ``http://127.0.0.1:8900/datadog``; wins over the
    site), ``FIXLOOP_DATADOG_API_KEY``, ``FIXLOOP_DATADOG_APP_KEY``, ``FIXLOOP_DATADOG_TIMEOUT`` (seconds),
    ``FIXLOOP_DATADOG_SERVICE_DEPENDENCIES_ENV`` (the APM ``env`` whose service map adds ``calls`` edges to the
    triage topology; unset: not read)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_DATADOG_", env_file=".env", extra="ignore")

    site: str = Field(default="datadoghq.com", description="Datadog site: datadoghq.com, datadoghq.eu, us5...")
    host: str | None = Field(default=None, description="Full API base URL; wins over the site (e.g. the sandbox).")
    api_key: SecretStr = Field(description="Datadog API key; setting it enables verification.")
    app_key: SecretStr = Field(description="Datadog application key (reads metrics and monitors).")
    timeout: float = Field(default=15.0, gt=0, le=300, description="Seconds per HTTP request.")
    service_dependencies_env: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="APM environment (the env tag) whose service dependencies (GET /api/v1/service_dependencies) "
        "add calls edges to the topology triage correlates alerts on; unset: APM is not read.",
    )

    @property
    def base_url(self) -> str:
        return (self.host or f"https://api.{self.site}").rstrip("/")


@dataclass(frozen=True)
class Series:
    """One series of a metric query. ``points``: ``(epoch seconds, value or None)``; ``interval``: seconds per
    point; ``scope``: the tags the series is for (``service:payments,env:prod`` or ``*``)."""

    metric: str
    scope: str
    expression: str
    interval: int
    points: list[tuple[float, float | None]]
    tag_set: list[str] = field(default_factory=list)
    unit: str | None = None

    def values(self) -> list[float]:
        return [v for _, v in self.points if v is not None]


@dataclass(frozen=True)
class Monitor:
    """A monitor: ``overall_state`` is ``OK``, ``Alert``, ``Warn``, ``No Data``, ``Ignored``, ``Skipped`` or
    ``Unknown``."""

    id: int
    name: str
    query: str
    overall_state: str
    tags: list[str]
    type: str


@dataclass(frozen=True)
class Event:
    id: int
    url: str | None


def _epoch(t: datetime | float) -> int:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("naive datetime: use an aware UTC datetime")
        return int(t.timestamp())
    return int(t)


def _reason(e: ApiException) -> str:
    body = e.body
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        return "; ".join(str(x) for x in body["errors"])[:300]
    return str(e.reason or "error")[:300]


def _api_error(e: ApiException, what: str) -> IntegrationError:
    if not e.status:  # the library's wrapper of a TLS error
        return TransportError(SYSTEM, f"{what}: {str(e.reason).splitlines()[0][:200]}")
    return status_error(SYSTEM, e.status, f"{what}: {_reason(e)}")


# The client library's and urllib3's exceptions as ``fixloop.integrations.errors`` (``map_exceptions``).
_ERRORS: ExceptionMap = {
    ApiException: _api_error,
    urllib3.exceptions.HTTPError: transport_error(SYSTEM),
    OSError: transport_error(SYSTEM),
    OpenApiException: lambda e, what: IntegrationError(SYSTEM, f"{what}: unexpected response ({type(e).__name__})"),
}


class DatadogClient:
    """A thin typed client. Use as a context manager, or call ``close()``."""

    def __init__(self, settings: DatadogSettings) -> None:
        self.settings = settings
        cfg = Configuration(
            host=settings.base_url,
            api_key={
                "apiKeyAuth": settings.api_key.get_secret_value(),
                "appKeyAuth": settings.app_key.get_secret_value(),
            },
            request_timeout=settings.timeout,
            enable_retry=False,
        )
        cfg.retry_policy = False  # urllib3: no retries of connection errors either (its default is 3)
        self._client = ApiClient(cfg)
        self._metrics = MetricsApi(self._client)
        self._monitors = MonitorsApi(self._client)
        self._events = EventsApi(self._client)
        self._auth = AuthenticationApi(self._client)
        self._service_dependencies = _service_dependencies_endpoint(self._client)

    def __enter__(self) -> DatadogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with map_exceptions(_ERRORS, what):
            return fn()

    def check(self) -> None:
        """Validate the API key (``GET /api/v1/validate``); raises ``AuthError`` when Datadog refuses it."""
        self._call("validate", self._auth.validate)

    def query_metrics(self, query: str, start: datetime | float, end: datetime | float) -> list[Series]:
        """Points of ``query`` (Datadog metric query syntax, e.g. ``sum:trace.http.request.errors{service:x}
        .as_rate()``) between ``start`` and ``end`` (aware datetimes or epoch seconds). ``[]`` when nothing
        matches; ``Invalid`` when Datadog can't parse the query."""
        resp = self._call(
            "query metrics",
            lambda: self._metrics.query_metrics(_from=_epoch(start), to=_epoch(end), query=query),
        )
        return parse_series(resp.to_dict())

    def service_dependencies(
        self, env: str, start: datetime | float | None = None, end: datetime | float | None = None
    ) -> dict[str, Any]:
        """APM's service map for ``env`` (``GET /api/v1/service_dependencies?env=&start=&end=``, epoch seconds;
        Datadog's defaults: ``end`` now, ``start`` an hour before ``end``): the JSON object as Datadog answers it,
        ``{service: {"calls": [callee, ...]}}`` (read it with ``fixloop.core.topology.from_service_dependencies``).
        An answer that is not a JSON object is an ``IntegrationError``; ``AuthError`` when the application key
        may not read APM."""
        kwargs: dict[str, Any] = {"env": env}
        if start is not None:
            kwargs["start"] = _epoch(start)
        if end is not None:
            kwargs["end"] = _epoch(end)
        return self._call(
            "service dependencies", lambda: dict(self._service_dependencies.call_with_http_info(**kwargs))
        )

    def get_monitor(self, monitor_id: int) -> Monitor:
        """The monitor ``monitor_id`` with its current ``overall_state``; ``NotFound`` if there is none."""
        m = self._call("get monitor", lambda: self._monitors.get_monitor(monitor_id)).to_dict()
        return Monitor(
            id=int(m["id"]),
            name=m.get("name") or "",
            query=m.get("query") or "",
            overall_state=str(m.get("overall_state") or "Unknown"),
            tags=list(m.get("tags") or []),
            type=str(m.get("type") or ""),
        )

    def post_event(self, title: str, text: str, tags: list[str], aggregation_key: str | None = None) -> Event:
        """Post an event to the event stream (``title`` <= 100 chars, ``text`` <= 4000, Markdown when wrapped in
        ``%%%``); events with the same ``aggregation_key`` are grouped by Datadog."""
        kwargs: dict[str, Any] = {"title": title[:100], "text": text[:4000], "tags": list(tags)}
        if aggregation_key:
            kwargs["aggregation_key"] = aggregation_key[:100]
        resp = self._call("post event", lambda: self._events.create_event(body=EventCreateRequest(**kwargs)))
        event = resp.to_dict().get("event") or {}
        return Event(id=int(event.get("id_str") or event.get("id") or 0), url=event.get("url"))


def _service_dependencies_endpoint(client: ApiClient) -> Endpoint:
    """``GET /api/v1/service_dependencies`` declared as the library declares its generated endpoints (operation
    ``ListServiceDependencies`` of Datadog's v1 API: query ``env`` required, ``primary_tag``, ``start``, ``end``;
    API and application key; the answer an object)."""
    query = {"location": "query"}
    return Endpoint(
        settings={
            "response_type": (dict,),
            "auth": ["apiKeyAuth", "appKeyAuth"],
            "endpoint_path": "/api/v1/service_dependencies",
            "operation_id": "list_service_dependencies",
            "http_method": "GET",
            "version": "v1",
        },
        params_map={
            "env": {"required": True, "openapi_types": (str,), "attribute": "env", **query},
            "primary_tag": {"openapi_types": (str,), "attribute": "primary_tag", **query},
            "start": {"openapi_types": (int,), "attribute": "start", **query},
            "end": {"openapi_types": (int,), "attribute": "end", **query},
        },
        headers_map={"accept": ["application/json"]},
        api_client=client,
    )


def parse_series(doc: dict[str, Any]) -> list[Series]:
    """The series of a ``GET /api/v1/query`` answer (its JSON object: ``series[]`` with ``pointlist`` of ``[epoch
    ms, value|null]``, ``interval`` seconds, ``unit``), as ``query_metrics`` returns them; ``[]`` without any."""
    return [_series(s) for s in (doc.get("series") or [])]


def _series(s: dict[str, Any]) -> Series:
    units = [u for u in (s.get("unit") or []) if u]
    unit = "/".join(str(u.get("name")) for u in units) or None
    points = [(float(p[0]) / 1000.0, None if p[1] is None else float(p[1])) for p in s.get("pointlist") or []]
    return Series(
        metric=s.get("metric") or "",
        scope=s.get("scope") or "*",
        expression=s.get("expression") or "",
        interval=int(s.get("interval") or 0),
        points=points,
        tag_set=list(s.get("tag_set") or []),
        unit=unit,
    )


PROBE_QUERY = "avg:datadog.estimated_usage.hosts{*}"  # a metric every Datadog org has; empty is fine


def check(settings: DatadogSettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s datadog line: ``GET /api/v1/validate`` (API key), then a metric query over the
    last five minutes (the application key and the metrics-read permission verification needs), then, when
    ``service_dependencies_env`` is set, ``GET /api/v1/service_dependencies`` for it (the APM read triage's
    topology needs); each request bounded by ``timeout`` seconds."""
    target = settings.base_url
    with DatadogClient(bounded(settings, timeout)) as client:
        try:
            client.check()
        except IntegrationError as e:
            keys = "FIXLOOP_DATADOG_API_KEY and FIXLOOP_DATADOG_SITE/_HOST"
            return failed("datadog", target, e, hint(e, {AuthError: keys}, "FIXLOOP_DATADOG_SITE/_HOST"))
        now = time.time()
        try:
            client.query_metrics(PROBE_QUERY, now - 300, now)
        except IntegrationError as e:
            keys = "FIXLOOP_DATADOG_APP_KEY, which must read metrics"
            return failed("datadog", target, e, hint(e, {AuthError: keys}, "FIXLOOP_DATADOG_SITE/_HOST"))
        apm = ""
        if settings.service_dependencies_env:
            env = settings.service_dependencies_env
            try:
                services = client.service_dependencies(env, now - 3600, now)
            except IntegrationError as e:
                keys = "FIXLOOP_DATADOG_APP_KEY, which must read APM"
                return failed(
                    "datadog", target, e, hint(e, {AuthError: keys}, "FIXLOOP_DATADOG_SERVICE_DEPENDENCIES_ENV")
                )
            apm = f", APM env {env} maps {len(services)} services"
    return CheckResult(Status.OK, "datadog", f"{target} (API key valid, application key reads metrics{apm})")
