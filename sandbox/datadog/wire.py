"""Datadog's wire conventions: the metrics the stand-in serves (APM trace metrics over the world model), the query
grammar, rollup intervals, units, and the error answer ``{"errors": [...]}``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

ORG_ID = 1_000_001
CREATOR = {"name": "fixloop sandbox", "handle": "sandbox@fixloop.example", "email": "sandbox@fixloop.example", "id": 1}
ROLLUPS = (20, 60, 300, 600, 1800, 3600, 7200, 14400, 86400)
MAX_POINTS = 300


def _unit(family: str, name: str, short: str | None, plural: str, uid: int) -> dict[str, Any]:
    return {"family": family, "scale_factor": 1.0, "name": name, "short_name": short, "plural": plural, "id": uid}


HIT = _unit("network", "hit", "hit", "hits", 39)
ERROR = _unit("general", "error", "err", "errors", 88)
SECOND = _unit("time", "second", "s", "seconds", 11)


BYTE = _unit("bytes", "byte", "B", "bytes", 2)
CORE = _unit("cpu", "core", "core", "cores", 31)
NANOCORE = {**_unit("cpu", "nanocore", "ncores", "nanocores", 121), "scale_factor": 1e-9}


@dataclass(frozen=True)
class Metric:
    world: str
    kind: str  # "count" | "gauge"
    unit: dict[str, Any] | None
    scale: float = 1.0
    source: str = "apm"  # "apm": World.series per service | "kube": World.kube_series per container


METRICS = {
    "trace.http.request.hits": Metric("hits", "count", HIT),
    "trace.http.request.errors": Metric("errors", "count", ERROR),
    "trace.http.request.duration.by.service.95p": Metric("latency_p95", "gauge", SECOND, 0.001),
    # Datadog's kubelet check (docs.datadoghq.com/containers/kubernetes/data_collected/), per container
    "kubernetes.memory.usage": Metric("kubernetes.memory.usage", "gauge", BYTE, source="kube"),
    "kubernetes.memory.limits": Metric("kubernetes.memory.limits", "gauge", BYTE, source="kube"),
    "kubernetes.memory.requests": Metric("kubernetes.memory.requests", "gauge", BYTE, source="kube"),
    "kubernetes.cpu.usage.total": Metric("kubernetes.cpu.usage.total", "gauge", NANOCORE, source="kube"),
    "kubernetes.cpu.limits": Metric("kubernetes.cpu.limits", "gauge", CORE, source="kube"),
    "kubernetes.cpu.requests": Metric("kubernetes.cpu.requests", "gauge", CORE, source="kube"),
    "kubernetes.cpu.cfs.periods": Metric("kubernetes.cpu.cfs.periods", "gauge", None, source="kube"),
    "kubernetes.cpu.cfs.throttled.periods": Metric(
        "kubernetes.cpu.cfs.throttled.periods", "gauge", None, source="kube"
    ),
    "kubernetes.containers.restarts": Metric("kubernetes.containers.restarts", "gauge", None, source="kube"),
    "kubernetes.containers.state.terminated": Metric(
        "kubernetes.containers.state.terminated", "gauge", None, source="kube"
    ),
    "kubernetes.containers.state.waiting": Metric("kubernetes.containers.state.waiting", "gauge", None, source="kube"),
    "kubernetes.containers.last_state.terminated": Metric(
        "kubernetes.containers.last_state.terminated", "gauge", None, source="kube"
    ),
}
TAG_KEYS = ("service", "env")  # of the APM metrics; the kube ones carry their containers' tags (World.kube_series)
MODIFIERS = r"\.(?:as_rate|as_count)\(\)|\.rollup\(\s*\w+\s*(?:,\s*\d+\s*)?\)"
QUERY = re.compile(
    rf"^\s*(?:(?P<agg>avg|sum|min|max):)?(?P<metric>[A-Za-z][\w.]*)\{{(?P<scope>[^{{}}]*)\}}"
    rf"(?P<mods>(?:{MODIFIERS})*)(?:\s+by\s+\{{(?P<by>[^{{}}]*)\}})?(?P<mods2>(?:{MODIFIERS})*)\s*$"
)


class DatadogError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def error(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status)


def split_queries(q: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in q:
        depth += ch in "{(" and 1 or (ch in "})" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def spatial(agg: str, values: list[float]) -> float:
    return {"avg": lambda v: sum(v) / len(v), "sum": sum, "min": min, "max": max}[agg](values)
