"""The Datadog stand-in's state: the store (events, monitor states), the key check, and the monitors' evaluated
state and JSON; its routers take it as ``DD``."""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, Request

from fixloop.sandbox.datadog.wire import CREATOR, ORG_ID, DatadogError
from fixloop.sandbox.routes import service
from fixloop.sandbox.world import MonitorDef, iso


class Datadog:
    """One Datadog org over ``sb.world``."""

    def __init__(self, sb: Any) -> None:  # sb: fixloop.sandbox.app.Sandbox
        self.sb = sb
        self.store = sb.store("datadog")
        self.read: dict[int, float] = {}  # monitor id -> when its state was last evaluated (epoch s)
        with self.store.lock:
            self.store.data.setdefault("events", [])
            self.store.data.setdefault("monitor_states", {})
            self.store.data.setdefault("created", sb.clock().timestamp())
            self.store.save()

    def auth(self, request: Request, app_key: bool = True) -> None:
        def ok(header: str, secret: Any) -> bool:
            given = request.headers.get(header, "")
            return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())

        if not ok("DD-API-KEY", self.sb.credentials.datadog_api_key) or (
            app_key and not ok("DD-APPLICATION-KEY", self.sb.credentials.datadog_app_key)
        ):
            raise DatadogError(403, "Forbidden")

    def state_of(self, mon: MonitorDef) -> tuple[str, float | None, int | None]:
        """Current state, when it last changed (epoch s) and the last trigger (epoch s), tracked across reads.

        Datadog evaluates a monitor continuously, not when its API is read: a change seen at this read is dated at
        the world time the state began, found between the previous read and now (``_changed_at``), so two monitors
        read in one poll keep the order in which they really turned (a root-cause ranking reads that order)."""
        state = self.sb.world.monitor_state(mon)
        now = self.sb.clock().timestamp()
        with self.store.lock:
            fresh = {"state": None, "since": None, "fired": None}
            rec = self.store.data["monitor_states"].setdefault(str(mon.id), fresh)
            if rec["state"] != state:
                # first evaluation: the state is taken to hold since the monitor was created
                if rec["state"] is None:
                    since = self.store.data["created"]
                else:
                    since = self._changed_at(mon, state, self.read.get(mon.id), now)
                rec.update(state=state, since=since)
                if state == "Alert":
                    rec["fired"] = since
                self.store.save()
            self.read[mon.id] = now
            return state, rec["since"], rec["fired"]

    def _changed_at(self, mon: MonitorDef, state: str, last: float | None, now: float) -> float:
        """The earliest world time in ``(last, now]`` from which ``mon`` is in ``state`` (bisection to 10 ms; the
        state taken as changing once in the span), or ``now`` when there was no earlier read."""
        if last is None or last >= now:
            return now
        lo, hi = last, now
        while hi - lo > 0.01:
            mid = (lo + hi) / 2
            if self.sb.world.monitor_state(mon, datetime.fromtimestamp(mid, tz=UTC)) == state:
                hi = mid
            else:
                lo = mid
        return hi

    def monitor_json(self, mon: MonitorDef, downtimes: bool = True) -> dict[str, Any]:
        state, since, _ = self.state_of(mon)
        created = self.store.data["created"]
        unit = {"errors": "errors/s", "latency": "s"}.get(mon.kind, "containers")
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
                "thresholds": {"critical": mon.critical}
                | ({"warning": mon.warning} if mon.warning is not None else {}),
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

    @staticmethod
    def scope_tags(mon: MonitorDef) -> set[str]:
        m = re.search(r"\{([^}]*)\}", mon.query)
        return {t.strip() for t in (m[1] if m else "").split(",") if t.strip()}


DD = Depends(service)
