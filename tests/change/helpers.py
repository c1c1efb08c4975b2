"""Shared inputs of the change-planning tests: the seeded GitOps repository, real reports, a registry tag list."""

from __future__ import annotations

from collections.abc import Sequence

from fixloop.core.models import Signal, WorkItem, WorkItemKind
from fixloop.core.triage import triage_rules
from fixloop.sandbox.seed import seed_files
from tests.conftest import signals

SEED = seed_files()
# Tags as Docker Hub lists them (a subset): other lines, variants and floating tags must not be picked.
TAGS = {
    "alpine": ["3", "3.9", "3.9.4", "3.9.5", "3.9.6", "3.10", "3.10.0", "3.10.9", "latest", "edge"],
    "debian": [
        "10", "10.2", "10.3", "10.8-slim", "10.9", "10.10", "10.13", "10.13-slim", "11", "11.5", "buster", "buster-slim"
    ],
    "node": ["14", "14.17-alpine", "14.18-alpine", "14.21-alpine", "14.21.3-alpine", "16.20-alpine", "14.21"],
}


def tags(repository: str) -> Sequence[str]:
    return TAGS.get(repository, [])


def work_item(report: str, kind: WorkItemKind, target: str | None = None) -> tuple[WorkItem, list[Signal]]:
    """The rules engine's work item of ``kind`` (and ``target``) for a real report, with the report's signals."""
    found = signals(report)
    items = [w for w in triage_rules(found).work_items if w.kind is kind and (target is None or w.target == target)]
    assert len(items) == 1, [w.title for w in items]
    return items[0], found
