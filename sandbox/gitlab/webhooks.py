"""GitLab's webhook deliveries: each "Merge Request Hook" recorded under ``hook_deliveries`` (the newest
``MAX_DELIVERIES``) and, with ``sb.config.gitlab_webhook_url`` set, POSTed in order by one background thread with
GitLab's headers (``X-Gitlab-Event``, ``X-Gitlab-Token``, ``X-Gitlab-Event-UUID``, ``X-Gitlab-Webhook-UUID``,
``X-Gitlab-Instance``; docs.gitlab.com/user/project/integrations/webhooks/). The payload is built by
``GitLab.emit``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from fixloop.sandbox.gitlab.wire import MAX_DELIVERIES, PREFIX, VERSION, ts
from fixloop.sandbox.outbox import Outbox
from fixloop.sandbox.store import JsonStore


class MergeRequestHooks:
    """The deliveries of one GitLab instance (5 s per request; the sender ends after a second without hooks)."""

    def __init__(self, sb: Any, store: JsonStore) -> None:  # sb: fixloop.sandbox.app.Sandbox
        self.sb = sb
        self.store = store
        self.outbox = Outbox("gitlab-webhooks", self._deliver, timeout=5.0, idle=1.0)

    def send(self, payload: dict[str, Any], iid: int, action: str) -> None:
        """Record the delivery of ``payload`` (merge request ``iid``, ``action``) and queue it when a URL is set."""
        url = self.sb.config.gitlab_webhook_url
        delivery = {
            "uuid": str(uuid.uuid4()),
            "iid": iid,
            "action": action,
            "at": ts(self.sb.clock()),
            "url": url,
            "status": None,
            "error": None if url else "no webhook url configured",
        }
        with self.store.lock:
            deliveries = self.store.data["hook_deliveries"]
            deliveries.append(delivery)
            del deliveries[:-MAX_DELIVERIES]
            self.store.save()
        if url:
            self.outbox.put((payload, delivery))

    def _deliver(self, client: httpx.Client, item: tuple[dict[str, Any], dict[str, Any]]) -> None:
        payload, delivery = item
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"GitLab/{VERSION}",
            "X-Gitlab-Event": "Merge Request Hook",
            "X-Gitlab-Token": self.sb.credentials.gitlab_webhook_token.get_secret_value(),
            "X-Gitlab-Event-UUID": delivery["uuid"],
            "X-Gitlab-Webhook-UUID": self.store.data["webhook_uuid"],
            "X-Gitlab-Instance": self.sb.url(PREFIX),
        }
        status, error = None, None
        try:
            resp = client.post(delivery["url"], content=json.dumps(payload), headers=headers)
            status = resp.status_code
        except httpx.HTTPError as e:
            error = type(e).__name__
        with self.store.lock:
            for d in self.store.data["hook_deliveries"]:
                if d["uuid"] == delivery["uuid"]:
                    d["status"], d["error"] = status, error
            self.store.save()
