"""The Datadog stand-in (``/datadog``): metric queries over the world model, monitors, events.

Endpoints, as ``datadog-api-client`` calls them with ``Configuration(host=f"{base}/datadog")``:

* ``GET /api/v1/validate`` (API key only) -> ``{"valid": true}``
* ``GET /api/v1/query?from=&to=&query=`` -> ``MetricsQueryResponse``. Query syntax (comma-separated queries allowed):
  ``[avg|sum|min|max:]<metric>{<scope>}[.as_rate()|.as_count()][ by {tag,...}][.rollup(<agg>[, <seconds>])]``;
  scope is ``*`` or ``tag:value,...`` (tags: ``service``, ``env`` = ``sandbox``). Metrics (APM trace metrics):

  ==============================================  ===========  ========================================================
  metric                                          world        value
  ==============================================  ===========  ========================================================
  ``trace.http.request.hits``                     hits         count per interval; ``.as_rate()`` -> per second
  ``trace.http.request.errors``                   errors       count per interval; ``.as_rate()`` -> per second
  ``trace.http.request.duration.by.service.95p``  latency_p95  gauge, seconds
  ==============================================  ===========  ========================================================

  The rollup interval is the smallest of 20 s, 1 m, 5 m, 10 m, 30 m, 1 h, 2 h, 4 h, 1 d giving at most 300 points
  (a day -> 5 m, 288 points, as real Datadog); points are bucket starts from ``ceil(from)`` to ``floor(to)``. An
  unknown metric or a scope matching no service -> ``"series": []``; a syntax error -> 400.
* ``GET /api/v1/monitor`` (``name``, ``tags`` = query scope tags, ``monitor_tags``, ``id_offset``, ``page``,
  ``page_size``), ``GET /api/v1/monitor/{id}``, ``GET /api/v1/monitor/search`` (``query`` with ``status:``,
  ``type:``, ``tag:``, ``service:``, ``id:`` terms and free text on the name; ``page``, ``per_page``): the seeded
  monitors of ``fixloop.sandbox.world``, state evaluated at ``sb.clock()``.
* ``POST /api/v1/events`` (API key only) -> 202 ``{"status": "ok", "event": {...}}``; ``GET /api/v2/events``
  (``filter[from|to|query]``, ``sort``, ``page[limit|cursor]``).

Auth: ``DD-API-KEY`` (and ``DD-APPLICATION-KEY`` where the real API needs it) must equal the sandbox credentials,
else 403 ``{"errors": ["Forbidden"]}`` as real Datadog answers. Every error is ``{"errors": ["..."]}``.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from fixloop.sandbox.world import MONITORS, SERVICES, MonitorDef, iso

log = logging.getLogger(__name__)
ORG_ID = 1_000_001
CREATOR = {"name": "fixloop sandbox", "handle": "sandbox@fixloop.example", "email": "sandbox@fixloop.example", "id": 1}
ROLLUPS = (20, 60, 300, 600, 1800, 3600, 7200, 14400, 86400)
MAX_POINTS = 300


def _unit(family: str, name: str, short: str | None, plural: str, uid: int) -> dict[str, Any]:
    return {"family": family, "scale_factor": 1.0, "name": name, "short_name": short, "plural": plural, "id": uid}


HIT = _unit("network", "hit", "hit", "hits", 39)
ERROR = _unit("general", "error", "err", "errors", 88)
SECOND = _unit("time", "second", "s", "seconds", 11)


@dataclass(frozen=True)
class Metric:
    world: str
    kind: str  # "count" | "gauge"
    unit: dict[str, Any]
    scale: float = 1.0


METRICS = {
    "trace.http.request.hits": Metric("hits", "count", HIT),
    "trace.http.request.errors": Metric("errors", "count", ERROR),
    "trace.http.request.duration.by.service.95p": Metric("latency_p95", "gauge", SECOND, 0.001),
}
TAG_KEYS = ("service", "env")
_MOD = r"\.(?:as_rate|as_count)\(\)|\.rollup\(\s*\w+\s*(?:,\s*\d+\s*)?\)"
_QUERY = re.compile(
    rf"^\s*(?:(?P<agg>avg|sum|min|max):)?(?P<metric>[A-Za-z][\w.]*)\{{(?P<scope>[^{{}}]*)\}}"
    rf"(?P<mods>(?:{_MOD})*)(?:\s+by\s+\{{(?P<by>[^{{}}]*)\}})?(?P<mods2>(?:{_MOD})*)\s*$"
)


class DatadogError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def _err(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status)


def _split_queries(q: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in q:
        depth += ch in "{(" and 1 or (ch in "})" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def _spatial(agg: str, values: list[float]) -> float:
    return {"avg": lambda v: sum(v) / len(v), "sum": sum, "min": min, "max": max}[agg](values)


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


def build(sb: Any) -> FastAPI:
    app = FastAPI(title="Datadog (sandbox)", docs_url=None, redoc_url=None, openapi_url=None)
    creds = sb.credentials
    store = sb.store("datadog")
    with store.lock:
        store.data.setdefault("events", [])
        store.data.setdefault("monitor_states", {})
        store.data.setdefault("created", sb.clock().timestamp())
        store.save()

    @app.exception_handler(DatadogError)
    def _dd_error(_: Request, exc: DatadogError) -> JSONResponse:
        return _err(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _err(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()]
        return _err(400, *msgs)

    @app.exception_handler(Exception)
    def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("datadog stand-in: unhandled error")
        return _err(500, "Internal Server Error")

    def auth(request: Request, app_key: bool = True) -> None:
        def ok(header: str, secret: Any) -> bool:
            given = request.headers.get(header, "")
            return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())

        if not ok("DD-API-KEY", creds.datadog_api_key) or (
            app_key and not ok("DD-APPLICATION-KEY", creds.datadog_app_key)
        ):
            raise DatadogError(403, "Forbidden")

    @app.get("/api/v1/validate")
    def validate(request: Request) -> dict[str, Any]:
        auth(request, app_key=False)
        return {"valid": True}

    # -- metrics --------------------------------------------------------------------------------------------------
    def one_query(text: str, index: int, start: int, end: int) -> list[dict[str, Any]]:
        m = _QUERY.match(text)
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
        if metric is None or any(k not in TAG_KEYS or (k == "env" and v != "sandbox") for k, v in filters.items()):
            return []
        services = [s for s in SERVICES if filters.get("service", s) == s]
        if any(b not in TAG_KEYS for b in by):
            return []
        groups: dict[tuple[str, ...], list[str]] = {}
        for svc in services:
            key = tuple(f"{b}:{svc if b == 'service' else 'sandbox'}" for b in by)
            groups.setdefault(key, []).append(svc)
        as_rate = metric.kind == "count" and ".as_rate()" in mods
        factor = metric.scale * (interval if metric.kind == "count" and not as_rate else 1)
        base_scope = [f"{k}:{v}" for k, v in filters.items()]
        out = []
        for tag_set, svcs in sorted(groups.items()):
            per_ts: dict[int, list[float]] = {}
            for svc in svcs:
                for ts, v in sb.world.series(svc, metric.world, start, end, interval):
                    if v is not None:
                        per_ts.setdefault(ts, []).append(v * factor)
            if not per_ts:
                continue
            space = agg or "avg"
            points = [[ts, _spatial(space, vs)] for ts, vs in sorted(per_ts.items())]
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

    @app.get("/api/v1/query")
    def query_metrics(request: Request) -> dict[str, Any]:
        auth(request)
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
        series = [s for i, part in enumerate(_split_queries(q)) for s in one_query(part, i, start, end)]
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

    # -- monitors -------------------------------------------------------------------------------------------------
    def state_of(mon: MonitorDef) -> tuple[str, float | None, int | None]:
        """Current state, when it last changed (epoch s) and the last trigger (epoch s), tracked across reads."""
        state = sb.world.monitor_state(mon)
        now = sb.clock().timestamp()
        with store.lock:
            rec = store.data["monitor_states"].setdefault(str(mon.id), {"state": None, "since": None, "fired": None})
            if rec["state"] != state:
                # first evaluation: the state is taken to hold since the monitor was created
                rec.update(state=state, since=now if rec["state"] is not None else store.data["created"])
                if state == "Alert":
                    rec["fired"] = now
                store.save()
            return state, rec["since"], rec["fired"]

    def monitor_json(mon: MonitorDef, downtimes: bool = True) -> dict[str, Any]:
        state, since, _ = state_of(mon)
        created = store.data["created"]
        unit = "errors/s" if mon.kind == "errors" else "s"
        body = {
            "id": mon.id,
            "org_id": ORG_ID,
            "type": "query alert",
            "name": mon.name,
            "message": (
                f"{{{{#is_alert}}}}{mon.name}: {{{{value}}}} {unit} (threshold {{{{threshold}}}}){{{{/is_alert}}}}\n"
                "@webhook-fixloop"
            ),
            "tags": mon.tags,
            "query": mon.query,
            "options": {
                "notify_audit": False,
                "locked": False,
                "include_tags": True,
                "thresholds": {"critical": mon.critical, "warning": mon.warning},
                "new_host_delay": 300,
                "require_full_window": False,
                "notify_no_data": False,
                "renotify_interval": 0,
                "escalation_message": "",
                "evaluation_delay": 60,
                "no_data_timeframe": None,
                "notification_preset_name": "show_all",
                "on_missing_data": "default",
                "timeout_h": 0,
                "groupby_simple_monitor": False,
                "silenced": {},
            },
            "multi": False,
            "created_at": int(created * 1000),
            "created": iso(created),
            "modified": iso(created),
            "deleted": None,
            "restricted_roles": None,
            "priority": mon.priority,
            "restriction_policy": None,
            "overall_state_modified": iso(since) if since else None,
            "overall_state": state,
            "creator": dict(CREATOR),
        }
        if downtimes:
            body["matching_downtimes"] = []
        return body

    def scope_tags(mon: MonitorDef) -> set[str]:
        m = re.search(r"\{([^}]*)\}", mon.query)
        return {t.strip() for t in (m[1] if m else "").split(",") if t.strip()}

    @app.get("/api/v1/monitor/search")
    def search_monitors(request: Request, query: str = "", page: int = 0, per_page: int = 30) -> dict[str, Any]:
        auth(request)
        if page < 0 or not 1 <= per_page <= 1000:
            raise DatadogError(400, "Invalid pagination: page >= 0, 1 <= per_page <= 1000")
        terms = re.findall(r'(\w+):("[^"]*"|\S+)|(\S+)', query)
        rows = [(mon, state_of(mon)) for mon in MONITORS]
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
                rows = [r for r in rows if want in r[0].tags or want in scope_tags(r[0])]
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
                    "scopes": sorted(scope_tags(mon)),
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

    @app.get("/api/v1/monitor/{monitor_id}")
    def get_monitor(request: Request, monitor_id: str) -> dict[str, Any]:
        auth(request)
        mon = sb.world.monitor(int(monitor_id)) if monitor_id.isdigit() else None
        if mon is None:
            raise DatadogError(404, "Monitor not found")
        return monitor_json(mon, downtimes=request.query_params.get("with_downtimes", "").lower() == "true")

    @app.get("/api/v1/monitor")
    def list_monitors(
        request: Request,
        name: str | None = None,
        tags: str | None = None,
        monitor_tags: str | None = None,
        id_offset: int | None = None,
        page: int | None = None,
        page_size: int | None = None,
    ) -> list[dict[str, Any]]:
        auth(request)
        want_scope = {t.strip() for t in (tags or "").split(",") if t.strip()}
        want_tags = {t.strip() for t in (monitor_tags or "").split(",") if t.strip()}
        mons = [
            m
            for m in MONITORS
            if (not name or name.lower() in m.name.lower())
            and want_scope <= scope_tags(m)
            and want_tags <= set(m.tags)
            and (id_offset is None or m.id > id_offset)
        ]
        if page is not None or page_size is not None:
            size = page_size or 100
            if (page or 0) < 0 or not 1 <= size <= 1000:
                raise DatadogError(400, "Invalid pagination: page >= 0, 1 <= page_size <= 1000")
            mons = mons[(page or 0) * size : ((page or 0) + 1) * size]
        return [monitor_json(m) for m in mons]

    # -- events ---------------------------------------------------------------------------------------------------
    @app.post("/api/v1/events", status_code=202)
    def create_event(request: Request, body: EventIn) -> dict[str, Any]:
        auth(request, app_key=False)
        with store.lock:
            seq = len(store.data["events"]) + 1
            event_id = 7_300_000_000_000_000_000 + seq
            event = {
                "id": event_id,
                "id_str": str(event_id),
                "title": body.title,
                "text": body.text,
                "date_happened": body.date_happened or int(sb.clock().timestamp()),
                "handle": None,
                "priority": body.priority,
                "related_event_id": body.related_event_id,
                "tags": body.tags,
                "url": sb.url("/datadog", f"/event/event?id={event_id}"),
            }
            store.data["events"].append(
                {**event, "aggregation_key": body.aggregation_key, "alert_type": body.alert_type, "host": body.host}
            )
            store.save()
        return {"status": "ok", "event": event}

    def _ts(value: str | None, default: float) -> float:
        if not value:
            return default
        now = sb.clock().timestamp()
        rel = re.fullmatch(r"now(?:-(\d+)([smhd]))?", value)
        if rel:
            return now - (int(rel[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[rel[2]] if rel[1] else 0)
        if value.isdigit():
            return int(value) / 1000
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise DatadogError(400, f"Invalid time: {value!r}") from None

    @app.get("/api/v2/events")
    def list_events(request: Request) -> dict[str, Any]:
        auth(request)
        p = request.query_params
        now = sb.clock().timestamp()
        lo, hi = _ts(p.get("filter[from]"), now - 900), _ts(p.get("filter[to]"), now)
        words = (p.get("filter[query]") or "").split()
        try:
            limit = int(p.get("page[limit]") or 10)
            offset = int(base64.urlsafe_b64decode(p["page[cursor]"] + "==").decode()) if p.get("page[cursor]") else 0
        except ValueError:
            raise DatadogError(400, "Invalid page[limit] or page[cursor]") from None
        with store.lock:
            events = [
                e
                for e in store.data["events"]
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

    return app


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
