"""The gateway's Prometheus metrics (``GET /metrics``); their names and labels are listed in ``fixloop.app.gateway``'s
docstring."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """The gateway's Prometheus metrics, in their own registry (one per app)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.received = Counter(
            "fixloop_gateway_deliveries_received", "Requests received, per endpoint.", ["endpoint"], registry=r
        )
        self.accepted = Counter(
            "fixloop_gateway_deliveries_accepted",
            "Deliveries answered 2xx after Temporal recorded them.",
            ["endpoint"],
            registry=r,
        )
        self.ignored = Counter(
            "fixloop_gateway_deliveries_ignored",
            "Valid deliveries with nothing to do (answered 200 so the sender does not retry).",
            ["endpoint"],
            registry=r,
        )
        self.rejected = Counter(
            "fixloop_gateway_deliveries_rejected",
            "Requests answered 4xx/5xx, by reason.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.signals = Counter(
            "fixloop_gateway_signals_accepted", "Signals delivered to an intake, per source.", ["source"], registry=r
        )
        self.duplicates = Counter(
            "fixloop_gateway_signal_duplicates",
            "Signals whose fingerprint was repeated in one document or already delivered by this process.",
            ["source"],
            registry=r,
        )
        self.latency = Histogram(
            "fixloop_gateway_request_duration_seconds",
            "Time from the request to its answer, per endpoint.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_signals = Histogram(
            "fixloop_gateway_batch_signals",
            "Signals per Temporal call (micro-batch).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=r,
        )
        self.batch_deliveries = Histogram(
            "fixloop_gateway_batch_deliveries",
            "Deliveries per Temporal call (micro-batch).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.temporal_calls = Counter(
            "fixloop_gateway_temporal_calls", "submit_signals calls, by outcome (ok, failed).", ["outcome"], registry=r
        )
        self.temporal_seconds = Histogram(
            "fixloop_gateway_temporal_call_seconds",
            "Duration of each submit_signals call (all its signal-with-starts).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self._children: dict[str, tuple[Any, Any, Any, Any]] = {}

    def of(self, endpoint: str) -> tuple[Any, Any, Any, Any]:
        """The received, accepted and ignored counters and the latency histogram of ``endpoint`` (looked up once)."""
        found = self._children.get(endpoint)
        if found is None:
            found = self._children[endpoint] = (
                self.received.labels(endpoint),
                self.accepted.labels(endpoint),
                self.ignored.labels(endpoint),
                self.latency.labels(endpoint),
            )
        return found
