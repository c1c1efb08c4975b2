"""Prometheus HTTP API: instant and range queries and the server's build information, for verification (metrics
before vs after a change), on the bounded JSON client (``fixloop.integrations.bounded``).

Vendor doc: prometheus.io/docs/prometheus/latest/querying/api/ -- ``GET /api/v1/query`` (``query``, ``time``: RFC
3339 or epoch seconds), ``GET /api/v1/query_range`` (``query``, ``start``, ``end``, ``step`` in seconds; at most
11,000 points per series, else 400 ``bad_data``), ``GET /api/v1/status/buildinfo``. Every answer, errors included,
is the envelope ``{"status": "success" | "error", "data": {"resultType": "matrix" | "vector" | "scalar" | "string",
"result": ...}, "errorType", "error", "warnings", "infos"}``; a range result is ``[{"metric": {label: value},
"values": [[epoch seconds, "value"], ...]}]``, an instant vector ``[{"metric": {...}, "value": [t, "value"]}]``, a
scalar ``[t, "value"]``. Sample values are strings (Go's ``strconv.FormatFloat``, and ``NaN``, ``+Inf``, ``-Inf``).
Native histogram samples (``histograms``/``histogram``) are not read. Recorded answers:
``tests/fixtures/recorded/prometheus/``.

Errors: ``Invalid`` (400 ``bad_data``, 422 ``execution``: Prometheus's ``errorType: error`` text), ``AuthError``
(401/403, from a proxy in front of Prometheus), ``NotFound`` (404: not a Prometheus API), ``HttpStatusError``
(429/5xx, 503 while Prometheus starts or is overloaded: retryable), ``TransportError`` (no answer in ``timeout``
seconds), ``IntegrationError`` (an answer over ``max_bytes``, not JSON, or not the envelope: the JSON pointer of the
first wrong value). Messages never carry the token or a body.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.core.parsing import clean
from fixloop.integrations.bounded import REASON_MAX, ApiAccess, BaseUrl, JsonApi, access_options, json_pointer
from fixloop.integrations.checks import CheckResult, Status, bounded, failed, hint
from fixloop.integrations.errors import AuthError, IntegrationError

SYSTEM = "prometheus"
PREFIX = "FIXLOOP_PROMETHEUS_"
MAX_SERIES = 10_000  # series of one answer
MAX_POINTS = 11_000  # points of one series (Prometheus's own limit of a range query)
_VALUE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN")
_VALUE_MAX = 400  # characters of a sample value ('f' formatting of 1e308 takes 309)


class PrometheusSettings(BaseSettings, ApiAccess):
    """``FIXLOOP_PROMETHEUS_URL`` (the server's base URL, e.g. ``http://prometheus:9090``, or a path prefix behind a
    proxy; setting it enables the Prometheus verification provider), ``FIXLOOP_PROMETHEUS_TOKEN`` or
    ``FIXLOOP_PROMETHEUS_USERNAME`` + ``FIXLOOP_PROMETHEUS_PASSWORD`` (exclusive), ``FIXLOOP_PROMETHEUS_TIMEOUT``
    (seconds per request), ``FIXLOOP_PROMETHEUS_CA_FILE`` (extra CA bundle), ``FIXLOOP_PROMETHEUS_MAX_BYTES``
    (answer cap)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    url: BaseUrl = Field(
        description="Prometheus base URL (e.g. http://prometheus:9090); setting it enables Prometheus verification."
    )


@dataclass(frozen=True)
class PromSeries:
    """One series: its ``labels`` (``__name__`` included when Prometheus keeps it) and ``points``: ``(epoch
    seconds, value)``, value None for NaN, infinities kept as ``float('inf')``."""

    labels: dict[str, str]
    points: list[tuple[float, float | None]]

    def values(self) -> list[float]:
        """The values that are not NaN, in time order."""
        return [v for _, v in self.points if v is not None]


