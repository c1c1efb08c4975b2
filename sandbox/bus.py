"""In-process events between stand-ins (e.g. GitLab's push to a branch wakes the Flux reconciler)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Topics and their payloads:
#   "git.push"       {"project": "<namespace/path>", "branch": "<name>", "before": "<sha>|None", "after": "<sha>",
#                     "user_id": <GitLab user id>}
#   "registry.read"  {"name": "<repository>"}: the registry is about to answer (the CI stand-in finishes what is due)
Handler = Callable[[dict[str, Any]], None]


class Bus:
    """Synchronous publish/subscribe; a failing subscriber is logged, never breaks the publisher."""

    def __init__(self) -> None:
        self._subs: dict[str, list[Handler]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, topic: str, handler: Handler) -> None:
        with self._lock:
            self._subs[topic].append(handler)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        with self._lock:
            handlers = list(self._subs[topic])
        for handler in handlers:
            try:
                handler(payload)
            except Exception:
                log.exception("sandbox: subscriber of %s failed", topic)
