"""Which service a work item's change touches: the one answer shared by planning (``PlannedChange.service``), the
remediation loop (the service it tells the intake it is fixing, and the one it verifies) and verification (the
Datadog ``service`` tag it queries). Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from fixloop.core.models import Signal, WorkItem
from fixloop.core.verification import TAG_VALUE

_SERVICE_PATH = re.compile(r"^(?:services|apps/base|apps/[^/]+|charts)/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/")
_TAG_OR_DIGEST = re.compile(r"(@[^/]*|:[^/:]*)$")


def service_of_paths(paths: Iterable[str]) -> str | None:
    """The service a change is to, by the GitOps repository's layout: ``services/<svc>/...`` (Dockerfiles,
    lockfiles), ``apps/base/<svc>/...`` or ``apps/<env>/<svc>/...`` (manifests), ``charts/<svc>/...``; the name is
    the service's Datadog ``service`` tag. None when the paths name no service or several."""
    names = {m.group(1) for p in paths if (m := _SERVICE_PATH.match(p))}
    return names.pop() if len(names) == 1 else None


def touched_service(item: WorkItem, signals: Sequence[Signal] = (), planned: str | None = None) -> str | None:
    """The service ``item``'s change touches: its own ``service`` (from its alerts), else the first of ``signals``
    that names one, else ``planned`` (the service of the planned change's paths, ``service_of_paths``)."""
    return item.service or next((s.service for s in signals if s.service), None) or planned


def service_of(item: WorkItem, override: str | None = None) -> str | None:
    """The Datadog ``service`` tag of ``item``: ``override``, else the service it touches (``touched_service``),
    else the image name of its ``artifact`` (``registry.example.com/shop/payments:1.2@sha256:...`` -> ``payments``);
    None when that is no plain tag value (``fixloop.core.verification.TAG_VALUE``)."""
    found = override or touched_service(item)
    if found:
        return found if TAG_VALUE.match(found) else None
    if item.artifact:
        name = _TAG_OR_DIGEST.sub("", _TAG_OR_DIGEST.sub("", item.artifact)).rsplit("/", 1)[-1]
        return name if TAG_VALUE.match(name) else None
    return None
