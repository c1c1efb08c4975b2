"""What the monitoring files of ``deploy/`` may name: the series fixloop serves (the worker's business metrics,
``fixloop.core.metrics``, and the gateway's, ``fixloop.app.gateway.metrics``) and the Temporal SDK's
(``fixtures/temporal_sdk_metrics.txt``); and Debian's ``promtool``, which checks rules offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fixloop.app.gateway.metrics import Metrics
from fixloop.core.metrics import METRICS

FIXTURES = Path(__file__).parent / "fixtures"
PROMTOOL = "/usr/bin/promtool"  # Debian's prometheus package


def sdk_series() -> set[str]:
    """The series names of the Temporal SDK's metrics (a histogram's ``_bucket``, ``_sum`` and ``_count``)."""
    out = set()
    for line in (FIXTURES / "temporal_sdk_metrics.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind = line.split()
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return out


def fixloop_series() -> set[str]:
    """The series fixloop serves: the worker's catalogue and the gateway's registry (prometheus-client's names: a
    counter's ``_total``, a histogram's ``_bucket``, ``_sum`` and ``_count``, and their ``_created``)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    gateway = {f.name + suffix for f in Metrics().registry.collect() for suffix in suffixes.get(f.type, ("",))}
    return {s for m in METRICS for s in m.series()} | gateway


def promtool() -> str:
    """The promtool binary; a skip without it, a failure in CI (``CI=true``), where it must be installed."""
    found = shutil.which("promtool") or (PROMTOOL if Path(PROMTOOL).is_file() else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: apt-get install prometheus (it provides /usr/bin/promtool)")
        pytest.skip("promtool is missing: apt-get install prometheus")
    return found
