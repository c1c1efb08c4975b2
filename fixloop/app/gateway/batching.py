"""Micro-batching: the deliveries of one scope that arrive within FIXLOOP_GATEWAY_BATCH_WINDOW_MS travel to Temporal
in one call, in batches of at most FIXLOOP_GATEWAY_BATCH_MAX_BYTES of signal JSON, at most one call per scope in
flight (later deliveries gather for the next one). Every delivery's request is answered from its call's outcome."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.service import RPCError, RPCStatusCode

from fixloop.app.gateway.metrics import Metrics
from fixloop.app.gateway.requests import Rejected, Unavailable
from fixloop.app.gateway.settings import GatewaySettings
from fixloop.core.models import Signal, SignalTooLarge, signal_bytes
from fixloop.core.parsing import clean
from fixloop.workflows.contracts.intake import intake_id

log = logging.getLogger(__name__)

Send = Callable[[str, list[Signal]], Awaitable[str]]  # (scope, signals) -> the intake's workflow id

_TOO_LARGE = re.compile(r"size limit|too large|larger than max|exceeds.*(size|limit)", re.IGNORECASE)


def refused(e: BaseException) -> Rejected:
    """The answer to a failed ``submit_signals``: 413 for a payload Temporal refuses by its size (``SignalTooLarge``;
    the server's blob size limit is ``INVALID_ARGUMENT``, a request over gRPC's message size ``RESOURCE_EXHAUSTED``
    naming the size), else ``Unavailable`` (503, retry)."""
    if isinstance(e, SignalTooLarge) or (
        isinstance(e, RPCError)
        and e.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.RESOURCE_EXHAUSTED)
        and _TOO_LARGE.search(e.message or "")
    ):
        return Rejected(413, "too_large", f"Temporal refused the signals as too large: {clean(e, 200)}", "body")
    return Unavailable()


@dataclass
class Delivery:
    """One delivery's signals waiting for Temporal, their JSON bytes, and the future its request awaits."""

    signals: list[Signal]
    size: int
    future: asyncio.Future[str]


@dataclass
class Collector:
    """Deliveries for one scope waiting for the next ``submit_signals`` call, and the task that makes it."""

    waiting: deque[Delivery] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Batcher:
    """The collectors of every scope; ``send(scope, signals)`` makes one Temporal call (``submit_signals``, which
    splits what is over the byte budget across signal-with-starts) and returns the intake's workflow id."""

    def __init__(self, settings: GatewaySettings, metrics: Metrics, send: Send) -> None:
        self.settings = settings
        self.metrics = metrics
        self._send = send
        self._collectors: dict[str, Collector] = {}

    async def submit(self, scope: str, signals: list[Signal]) -> str:
        """Deliver ``signals`` to the intake of ``scope`` together with the other deliveries of the batch window;
        the intake's workflow id once Temporal has recorded all of them, ``Unavailable`` if it did not. A signal that
        alone is over FIXLOOP_GATEWAY_BATCH_MAX_BYTES (impossible for a validated ``Signal``: it is at most
        ``SIGNAL_MAX_BYTES``) is a 413 naming the record, before anything is sent."""
        size = 0
        for s in signals:
            n = signal_bytes(s)
            if n > self.settings.batch_max_bytes - 2:
                where = s.raw_ref.partition("#")[2] or "body"
                raise Rejected(413, "too_large", f"a signal of {n} bytes is over the batch budget", where)
            size += n + 1
        collector = self._collectors.setdefault(scope, Collector())
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        collector.waiting.append(Delivery(signals, size, future))
        if collector.task is None:
            collector.task = asyncio.create_task(self._flush(scope, collector), name=f"gateway-batch-{scope}")
        return await future

    def _next_batch(self, collector: Collector) -> list[Delivery]:
        """The waiting deliveries that go in the next call: in arrival order, while their signals fit
        FIXLOOP_GATEWAY_BATCH_MAX_BYTES (at least one; ``submit_signals`` splits a larger delivery across calls)."""
        budget = self.settings.batch_max_bytes
        batch = [collector.waiting.popleft()]
        size = batch[0].size
        while collector.waiting and size + collector.waiting[0].size <= budget:
            size += collector.waiting[0].size
            batch.append(collector.waiting.popleft())
        return batch

    async def _flush(self, scope: str, collector: Collector) -> None:
        """Send the collector's deliveries after the batch window, in calls of at most FIXLOOP_GATEWAY_BATCH_MAX_BYTES
        (``_next_batch``); repeat while more gathered during a call (they have waited already: no second window).
        Each delivery's future gets its call's outcome: Temporal refusing a payload as too large is a 413 (retrying
        cannot help; the byte budgets make it a bug), any other failure ``Unavailable``."""
        try:
            await asyncio.sleep(self.settings.batch_window_ms / 1000)
            while collector.waiting:
                batch = self._next_batch(collector)
                signals = [s for d in batch for s in d.signals]
                m = self.metrics
                m.batch_signals.observe(len(signals))
                m.batch_deliveries.observe(len(batch))
                started = time.perf_counter()
                wid, error = "", None
                try:
                    wid = await asyncio.wait_for(self._send(scope, signals), self.settings.temporal_timeout)
                except Exception as e:
                    error = e
                    if not isinstance(e, Unavailable):
                        log.warning(
                            "signal-with-start of %s failed: %s: %s", intake_id(scope), type(e).__name__, clean(e, 300)
                        )
                m.temporal_seconds.observe(time.perf_counter() - started)
                m.temporal_calls.labels("ok" if error is None else "failed").inc()
                for d in batch:
                    if not d.future.done():
                        if error is None:
                            d.future.set_result(wid)
                        else:
                            d.future.set_exception(refused(error))
        finally:
            collector.task = None
            while collector.waiting:  # cancelled while deliveries waited (shutdown): they must not hang
                d = collector.waiting.popleft()
                if not d.future.done():
                    d.future.set_exception(Unavailable())
