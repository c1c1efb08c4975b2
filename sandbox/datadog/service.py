"""The Datadog stand-in's state: the store (events, monitor states), the key check, and the monitors' evaluated
state and JSON; its routers take it as ``DD``."""

from __future__ import annotations

import hmac
import re
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
        """Current state, when it last changed (epoch s) and the last trigger (epoch s), tracked across reads."""
        state = self.sb.world.monitor_state(mon)
        now = self.sb.clock().timestamp()
        with self.store.lock:
            fresh = {"state": None, "since": None, "fired": None}
            rec = self.store.data["monitor_states"].setdefault(str(mon.id), fresh)
            if rec["state"] != state:
                # first evaluation: the state is taken to hold since the monitor was created
                rec.update(state=state, since=now if rec["state"] is not None else self.store.data["created"])
                if state == "Alert":
                    rec["fired"] = now
                self.store.save()
            return state, rec["since"], rec["fired"]

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
