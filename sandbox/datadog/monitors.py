"""Monitors: ``GET /api/v1/monitor`` (filters, pages), ``/api/v1/monitor/{id}``, ``/api/v1/monitor/search``."""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import APIRouter, Request

from fixloop.sandbox.datadog.service import DD, Datadog
from fixloop.sandbox.datadog.wire import CREATOR, ORG_ID, DatadogError
from fixloop.sandbox.world import MONITORS, iso

router = APIRouter()


@router.get("/api/v1/monitor/search")
def search_monitors(
    request: Request, query: str = "", page: int = 0, per_page: int = 30, dd: Datadog = DD
) -> dict[str, Any]:
    dd.auth(request)
    if page < 0 or not 1 <= per_page <= 1000:
        raise DatadogError(400, "Invalid pagination: page >= 0, 1 <= per_page <= 1000")
    terms = re.findall(r'(\w+):("[^"]*"|\S+)|(\S+)', query)
    rows = [(mon, dd.state_of(mon)) for mon in MONITORS]
    for key, value, word in terms:
        value = value.strip('"')
        if word:
            rows = [r for r in rows if word.lower() in r[0].name.lower()]
        elif key == "status":
            rows = [r for r in rows if r[1][0].lower().replace(" ", "") == value.lower().replace(" ", "")]
        elif key == "type":
            rows = [r for r in rows if value.lower() in ("metric", "query", "metric alert", "query alert")]
        elif key == "tag":
            rows = [r for r in rows if value in r[0].tags]
        elif key == "id":
            rows = [r for r in rows if str(r[0].id) == value]
        elif key in ("service", "env", "team", "scope"):
            want = value if key == "scope" else f"{key}:{value}"
            rows = [r for r in rows if want in r[0].tags or want in dd.scope_tags(r[0])]
        else:
            raise DatadogError(400, f"Invalid monitor search query: unknown attribute {key!r}")

    def count(values: list[Any]) -> list[dict[str, Any]]:
        tally: dict[Any, int] = {}
        for v in values:
            tally[v] = tally.get(v, 0) + 1
        return [{"count": n, "name": k} for k, n in sorted(tally.items(), key=lambda kv: (-kv[1], str(kv[0])))]

    selected = rows[page * per_page : (page + 1) * per_page]
    return {
        "counts": {
            "status": count([r[1][0] for r in rows]),
            "muted": count([False for _ in rows]),
            "tag": count([t for r in rows for t in r[0].tags]),
            "type": count(["metric" for _ in rows]),
        },
        "monitors": [
            {
                "status": st,
                "scopes": sorted(dd.scope_tags(mon)),
                "classification": "metric",
                "creator": {k: CREATOR[k] for k in ("handle", "id", "name")},
                "metrics": [mon.query.split(":", 2)[2].split("{")[0]],
                "notifications": [{"handle": "webhook-fixloop", "name": "fixloop"}],
                "muted_until_ts": None,
                "query": mon.query,
                "id": mon.id,
                "last_triggered_ts": int(fired) if fired else None,
                "name": mon.name,
                "tags": mon.tags,
                "org_id": ORG_ID,
                "priority": mon.priority,
                "overall_state_modified": iso(since) if since else None,
                "restricted_roles": [],
                "type": "metric alert",
            }
            for mon, (st, since, fired) in selected
        ],
        "metadata": {
            "total_count": len(rows),
            "page_count": math.ceil(len(rows) / per_page),
            "page": page,
            "per_page": per_page,
        },
    }


@router.get("/api/v1/monitor/{monitor_id}")
def get_monitor(request: Request, monitor_id: str, dd: Datadog = DD) -> dict[str, Any]:
    dd.auth(request)
    mon = dd.sb.world.monitor(int(monitor_id)) if monitor_id.isdigit() else None
    if mon is None:
        raise DatadogError(404, "Monitor not found")
    return dd.monitor_json(mon, downtimes=request.query_params.get("with_downtimes", "").lower() == "true")


@router.get("/api/v1/monitor")
def list_monitors(
    request: Request,
    name: str | None = None,
    tags: str | None = None,
    monitor_tags: str | None = None,
    id_offset: int | None = None,
    page: int | None = None,
    page_size: int | None = None,
    dd: Datadog = DD,
) -> list[dict[str, Any]]:
    dd.auth(request)
    want_scope = {t.strip() for t in (tags or "").split(",") if t.strip()}
    want_tags = {t.strip() for t in (monitor_tags or "").split(",") if t.strip()}
    mons = [
        m
        for m in MONITORS
        if (not name or name.lower() in m.name.lower())
        and want_scope <= dd.scope_tags(m)
        and want_tags <= set(m.tags)
        and (id_offset is None or m.id > id_offset)
    ]
    if page is not None or page_size is not None:
        size = page_size or 100
        if (page or 0) < 0 or not 1 <= size <= 1000:
            raise DatadogError(400, "Invalid pagination: page >= 0, 1 <= page_size <= 1000")
        mons = mons[(page or 0) * size : ((page or 0) + 1) * size]
    return [dd.monitor_json(m) for m in mons]