def _wrong(where: tuple[object, ...], what: str) -> IntegrationError:
    return IntegrationError(SYSTEM, f"the answer is not the query API's: {json_pointer(where)} {what}")


def _data(doc: object) -> dict[str, Any]:
    """The ``data`` of a success envelope; ``IntegrationError`` for an error envelope (its ``errorType`` and
    ``error``) or another shape."""
    if not isinstance(doc, dict):
        raise _wrong((), "is not an object")
    status = doc.get("status")
    if status == "error":
        raise IntegrationError(SYSTEM, f"query failed: {error_reason(doc) or 'no reason given'}")
    if status != "success":
        raise _wrong(("status",), "is not success or error")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise _wrong(("data",), "is not an object")
    return data


def error_reason(doc: object) -> str | None:
    """``<errorType>: <error>`` of an error envelope (cut to ``REASON_MAX`` characters), None for another
    document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return None
    kind = doc.get("errorType")
    text = f"{kind}: {doc['error']}" if isinstance(kind, str) and kind else doc["error"]
    return clean(text, REASON_MAX)


def _result(doc: object, types: tuple[str, ...]) -> tuple[str, Any]:
    data = _data(doc)
    kind = data.get("resultType")
    if kind not in types:
        raise _wrong(("data", "resultType"), f"is not {' or '.join(types)}")
    return kind, data.get("result")


def _labels(metric: object, where: tuple[object, ...]) -> dict[str, str]:
    if metric is None:
        return {}
    if not isinstance(metric, dict):
        raise _wrong(where, "is not an object")
    for name, value in metric.items():
        if not isinstance(value, str):
            raise _wrong((*where, name), "is not a string")
    return dict(metric)


def _point(sample: object, where: tuple[object, ...]) -> tuple[float, float | None]:
    if not isinstance(sample, list) or len(sample) != 2:
        raise _wrong(where, "is not a [time, value] pair")
    t, v = sample
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise _wrong((*where, 0), "is not a number")
    try:
        seconds = float(t)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise _wrong((*where, 0), "is not a finite time")
    if not isinstance(v, str) or len(v) > _VALUE_MAX or not _VALUE.fullmatch(v):
        raise _wrong((*where, 1), "is not a sample value string")
    value = float(v)
    return seconds, None if math.isnan(value) else value


def _series_list(result: object, where: tuple[object, ...]) -> list[object]:
    if not isinstance(result, list):
        raise _wrong(where, "is not an array")
    if len(result) > MAX_SERIES:
        raise IntegrationError(SYSTEM, f"the answer holds {len(result)} series, over the limit of {MAX_SERIES}")
    return result


def _item(item: object, where: tuple[object, ...]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _wrong(where, "is not an object")
    return item


def parse_matrix(doc: object) -> list[PromSeries]:
    """The series of a range query's answer (``resultType`` ``matrix``), in Prometheus's order. ``IntegrationError``
    for an error envelope (``errorType: error``), another shape (the JSON pointer of the first wrong value), more
    than ``MAX_SERIES`` series or ``MAX_POINTS`` points in a series."""
    _, result = _result(doc, ("matrix",))
    out = []
    for i, raw in enumerate(_series_list(result, ("data", "result"))):
        where = ("data", "result", i)
        item = _item(raw, where)
        values = item.get("values", [])
        if not isinstance(values, list):
            raise _wrong((*where, "values"), "is not an array")
        if len(values) > MAX_POINTS:
            raise IntegrationError(
                SYSTEM, f"{json_pointer((*where, 'values'))} holds {len(values)} points, over the limit of {MAX_POINTS}"
            )
        points = [_point(p, (*where, "values", j)) for j, p in enumerate(values)]
        out.append(PromSeries(labels=_labels(item.get("metric"), (*where, "metric")), points=points))
    return out


def parse_vector(doc: object) -> list[PromSeries]:
    """The series of an instant query's answer, one point each: ``resultType`` ``vector`` (one series per element)
    or ``scalar`` (one series with no labels). Errors as ``parse_matrix``'s."""
    kind, result = _result(doc, ("vector", "scalar"))
    if kind == "scalar":
        return [PromSeries(labels={}, points=[_point(result, ("data", "result"))])]
    out = []
    for i, raw in enumerate(_series_list(result, ("data", "result"))):
        where = ("data", "result", i)
        item = _item(raw, where)
        points = [_point(item["value"], (*where, "value"))] if "value" in item else []
        out.append(PromSeries(labels=_labels(item.get("metric"), (*where, "metric")), points=points))
    return out


