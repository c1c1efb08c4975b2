"""The world's services as a Prometheus scrape target (``/world``): one ``/metrics`` endpoint per environment and
service, in the Prometheus text exposition format (prometheus.io/docs/instrumenting/exposition_formats/, written by
``prometheus-client``), which a real Prometheus scrapes.

``GET /world/<env>/<service>/metrics`` (``text/plain; version=0.0.4``), as a pod of ``service`` in ``env`` would
serve it, without ``service``/``env`` labels (the scrape configuration's target labels add them, as Kubernetes
service discovery's relabelling does; ``scrape_targets``):

* ``http_requests_total{code="200"|"500"}``: a counter of the requests served since the endpoint's first scrape
  (a fresh process starts at 0): each whole second the world's request rate (``hits``, the world's noise at 1-second
  buckets included) is added, its errors (``errors``) under ``code="500"``, the rest under ``code="200"``;
* ``http_request_duration_seconds``: a histogram of the same requests: each second's spread over the ``le`` buckets
  (``BUCKETS``: geometric by x1.15 from 5 ms to 30 s, then ``+Inf``) by a log-normal latency distribution
  (``SIGMA`` 0.5) whose 95th percentile is that second's world ``latency_p95``; ``_sum`` by the distribution's
  mean. ``histogram_quantile(0.95, ...)`` of its rate recovers the world's p95 within the bucket width's
  interpolation (a few %).

Counts are floats (a second's share of requests), as counters may be. Seconds are integrated up to the last whole
one before ``sb.clock()``. An environment the world does not know yet (no deploy recorded there) serves no samples;
an unknown service is 404.

``alert_rules(window_s)`` is a Prometheus rule file of the world's alerts (``HighErrorRatio`` per service, the
Datadog monitors' error-rate thresholds as ratios of the service's mean request rate) and ``scrape_targets(base)``
the ``static_configs`` of every endpoint.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.responses import Response

from fixloop.sandbox.containers import PRIMARY_ENV
from fixloop.sandbox.routes import service, stand_in
from fixloop.sandbox.world import MONITORS, SERVICES

ENVIRONMENTS = (PRIMARY_ENV, "staging")
SIGMA = 0.5  # of ln(latency): the log-normal spread of one second's requests
_Z95 = 1.6448536269514722
BUCKETS: tuple[float, ...] = tuple(round(0.005 * 1.15**i, 6) for i in range(63) if 0.005 * 1.15**i <= 30.0)
ALERT = "HighErrorRatio"
_WORLD_METRICS = ("hits", "errors", "latency_p95")

router = APIRouter()


@dataclass
class _Totals:
    """What one endpoint has counted: up to (not including) the whole second ``upto``."""

    upto: int
    ok: float = 0.0
    errors: float = 0.0
    total_seconds: float = 0.0  # _sum of the histogram
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))


def _cdf(x: float, mu: float) -> float:
    return 0.5 * (1 + math.erf((math.log(x) - mu) / (SIGMA * math.sqrt(2))))


class Exporter:
    """The running totals of every (env, service) endpoint, integrated from the world model on each scrape."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.lock = threading.Lock()
        self.totals: dict[tuple[str, str], _Totals] = {}

    def advance(self, env: str, svc: str) -> _Totals | None:
        """The totals of ``svc`` in ``env`` up to the last whole second before ``sb.clock()``; None while the
        world has no such environment."""
        world = self.sb.world
        if env not in world.environments():
            return None
        now = math.floor(self.sb.clock().timestamp())
        with self.lock:
            t = self.totals.setdefault((env, svc), _Totals(upto=now))
            if now > t.upto:
                series = {m: dict(world.series(svc, m, t.upto, now - 1, 1, env)) for m in _WORLD_METRICS}
                for ms, hits in series["hits"].items():
                    errors = min(hits or 0.0, series["errors"].get(ms) or 0.0)
                    p95 = (series["latency_p95"].get(ms) or 0.0) / 1000.0
                    if not hits or p95 <= 0:
                        continue
                    t.ok += hits - errors
                    t.errors += errors
                    mu = math.log(p95) - _Z95 * SIGMA
                    t.total_seconds += hits * math.exp(mu + SIGMA**2 / 2)
                    for i, le in enumerate(BUCKETS):
                        t.buckets[i] += hits * _cdf(le, mu)
                t.upto = now
            return _Totals(t.upto, t.ok, t.errors, t.total_seconds, list(t.buckets))


