"""The world's services as a Prometheus scrape target (``/world``): one ``/metrics`` endpoint per environment and
service, in the Prometheus text exposition format (prometheus.io/docs/instrumenting/exposition_formats/, written by
``prometheus-client``), which a real Prometheus scrapes.

``GET /world/<env>/<service>/metrics`` (``text/plain; version=0.0.4``), as a pod of ``service`` in ``env`` would
serve it, without ``service``/``env`` labels (the scrape configuration's target labels add them, as Kubernetes
service discovery's relabelling does; ``scrape_targets``):

* ``http_requests_total{code="200"|"500"}``: a counter of the requests served since the endpoint's first scrape
  (a fresh process starts at 0; or since the start of its ``/world/history``): each second the world's request rate
  (``hits``, the world's noise at 1-second buckets included) is added, its errors (``errors``) under
  ``code="500"``, the rest under ``code="200"``, spread evenly over the second (a scrape within a second reads the
  share that has passed);
* ``http_request_duration_seconds``: a histogram of the same requests: each second's spread over the ``le`` buckets
  (``BUCKETS``: geometric by x1.15 from 5 ms to 30 s, then ``+Inf``) by a log-normal latency distribution
  (``SIGMA`` 0.5) whose 95th percentile is that second's world ``latency_p95``; ``_sum`` by the distribution's
  mean. ``histogram_quantile(0.95, ...)`` of its rate recovers the world's p95 within the bucket width's
  interpolation (a few %).

Counts are floats (a second's share of requests), as counters may be. Seconds are integrated up to ``sb.clock()``.
``GET /world/history?seconds=N&base_url=URL`` is the last ``N`` seconds of every endpoint as OpenMetrics with a
timestamp per sample, labelled as the scrapes of ``scrape_targets(URL)`` are, for ``promtool tsdb
create-blocks-from openmetrics``: a Prometheus started on them has the world's past, and the endpoints' counters go
on from them (409 once an endpoint is scraped). An environment the world does not know yet (no deploy recorded
there) serves no samples; an unknown service is 404.

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
from fastapi.responses import JSONResponse, PlainTextResponse
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
_REQUESTS = "http_requests_total"
_DURATION = "http_request_duration_seconds"
HISTORY_END = "X-History-End"  # the epoch second of a history's last samples (``since`` for the next answer)
JOB = "world"  # the scrape job of ``scrape_targets`` (fixloop.app.promstack's configuration)
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_WORLD_METRICS = ("hits", "errors", "latency_p95")
HISTORY_MAX_S = 3600  # the longest history ``Exporter.history`` writes (a demo needs a few windows)

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
        self.origins: dict[tuple[str, str], _Totals] = {}  # where each endpoint's history started (``history``)

    def advance(self, env: str, svc: str) -> _Totals | None:
        """The totals of ``svc`` in ``env`` at ``sb.clock()``: its whole seconds, and the share of the current one
        that has passed (a counter grows through the second, as a served one does, so any scrape phase reads the
        same rate); None while the world has no such environment."""
        if env not in self.sb.world.environments():
            return None
        clock = self.sb.clock().timestamp()
        now = math.floor(clock)
        with self.lock:
            t = self.totals.setdefault((env, svc), _Totals(upto=now))
            series = self._series(env, svc, t.upto, now)  # the current second too: its share is shown
            self._integrate(t, series, now)
            shown = _Totals(t.upto, t.ok, t.errors, t.total_seconds, list(t.buckets))
        if clock > now:
            self._integrate(shown, series, now + 1, share=clock - now)
        return shown

    def _series(self, env: str, svc: str, first: int, last: int) -> dict[str, dict[int, float | None]]:
        """The world's 1-second buckets ``first .. last`` of ``svc`` in ``env``: metric -> bucket start ms -> value."""
        return {m: dict(self.sb.world.series(svc, m, first, last, 1, env)) for m in _WORLD_METRICS}

    @staticmethod
    def _integrate(
        t: _Totals, series: dict[str, dict[int, float | None]], until: int, each: Any = None, share: float = 1.0
    ) -> None:
        """Add the seconds ``t.upto .. until - 1`` of ``series`` (``_series``) to ``t`` (each times ``share``);
        ``each(second, t)`` after each second."""
        if until <= t.upto:
            return
        for second in range(t.upto, until):
            ms = second * 1000
            hits = (series["hits"].get(ms) or 0.0) * share
            errors = min(hits, (series["errors"].get(ms) or 0.0) * share)
            p95 = (series["latency_p95"].get(ms) or 0.0) / 1000.0
            if hits and p95 > 0:
                t.ok += hits - errors
                t.errors += errors
                mu = math.log(p95) - _Z95 * SIGMA
                t.total_seconds += hits * math.exp(mu + SIGMA**2 / 2)
                for i, le in enumerate(BUCKETS):
                    t.buckets[i] += hits * _cdf(le, mu)
            t.upto = second + 1
            if each is not None:
                each(second + 1, t)
        t.upto = until

    def history(
        self, seconds: int, labels: dict[tuple[str, str], dict[str, str]], since: float | None = None
    ) -> list[Series]:
        """The last ``seconds`` whole seconds of every endpoint in ``labels`` (``(env, service)`` -> the labels its
        scrapes get: ``job``, ``instance`` and the target labels): one sample a second of each of its series, as a
        process started ``seconds`` ago would have served them, and the endpoint's totals then go on from there, so
        the history and the scraped series are one. With ``since`` (epoch seconds), the samples after it of the
        history already started, up to now (the gap a Prometheus started on the first answer has before its first
        scrape: the same counters). ``ValueError`` for an endpoint already scraped before its history started, for
        ``since`` before any history, or more than ``HISTORY_MAX_S`` seconds."""
        if not 1 <= seconds <= HISTORY_MAX_S:
            raise ValueError(f"history: seconds must be 1..{HISTORY_MAX_S}")
        now = math.floor(self.sb.clock().timestamp())
        known = self.sb.world.environments()
        out: list[Series] = []
        with self.lock:
            if since is None:
                taken = [key for key in labels if key in self.totals]
                if taken:
                    raise ValueError(f"history: {taken[0][1]} in {taken[0][0]} is already scraped")
            elif not self.origins:
                raise ValueError("history: since given but no history started")
            for (env, svc), extra in sorted(labels.items()):
                if env not in known or svc not in SERVICES or (since is not None and (env, svc) not in self.origins):
                    continue
                names = [(_REQUESTS, {"code": "200"}), (_REQUESTS, {"code": "500"})]
                names += [(f"{_DURATION}_bucket", {"le": repr(le)}) for le in BUCKETS]
                names += [(f"{_DURATION}_bucket", {"le": "+Inf"}), (f"{_DURATION}_count", {}), (f"{_DURATION}_sum", {})]
                series = [Series({"__name__": n, **extra, **more}, []) for n, more in names]

                def sample(second: int, t: _Totals, series: list[Series] = series) -> None:
                    if since is not None and second <= since:
                        return
                    count = t.ok + t.errors
                    values = [t.ok, t.errors, *t.buckets, count, count, t.total_seconds]
                    for one, value in zip(series, values, strict=True):
                        one.samples.append((second, value))

                if since is None:
                    t = _Totals(upto=now - seconds)
                    self.origins[(env, svc)] = _Totals(upto=t.upto)
                    self._integrate(t, self._series(env, svc, t.upto, now - 1), now, sample)
                    self.totals[(env, svc)] = t
                else:  # the same integration again from the history's start, the live totals untouched
                    o = self.origins[(env, svc)]
                    again = _Totals(o.upto, o.ok, o.errors, o.total_seconds, list(o.buckets))
                    self._integrate(again, self._series(env, svc, o.upto, now - 1), now, sample)
                out += series
        return out


