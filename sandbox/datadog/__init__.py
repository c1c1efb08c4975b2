"""The Datadog stand-in (``/datadog``): metric queries over the world model, monitors, events.

Endpoints, as ``datadog-api-client`` calls them with ``Configuration(host=f"{base}/datadog")``:

* ``GET /api/v1/validate`` (API key only) -> ``{"valid": true}``
* ``GET /api/v1/query?from=&to=&query=`` -> ``MetricsQueryResponse``. Query syntax (comma-separated queries allowed):
  ``[avg|sum|min|max:]<metric>{<scope>}[.as_rate()|.as_count()][ by {tag,...}][.rollup(<agg>[, <seconds>])]``;
  scope is ``*`` or ``tag:value,...`` (APM tags: ``service``, ``env`` = the environment: ``production``,
  ``staging`` once Flux applied ``apps-staging``; ``fixloop.sandbox.world``, "Environments"). A query with
  ``env:<environment>`` reads that environment's world; one without an ``env`` term aggregates every environment's
  series as Datadog's space aggregation does (``sum:`` adds them, ``avg:`` averages them; ``by {env}`` splits them).
  Metrics (APM trace metrics):

  ==============================================  ===========  ========================================================
  metric                                          world        value
  ==============================================  ===========  ========================================================
  ``trace.http.request.hits``                     hits         count per interval; ``.as_rate()`` -> per second
  ``trace.http.request.errors``                   errors       count per interval; ``.as_rate()`` -> per second
  ``trace.http.request.duration.by.service.95p``  latency_p95  gauge, seconds
  ==============================================  ===========  ========================================================

  Kubernetes metrics of Datadog's kubelet check, per container (``fixloop.sandbox.world``, "Pods", for their values
  and tags: ``kube_deployment``, ``kube_container_name``, ``pod_name``, ``kube_namespace``, ``reason``, ...; scope
  values may hold ``*`` wildcards; ``.rollup(max|min|sum|avg[, s])`` sets the time aggregation):
  ``kubernetes.memory.usage|limits|requests`` (bytes), ``kubernetes.cpu.usage.total`` (nanocores),
  ``kubernetes.cpu.limits|requests`` (cores), ``kubernetes.cpu.cfs.periods|throttled.periods``,
  ``kubernetes.containers.restarts``,
  ``kubernetes.containers.state.terminated|waiting``, ``kubernetes.containers.last_state.terminated``. The observed
  peak of a container: ``max:kubernetes.memory.usage{kube_deployment:<d>,kube_container_name:<c>}.rollup(max, 60)``.

  The rollup interval is the smallest of 20 s, 1 m, 5 m, 10 m, 30 m, 1 h, 2 h, 4 h, 1 d giving at most 300 points
  (a day -> 5 m, 288 points, as real Datadog); points are bucket starts from ``ceil(from)`` to ``floor(to)``. An
  unknown metric or a scope matching no service -> ``"series": []``; a syntax error -> 400.
* ``GET /api/v1/monitor`` (``name``, ``tags`` = query scope tags, ``monitor_tags``, ``id_offset``, ``page``,
  ``page_size``), ``GET /api/v1/monitor/{id}``, ``GET /api/v1/monitor/search`` (``query`` with ``status:``,
  ``type:``, ``tag:``, ``service:``, ``id:`` terms and free text on the name; ``page``, ``per_page``): the seeded
  monitors of ``fixloop.sandbox.world``, state evaluated at ``sb.clock()``.
* ``POST /api/v1/events`` (API key only) -> 202 ``{"status": "ok", "event": {...}}``; ``GET /api/v2/events``
  (``filter[from|to|query]``, ``sort``, ``page[limit|cursor]``).

* ``GET /api/v1/service_dependencies?env=`` (``primary_tag``, ``start``, ``end``): the seeded services and the calls
  the head's manifests of ``apps/<env>`` configure (``fixloop.sandbox.datadog.apm``); an env without such a folder
  -> ``{}``.

Auth: ``DD-API-KEY`` (and ``DD-APPLICATION-KEY`` where the real API needs it) must equal the sandbox credentials,
else 403 ``{"errors": ["Forbidden"]}`` as real Datadog answers. Every error is ``{"errors": ["..."]}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from fixloop.sandbox.datadog import apm, events, metrics, monitors
from fixloop.sandbox.datadog.service import Datadog
from fixloop.sandbox.datadog.wire import DatadogError, error
from fixloop.sandbox.routes import stand_in

ROUTERS = (metrics, monitors, events, apm)


def _invalid(exc: RequestValidationError) -> Any:
    return error(400, *[f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()])


ERRORS = {
    DatadogError: lambda exc: error(exc.status, exc.message),
    HTTPException: lambda exc: error(exc.status_code, str(exc.detail)),
    RequestValidationError: _invalid,
    Exception: lambda exc: error(500, "Internal Server Error"),
}


def build(sb: Any) -> FastAPI:
    """The Datadog stand-in (see the module docstring); mounted at ``/datadog`` by ``fixloop.sandbox.app``."""
    return stand_in("Datadog (sandbox)", Datadog(sb), ERRORS, [m.router for m in ROUTERS])
