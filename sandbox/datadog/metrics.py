"""Metrics: ``GET /api/v1/query`` over the world model (the grammar in the package docstring), and
``GET /api/v1/validate`` (API key only)."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from fastapi import APIRouter, Request

from fixloop.sandbox.datadog.service import DD, Datadog
from fixloop.sandbox.datadog.wire import (
    MAX_POINTS,
    METRICS,
    QUERY,
    ROLLUPS,
    SECOND,
    TAG_KEYS,
    DatadogError,
    spatial,
    split_queries,
)
from fixloop.sandbox.world import SERVICES

router = APIRouter()


@router.get("/api/v1/validate")
def validate(request: Request, dd: Datadog = DD) -> dict[str, Any]:
    dd.auth(request, app_key=False)
    return {"valid": True}


def one_query(dd: Datadog, text: str, index: int, start: int, end: int) -> list[dict[str, Any]]:
    m = QUERY.match(text)
    if not m:
        expected = "[aggregator:]metric{scope}[.as_rate()|.as_count()][ by {tags}][.rollup(...)]"
        raise DatadogError(400, f"Error parsing query: unable to parse {text.strip()!r}: expected {expected}")
    agg = m["agg"]
    filters: dict[str, str] = {}
    for term in (t.strip() for t in m["scope"].split(",")):
        if term in ("", "*"):
            continue
        key, sep, value = term.partition(":")
        if not sep or not value:
            raise DatadogError(400, f"Error parsing query: invalid scope term {term!r} in {text.strip()!r}")
        filters[key] = value
    by = [t.strip() for t in (m["by"] or "").split(",") if t.strip()]
    mods = (m["mods"] or "") + (m["mods2"] or "")
    metric = METRICS.get(m["metric"])
    span = max(end - start, 1)
    interval = next((r for r in ROLLUPS if span / r <= MAX_POINTS), ROLLUPS[-1])
    roll = re.search(r"\.rollup\(\s*(\w+)\s*(?:,\s*(\d+)\s*)?\)", mods)
    if roll and roll[2]:
        interval = max(int(roll[2]), 1)
        if span / interval > 1500:
            raise DatadogError(400, f"Rollup interval {interval}s too small for the time range")
    world = dd.sb.world
    envs = tuple(e for e in world.environments() if fnmatch.fnmatchcase(e, filters.get("env", "*")))
    if metric is None or not envs:
        return []
    sources: list[tuple[dict[str, str], list[tuple[int, float]]]] = []
    if metric.source == "apm":
        if any(k not in TAG_KEYS for k in [*filters, *by]):
            return []
        as_rate = metric.kind == "count" and ".as_rate()" in mods
        factor = metric.scale * (interval if metric.kind == "count" and not as_rate else 1)
        for env in envs:
            for svc in SERVICES:
                if filters.get("service", svc) == svc:
                    pts = world.series(svc, metric.world, start, end, interval, env)
                    sources.append(({"service": svc, "env": env}, [(t, v * factor) for t, v in pts if v is not None]))
    else:
        as_rate = False
        wanted = tuple(s for s in SERVICES if fnmatch.fnmatchcase(s, filters.get("service", "*")))
        time_agg = roll[1] if roll and roll[1] in ("avg", "max", "min", "sum") else "avg"
        for tags, pts in world.kube_series(metric.world, start, end, interval, time_agg, services=wanted, envs=envs):
            if all(k in tags and fnmatch.fnmatchcase(tags[k], v) for k, v in filters.items()):
                if any(b not in tags for b in by):
                    return []
                sources.append((tags, pts))
    groups: dict[tuple[str, ...], list[list[tuple[int, float]]]] = {}
    for tags, pts in sources:
        groups.setdefault(tuple(f"{b}:{tags[b]}" for b in by), []).append(pts)
    base_scope = [f"{k}:{v}" for k, v in filters.items()]
    out = []
    for tag_set, members in sorted(groups.items()):
        per_ts: dict[int, list[float]] = {}
        for pts in members:
            for ts, v in pts:
                per_ts.setdefault(ts, []).append(v)
        if not per_ts:
            continue
        space = agg or "avg"
        points = [[ts, spatial(space, vs)] for ts, vs in sorted(per_ts.items())]
        scope = ",".join([*base_scope, *tag_set]) or "*"
        expr = f"{(agg + ':') if agg else ''}{m['metric']}{{{scope}}}{'.as_rate()' if as_rate else ''}"
        out.append(
            {
                "end": points[-1][0] + interval * 1000 - 1000,
                "attributes": {},
                "metric": m["metric"],
                "interval": interval,
                "tag_set": list(tag_set),
                "start": points[0][0],
                "length": len(points),
                "query_index": index,
                "aggr": agg,
                "scope": scope,
                "pointlist": points,
                "expression": expr,
                "unit": [metric.unit, SECOND if as_rate else None],
                "display_name": m["metric"],
            }
        )
    return out


@router.get("/api/v1/query")
def query_metrics(request: Request, dd: Datadog = DD) -> dict[str, Any]:
    dd.auth(request)
    params = request.query_params
    for name in ("from", "to", "query"):
        if not params.get(name):
            raise DatadogError(400, f"Missing required parameter: {name}")
    try:
        start, end = int(params["from"]), int(params["to"])
    except ValueError:
        raise DatadogError(400, "Invalid from/to: expected epoch seconds") from None
    if start > end:
        raise DatadogError(400, "Invalid time range: 'from' is after 'to'")
    q = params["query"]
    series = [s for i, part in enumerate(split_queries(q)) for s in one_query(dd, part, i, start, end)]
    group_by = sorted({t.split(":")[0] for s in series for t in s["tag_set"]})
    return {
        "status": "ok",
        "resp_version": 1,
        "series": series,
        "to_date": end * 1000,
        "query": q,
        "message": "",
        "res_type": "time_series",
        "times": [],
        "from_date": start * 1000,
        "group_by": group_by,
        "values": [],
    }
