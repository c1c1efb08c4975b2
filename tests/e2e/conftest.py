"""The end-to-end tests share one xdist group: under ``make test`` (``-n 2 --dist loadgroup``) they run one after
another on one worker, while the other worker takes the rest of the suite. Each of them starts its own servers
(Temporal, the sandbox, Prometheus, a browser, the local model) and some judge timing, which two of them at once on
two cores would disturb; run alone (``pytest tests/e2e``) the mark changes nothing."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.xdist_group("e2e"))