@dataclass
class Series:
    """One series of a history: its labels (``__name__`` included) and ``(epoch second, value)`` samples."""

    labels: dict[str, str]
    samples: list[tuple[int, float]]


def openmetrics(history: list[Series]) -> str:
    """``history`` as OpenMetrics text with a timestamp per sample (openmetrics.io; what ``promtool tsdb
    create-blocks-from openmetrics`` backfills): a counter's samples together, a histogram's point (its buckets,
    count and sum at one time) together, ``# EOF`` last."""

    def line(one: Series, t: int, v: float) -> str:
        shown = ",".join(f'{k}="{_escape(x)}"' for k, x in sorted(one.labels.items()) if k != "__name__")
        return f"{one.labels['__name__']}{{{shown}}} {v!r} {t}"

    counters = [line(one, t, v) for one in history if one.labels["__name__"] == _REQUESTS for t, v in one.samples]
    points: dict[tuple[tuple[str, str], ...], list[Series]] = {}
    for one in history:
        if one.labels["__name__"] != _REQUESTS:
            key = tuple(sorted((k, v) for k, v in one.labels.items() if k not in ("__name__", "le")))
            points.setdefault(key, []).append(one)
    histograms = [
        line(one, *one.samples[i])
        for members in points.values()
        for i in range(len(members[0].samples))
        for one in members
    ]
    return "\n".join(
        [f"# TYPE {_REQUESTS[:-6]} counter", f"# HELP {_REQUESTS[:-6]} HTTP requests served.", *counters,
         f"# TYPE {_DURATION} histogram", f"# HELP {_DURATION} HTTP request latency.", *histograms, "# EOF", ""]
    )  # fmt: skip


def _escape(value: str) -> str:
    """A label value inside OpenMetrics' double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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


@router.get("/history")
def history(
    seconds: int, base_url: str, since: float | None = None, format: str = "openmetrics", exporter: Exporter = STATE
) -> Response:
    """The last ``seconds`` of every endpoint of ``scrape_targets(base_url)`` as OpenMetrics with timestamps
    (``Exporter.history``), labelled as the job ``world`` scraping them there labels them; 409 once scraped. With
    ``since``: that history's samples after ``since``, up to now. ``format=json``: ``[{"labels", "samples": [[epoch
    second, value]]}]`` (for ``PromStack.remote_write``). Header ``X-History-End``: the last samples' second."""
    labels = {
        (t["labels"]["env"], t["labels"]["service"]): {
            "job": JOB, "instance": t["targets"][0], **{k: v for k, v in t["labels"].items() if not k.startswith("__")}
        }
        for t in scrape_targets(base_url)
    }  # fmt: skip
    try:
        found = exporter.history(seconds, labels, since)
    except ValueError as e:
        raise HTTPException(409 if "scraped" in str(e) else 400, str(e)) from None
    end = {HISTORY_END: str(max((t for one in found for t, _ in one.samples[-1:]), default=0))}
    if format == "json":
        return JSONResponse([{"labels": one.labels, "samples": one.samples} for one in found], headers=end)
    return Response(openmetrics(found), media_type=OPENMETRICS, headers=end)


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