class _Endpoint(Collector):
    def __init__(self, totals: _Totals | None) -> None:
        self.t = totals

    def collect(self) -> Iterator[Any]:
        if self.t is None:
            return
        requests = CounterMetricFamily("http_requests", "HTTP requests served.", labels=["code"])
        requests.add_metric(["200"], self.t.ok)
        requests.add_metric(["500"], self.t.errors)
        yield requests
        count = self.t.ok + self.t.errors
        buckets = [(repr(le), n) for le, n in zip(BUCKETS, self.t.buckets, strict=True)] + [("+Inf", count)]
        hist = HistogramMetricFamily("http_request_duration_seconds", "HTTP request latency.", labels=[])
        hist.add_metric([], buckets, self.t.total_seconds)
        yield hist


STATE = Depends(service)  # the stand-in's Exporter (fixloop.sandbox.routes)


@router.get("/{env}/{svc}/metrics")
def metrics(env: str, svc: str, exporter: Exporter = STATE) -> Response:
    """The exposition of ``svc`` in ``env`` (module docstring)."""
    if svc not in SERVICES:
        raise HTTPException(404, f"no service {svc[:60]!r} in the sandbox world")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Endpoint(exporter.advance(env, svc)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


ERRORS = {
    HTTPException: lambda exc: _text(exc.status_code, str(exc.detail)),
    RequestValidationError: lambda exc: _text(400, "invalid request"),
    Exception: lambda exc: _text(500, "Internal Server Error"),
}


def build(sb: Any) -> FastAPI:
    """The scrape endpoints; mounted at ``/world`` by ``fixloop.sandbox.app``."""
    return stand_in("world metrics (sandbox)", Exporter(sb), ERRORS, [router])


def scrape_targets(base_url: str, envs: tuple[str, ...] = ENVIRONMENTS) -> list[dict[str, Any]]:
    """Prometheus ``static_configs`` entries, one per (env, service) endpoint of the sandbox at ``base_url``: target
    labels ``service``, ``env``, ``namespace`` (``shop-<env>``) and ``__metrics_path__`` (the endpoint's path)."""
    host = base_url.split("://", 1)[-1].rstrip("/")
    return [
        {
            "targets": [host],
            "labels": {
                "service": svc,
                "env": env,
                "namespace": f"shop-{env}",
                "__metrics_path__": f"/world/{env}/{svc}/metrics",
            },
        }
        for env in envs
        for svc in SERVICES
    ]


def error_ratio_threshold(svc: str) -> float:
    """``HighErrorRatio``'s threshold for ``svc``: its Datadog error-rate monitor's critical errors/s over its mean
    request rate."""
    critical = next(m.critical for m in MONITORS if m.service == svc and m.kind == "errors")
    return critical / SERVICES[svc].hits


def alert_rules(window_s: float, env: str = PRIMARY_ENV) -> str:
    """A Prometheus rule file (JSON, which is YAML) with one ``HighErrorRatio`` alert per world service in ``env``:
    its share of ``code=~"5.."`` requests over ``window_s`` seconds above ``error_ratio_threshold`` (catalog's seeded
    alpine 3.9.4 breakage fires it; a fixed catalog resolves it), labels ``severity: critical`` (and ``service``,
    ``env`` from the expression)."""
    w = f"{max(1, round(window_s))}s"
    rules = []
    for svc in SERVICES:
        scope = f'service="{svc}",env="{env}"'
        expr = (
            f'sum by (service, env) (rate(http_requests_total{{{scope},code=~"5.."}}[{w}])) '
            f"/ sum by (service, env) (rate(http_requests_total{{{scope}}}[{w}])) > {error_ratio_threshold(svc):.6g}"
        )
        rules.append(
            {
                "alert": ALERT,
                "expr": expr,
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": f"{svc} 5xx ratio above {100 * error_ratio_threshold(svc):.2g} %",
                    "description": f"{svc} in {env}: {{{{ $value | humanizePercentage }}}} of requests failed "
                    f"over {w}",
                },
            }
        )
    return json.dumps({"groups": [{"name": "sandbox-world", "rules": rules}]}, indent=2)
