"""The catalogue of business metrics (``fixloop.core.metrics``): valid Prometheus names, the buckets the worker's
runtime gets, the README's table, and each one recorded by a workflow or an activity (their values at a worker's
``/metrics``: ``tests/workflows/test_business_metrics.py``)."""

from __future__ import annotations

import re
from pathlib import Path

from fixloop.core import metrics
from fixloop.core.metrics import METRICS, MetricKind, bucket_overrides

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")  # the Prometheus data model's metric and label names
SDK_LABELS = {"namespace", "task_queue", "workflow_type", "activity_type", "service_name", "le"}


def test_names_and_labels_are_prometheus_names_and_never_the_sdks() -> None:
    names = [m.name for m in METRICS]
    assert len(set(names)) == len(names)
    for m in METRICS:
        assert NAME.match(m.name) and m.name.startswith("fixloop_") and not m.name.startswith("fixloop_gateway_")
        assert all(NAME.match(label) and not label.startswith("__") for label in m.labels), m.name
        assert not set(m.labels) & SDK_LABELS, m.name  # the SDK sets those; one of ours would clash
        assert (m.kind is MetricKind.HISTOGRAM) == m.name.endswith("_seconds") == bool(m.buckets)


def test_the_runtime_gets_every_histograms_buckets_ascending() -> None:
    overrides = bucket_overrides()
    assert set(overrides) == {m.name for m in METRICS if m.kind is MetricKind.HISTOGRAM}
    for buckets in overrides.values():
        assert buckets == sorted(set(buckets)) and buckets[0] > 0


def test_the_readme_table_lists_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| metric | kind | labels | what |", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()[1:]]
    expected = [
        [f"`{m.name}`", m.kind.value, ", ".join(f"`{x}`" for x in m.labels) or "-", m.description] for m in METRICS
    ]
    assert rows == expected


def test_every_metric_is_recorded_by_a_workflow_or_an_activity() -> None:
    code = "".join(p.read_text() for d in ("workflows", "activities") for p in (ROOT / d).glob("*.py"))
    constants = {v.name: k for k, v in vars(metrics).items() if isinstance(v, metrics.Metric)}
    for m in METRICS:
        assert re.search(rf"\b{constants[m.name]}\b", code), m.name
