"""Outgoing webhook deliveries of a stand-in (GitLab's merge request hooks, Flux's notification events): in order, by
one background thread started on demand that ends once the queue has stayed empty for ``idle`` seconds, so a
mounted sub-application (which gets no lifespan events) leaves no thread to stop."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import httpx


class Outbox:
    """``put(item)`` queues ``item``; the sender thread calls ``send(client, item)`` for each, with one
    ``httpx.Client`` (``timeout`` seconds per request) for the thread's life. ``send`` records the outcome; an
    exception it raises is its own bug and ends the thread (the next ``put`` starts another)."""

    def __init__(self, name: str, send: Callable[[httpx.Client, Any], None], *, timeout: float, idle: float) -> None:
        self.name, self.send, self.timeout, self.idle = name, send, timeout, idle
        self._queue: queue.Queue[Any] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        self._queue.put(item)
        with self._lock:
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._sender.start()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                try:
                    item = self._queue.get(timeout=self.idle)
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._sender = None
                            return
                    continue
                self.send(client, item)
