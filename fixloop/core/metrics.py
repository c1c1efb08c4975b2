"""fixloop's business metrics: what the workflows and activities count and measure, by name, kind and labels.

The workflows record them on ``workflow.metric_meter()`` (replay-safe: nothing is recorded while a worker replays
a history) and the activities on ``activity.metric_meter()``; the worker's Temporal runtime exports them with the
SDK's own metrics at ``FIXLOOP_WORKER_METRICS_ADDRESS``/metrics in the Prometheus text format, under these names
(counters without a ``_total`` suffix, as the SDK's own: ``PrometheusConfig.counters_total_suffix`` is off), with
the labels below plus the SDK's: ``namespace``, ``task_queue`` and ``workflow_type`` (workflows) or
``activity_type`` (activities), and ``service_name``. A histogram's buckets are ``buckets`` (seconds), which the
worker's runtime sets (``PrometheusConfig.histogram_bucket_overrides``).

This module is the catalogue only (no I/O): ``fixloop.workflows.options`` records, the README's table and
``deploy/`` (the Grafana dashboard, the Prometheus rules) name these, and tests check that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MetricKind(StrEnum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Metric:
    """One metric: its Prometheus ``name``, ``kind``, the ``labels`` fixloop sets (each a small closed set of
    values), what it counts (``description``), its ``unit`` and, for a histogram, its bucket bounds."""

    name: str
    kind: MetricKind
    labels: tuple[str, ...]
    description: str
    unit: str = ""
    buckets: tuple[float, ...] = ()

    def series(self) -> tuple[str, ...]:
        """The names of its Prometheus series: the name, or a histogram's ``_bucket``, ``_sum`` and ``_count``."""
        if self.kind is MetricKind.HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
LEAD_TIME_BUCKETS = (
    MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, DAY, 2 * DAY, 4 * DAY, 7 * DAY,
    14 * DAY,
)  # fmt: skip

LOOPS_STARTED = Metric(
    "fixloop_loops_started",
    MetricKind.COUNTER,
    ("kind",),
    "Remediation loops started (a loop's first run; continue-as-new is not a start), by work item kind.",
)
LOOPS_FINISHED = Metric(
    "fixloop_loops_finished",
    MetricKind.COUNTER,
    ("outcome", "kind"),
    "Remediation loops ended, by outcome (verified, reverted, mr_closed, approval_expired, ...) and work item kind.",
)
STAGE_ENTERED = Metric(
    "fixloop_stage_entered",
    MetricKind.COUNTER,
    ("stage",),
    "Stages a loop entered (open_work_item, plan_change, await_approval, verify, done, ...), each entry once.",
)
VERDICTS = Metric(
    "fixloop_verdicts",
    MetricKind.COUNTER,
    ("result",),
    "Verification verdicts, by result (pass, fail, marginal, no_data), one per verified environment.",
)
TRIAGE_FALLBACKS = Metric(
    "fixloop_triage_fallbacks",
    MetricKind.COUNTER,
    ("reason",),
    "Triage calls (a window, or a chunk of one) the llm engine did not triage, so rules did: llm_error (the "
    "endpoint or its answer failed; the activity fell back) or activity_failed (the llm triage activity failed; the "
    "intake triaged with rules).",
)
INTAKE_SIGNALS = Metric(
    "fixloop_intake_signals",
    MetricKind.COUNTER,
    ("result",),
    "Signals an intake received, by result: new (collected for triage) or duplicate (a fingerprint seen before).",
)
INTAKE_WINDOWS = Metric(
    "fixloop_intake_windows",
    MetricKind.COUNTER,
    ("closed_by",),
    "Intake windows closed and triaged, by what closed them (quiet, age, size, carry).",
)
TIME_TO_MERGE = Metric(
    "fixloop_time_to_merge_seconds",
    MetricKind.HISTOGRAM,
    ("gate",),
    "Seconds from a loop's start to the merge of a merge request that passed its human gate (GitLab's merged_at, "
    "else when the loop read it), by gate: change, promotion or rollback.",
    unit="s",
    buckets=LEAD_TIME_BUCKETS,
)
TIME_TO_VERIFY = Metric(
    "fixloop_time_to_verify_seconds",
    MetricKind.HISTOGRAM,
    (),
    "Seconds from a loop's start to its end as verified (the fix deployed everywhere and its verification passed).",
    unit="s",
    buckets=LEAD_TIME_BUCKETS,
)

METRICS = (
    LOOPS_STARTED,
    LOOPS_FINISHED,
    STAGE_ENTERED,
    VERDICTS,
    TRIAGE_FALLBACKS,
    INTAKE_SIGNALS,
    INTAKE_WINDOWS,
    TIME_TO_MERGE,
    TIME_TO_VERIFY,
)


def bucket_overrides() -> dict[str, list[float]]:
    """The histograms' buckets by metric name, as ``PrometheusConfig.histogram_bucket_overrides`` takes them."""
    return {m.name: list(m.buckets) for m in METRICS if m.kind is MetricKind.HISTOGRAM}