def _seconds(t: datetime | float) -> str:
    """Epoch seconds as the API takes them (``time``, ``start``, ``end``); ``ValueError`` for a naive datetime."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("naive datetime: use an aware UTC datetime")
        t = t.timestamp()
    if not math.isfinite(t):
        raise ValueError("the time is not finite")
    return f"{t:.3f}"


class PrometheusClient(JsonApi):
    """The query API at ``settings.url``. Use as a context manager, or call ``close()``."""

    def __init__(self, settings: PrometheusSettings, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(SYSTEM, transport=transport, **access_options(settings, SYSTEM, error_reason))
        self.settings = settings

    def query_range(self, query: str, start: datetime | float, end: datetime | float, step_s: int) -> list[PromSeries]:
        """``GET /api/v1/query_range``: ``query`` (PromQL) from ``start`` to ``end`` (aware datetimes or epoch
        seconds) every ``step_s`` seconds (>= 1), parsed by ``parse_matrix``. ``ValueError`` for a naive datetime
        or a step under 1; ``Invalid`` with Prometheus's reason for a query it refuses (syntax, over 11,000
        points)."""
        if step_s < 1:
            raise ValueError("step_s must be at least 1 second")
        params = {"query": query, "start": _seconds(start), "end": _seconds(end), "step": str(int(step_s))}
        return parse_matrix(self.get_json("/api/v1/query_range", params))

    def query(self, query: str, at: datetime | float | None = None) -> list[PromSeries]:
        """``GET /api/v1/query``: ``query`` evaluated at ``at`` (aware datetime or epoch seconds; None: the
        server's now), parsed by ``parse_vector``. Errors as ``query_range``'s."""
        params = {"query": query} if at is None else {"query": query, "time": _seconds(at)}
        return parse_vector(self.get_json("/api/v1/query", params))

    def buildinfo(self) -> dict[str, str]:
        """``GET /api/v1/status/buildinfo``'s ``data``: ``version``, ``revision``, ``branch``, ``buildUser``,
        ``buildDate``, ``goVersion`` (the string values only, each cut to 200 characters)."""
        data = _data(self.get_json("/api/v1/status/buildinfo"))
        return {clean(k, 64): clean(v, 200) for k, v in data.items() if isinstance(v, str)}


PROBE_QUERY = "vector(1)"  # any Prometheus answers it with one sample of value 1, without any series stored


def check(settings: PrometheusSettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s prometheus line: ``GET /api/v1/status/buildinfo`` (the version), then the instant
    query ``vector(1)`` (the query API answers and parses); each request bounded by ``timeout`` seconds."""
    target = settings.url
    auth = f"{PREFIX}TOKEN or {PREFIX}USERNAME/_PASSWORD"
    try:
        with PrometheusClient(bounded(settings, timeout)) as client:
            info = client.buildinfo()
            answer = client.query(PROBE_QUERY)
    except IntegrationError as e:
        return failed(SYSTEM, target, e, hint(e, {AuthError: auth}, f"{PREFIX}URL and {PREFIX}CA_FILE"))
    if [s.values() for s in answer] != [[1.0]]:
        return CheckResult(Status.FAIL, SYSTEM, f"{target}: {PROBE_QUERY} did not answer 1 (check {PREFIX}URL)")
    version = info.get("version") or "version unknown"
    return CheckResult(Status.OK, SYSTEM, f"{target} (Prometheus {version}, instant queries answer)")
