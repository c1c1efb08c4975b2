"""Events: ``POST /api/v1/events`` (API key only; 202) and ``GET /api/v2/events`` (filters, cursor pages)."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from fixloop.sandbox.datadog.service import DD, Datadog
from fixloop.sandbox.datadog.wire import DatadogError
from fixloop.sandbox.world import iso

router = APIRouter()


class EventIn(BaseModel):
    title: str = Field(min_length=1, max_length=100)
    text: str = Field(max_length=4000)
    tags: list[str] = []
    aggregation_key: str | None = Field(default=None, max_length=100)
    alert_type: str = "info"
    priority: str | None = None
    date_happened: int | None = None
    host: str | None = None
    source_type_name: str | None = None
    related_event_id: int | None = None


@router.post("/api/v1/events", status_code=202)
def create_event(request: Request, body: EventIn, dd: Datadog = DD) -> dict[str, Any]:
    dd.auth(request, app_key=False)
    with dd.store.lock:
        seq = len(dd.store.data["events"]) + 1
        event_id = 7_300_000_000_000_000_000 + seq
        event = {
            "id": event_id,
            "id_str": str(event_id),
            "title": body.title,
            "text": body.text,
            "date_happened": body.date_happened or int(dd.sb.clock().timestamp()),
            "handle": None,
            "priority": body.priority,
            "related_event_id": body.related_event_id,
            "tags": body.tags,
            "url": dd.sb.url("/datadog", f"/event/event?id={event_id}"),
        }
        dd.store.data["events"].append(
            {**event, "aggregation_key": body.aggregation_key, "alert_type": body.alert_type, "host": body.host}
        )
        dd.store.save()
    return {"status": "ok", "event": event}


def _ts(dd: Datadog, value: str | None, default: float) -> float:
    if not value:
        return default
    now = dd.sb.clock().timestamp()
    rel = re.fullmatch(r"now(?:-(\d+)([smhd]))?", value)
    if rel:
        return now - (int(rel[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[rel[2]] if rel[1] else 0)
    if value.isdigit():
        return int(value) / 1000
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise DatadogError(400, f"Invalid time: {value!r}") from None


@router.get("/api/v2/events")
def list_events(request: Request, dd: Datadog = DD) -> dict[str, Any]:
    dd.auth(request)
    p = request.query_params
    now = dd.sb.clock().timestamp()
    lo, hi = _ts(dd, p.get("filter[from]"), now - 900), _ts(dd, p.get("filter[to]"), now)
    words = (p.get("filter[query]") or "").split()
    try:
        limit = int(p.get("page[limit]") or 10)
        offset = int(base64.urlsafe_b64decode(p["page[cursor]"] + "==").decode()) if p.get("page[cursor]") else 0
    except ValueError:
        raise DatadogError(400, "Invalid page[limit] or page[cursor]") from None
    with dd.store.lock:
        events = [
            e
            for e in dd.store.data["events"]
            if lo <= e["date_happened"] <= hi
            and all(
                (w in e["tags"]) if ":" in w else (w.lower() in (e["title"] + e["text"]).lower()) for w in words
            )
        ]
    events.sort(key=lambda e: e["date_happened"], reverse=p.get("sort") != "timestamp")
    page = events[offset : offset + limit]
    body: dict[str, Any] = {"data": [_event_v2(e) for e in page]}
    if offset + limit < len(events):
        cursor = base64.urlsafe_b64encode(str(offset + limit).encode()).decode().rstrip("=")
        body["meta"] = {"page": {"after": cursor}}
        body["links"] = {"next": str(request.url.include_query_params(**{"page[cursor]": cursor}))}
    return body


def _event_v2(e: dict[str, Any]) -> dict[str, Any]:
    agg_key = e.get("aggregation_key") or f"{e['id']:x}"  # Datadog derives one when none was given
    return {
        "attributes": {
            "attributes": {
                "status": {"error": "error", "warning": "warn", "success": "ok"}.get(e["alert_type"], "info"),
                "title": e["title"],
                "timestamp": e["date_happened"] * 1000,
                "priority": e["priority"] or "normal",
                "event_object": agg_key,
                "service": next((t[8:] for t in e["tags"] if t.startswith("service:")), "undefined"),
                "hostname": e.get("host") or "fixloop-sandbox",
                "aggregation_key": agg_key,
                "evt": {"source_id": 1, "type": "api", "id": e["id_str"]},
            },
            "message": e["text"],
            "tags": e["tags"],
            "timestamp": iso(e["date_happened"]).replace("+00:00", "Z"),
        },
        "type": "event",
        "id": e["id_str"],
    }
