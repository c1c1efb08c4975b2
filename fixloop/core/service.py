"""Which service a work item's change touches: the one answer shared by planning (``PlannedChange.service``), the
remediation loop (the service it tells the intake it is fixing, and the one it verifies) and verification (the
Datadog ``service`` tag it queries); and, at triage, the service a scanned artifact is (``ServiceNames``). Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fixloop.core.models import Signal, WorkItem
from fixloop.core.topology import EntityKind, Topology
from fixloop.core.verification import TAG_VALUE

_SERVICE_PATH = re.compile(r"^(?:services|apps/base|apps/[^/]+|charts)/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/")
_TAG_OR_DIGEST = re.compile(r"(@[^/]*|:[^/:]*)$")


def image_repository(reference: str) -> str:
    """An image reference without its digest and tag: ``registry:5000/shop/catalog:1.4.2@sha256:ab..`` ->
    ``registry:5000/shop/catalog`` (a registry's port is kept). Anything else comes back unchanged."""
    return _TAG_OR_DIGEST.sub("", _TAG_OR_DIGEST.sub("", reference))


def image_name(reference: str) -> str:
    """The last path segment of an image reference's repository: ``registry:5000/shop/catalog:1.4.2`` -> ``catalog``
    (a path without a tag: its last segment)."""
    return image_repository(reference).rsplit("/", 1)[-1]


def service_of_paths(paths: Iterable[str]) -> str | None:
    """The service a change is to, by the GitOps repository's layout: ``services/<svc>/...`` (Dockerfiles,
    lockfiles), ``apps/base/<svc>/...`` or ``apps/<env>/<svc>/...`` (manifests), ``charts/<svc>/...``; the name is
    the service's Datadog ``service`` tag. None when the paths name no service or several."""
    names = services_of_paths(paths)
    return names[0] if len(names) == 1 else None


def services_of_paths(paths: Iterable[str]) -> list[str]:
    """Every service a change is to (``service_of_paths``' layout), sorted: one bump of a package across the
    manifests of several services (``per-package`` grouping) names each of them."""
    return sorted({m.group(1) for p in paths if (m := _SERVICE_PATH.match(p))})


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
        name = image_name(item.artifact)
        return name if TAG_VALUE.match(name) else None
    return None


@dataclass(frozen=True)
class ServiceNames:
    """What triage names a scanned artifact's service from: ``images`` maps an image repository (no tag, no digest)
    to its service (``fixloop.yaml`` ``images:``, ``fixloop.core.change.images.ImageChain.services``), ``services``
    holds the names known to be services (the topology's, ``fixloop.core.topology``, and those of ``images``).

    A scanner names what it scanned, not the service: an image reference (``registry.example.com/shop/catalog:1.4``),
    a directory, a tarball, a project name. ``of_artifact`` names the service only where fixloop knows it: the
    image repository is in ``images``; or the artifact's or the target's path is in a service's folder of the
    GitOps repository (``services/<svc>/...``, ``service_of_paths``), or the image's name (the repository's last
    path segment) is itself a name, and that name is in ``services``. Anything else (a path to a tarball, an
    unknown image, a project name no topology knows) is no service."""

    images: Mapping[str, str] = field(default_factory=dict)
    services: frozenset[str] = frozenset()

    @classmethod
    def of(cls, topology: Topology | None = None, images: Mapping[str, str] | None = None) -> ServiceNames:
        """The names of ``topology``'s services and of ``images`` (repository -> service, e.g.
        ``ImageChain.services()``)."""
        known = {e for e, kind in (topology.entities.items() if topology else ()) if kind is EntityKind.SERVICE}
        return cls(images=dict(images or {}), services=frozenset(known | set((images or {}).values())))

    def of_artifact(self, artifact: str | None, target: str | None = None) -> str | None:
        """The service ``artifact`` (what was scanned; ``target``: the manifest or OS inside it) is, or None (see the
        class docstring)."""
        if artifact and (found := self.images.get(image_repository(artifact))):
            return found
        in_folder = service_of_paths(p for p in (f"{artifact}/" if artifact else None, target) if p)
        if in_folder in self.services:
            return in_folder
        name = image_name(artifact) if artifact else None
        return name if name in self.services else None
