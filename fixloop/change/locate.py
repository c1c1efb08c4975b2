"""Locate: where in the GitOps repository the fix of a work item lives.

Paths always come from the repository's own listing, never from signal text: a target such as
``../../.gitlab-ci.yml`` can only narrow a choice among files that exist, are allowed, and hold the pin.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict

from fixloop.change.edit import from_lines, go_requires, python_pins, spec_version
from fixloop.change.ops import PolicyViolation, check_path
from fixloop.change.policy import Policy
from fixloop.models import Signal, WorkItem, WorkItemKind
from fixloop.parsing import clean


class RepoView(Protocol):
    """A read-only view of the repository at one commit."""

    def list(self) -> Iterable[str]:
        """Every file path (relative, ``/``-separated)."""
        ...

    def read(self, path: str) -> str | None:
        """The text of ``path``, None if there is no such file."""
        ...


@dataclass(frozen=True)
class MappingRepo:
    """A ``RepoView`` over ``{path: text}`` (e.g. ``sandbox.seed.seed_files()``)."""

    files: Mapping[str, str]

    def list(self) -> Iterable[str]:
        return sorted(self.files)

    def read(self, path: str) -> str | None:
        return self.files.get(path)


def as_repo(repo: RepoView | Mapping[str, str]) -> RepoView:
    return MappingRepo(repo) if isinstance(repo, Mapping) else repo


class NotFixable(BaseModel):
    """A package (or image) of the work item no operation fixes, and why (a sentence for the MR and Jira)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str
    reason: str


@dataclass(frozen=True)
class Site:
    """One place a fix goes: a FROM line (``kind="image"``, ``current`` the full image reference) or a package pin
    (``current`` the version as the file writes it)."""

    kind: Literal["image", "pypi", "npm", "go"]
    path: str
    name: str
    current: str
    stage: int = 0
    lockfile: str | None = None
    direct: bool = True
    signals: tuple[Signal, ...] = ()


@dataclass
class Located:
    sites: list[Site] = field(default_factory=list)
    not_fixable: list[NotFixable] = field(default_factory=list)


def _files(repo: RepoView, policy: Policy, pattern: str) -> list[str]:
    """Repository files whose name matches ``pattern`` and which the policy lets fixloop change (sorted)."""
    out = []
    for path in repo.list():
        try:
            check_path(path)
        except PolicyViolation:
            continue
        if re.fullmatch(pattern, path.rsplit("/", 1)[-1]) and policy.allows(path):
            out.append(path)
    return sorted(out)


def _choose(paths: list[str], item: WorkItem) -> list[str] | None:
    """Among several candidate files, those of the work item's service (the artifact's image or directory name is a
    directory of the path); else all those its target names when it names a file path; else None (ambiguous)."""
    if len(paths) < 2:
        return paths
    for hint in (item.artifact, item.service):
        name = (hint or "").split("@")[0].rstrip("/").split("/")[-1].split(":")[0]
        by_service = [p for p in paths if name and name in p.split("/")[:-1]]
        if by_service:
            paths = by_service
            break
    if len(paths) < 2:
        return paths
    target = (item.target or "").strip().removeprefix("./")
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._/-]*", target) and ".." not in target:
        by_target = [p for p in paths if p == target or p.endswith("/" + target)]
        if by_target:
            return by_target
    return None


def _listing(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


# ---------------------------------------------------------------- os_rebuild

_OS_IN_TARGET = re.compile(r"\(([a-z][a-z0-9._-]*) ([0-9][A-Za-z0-9._+~-]*)\)\s*$")
OS_IMAGES = {  # scanner OS family -> the official image repositories of that OS
    "alpine": ("alpine",),
    "debian": ("debian",),
    "ubuntu": ("ubuntu",),
    "centos": ("centos",),
    "rocky": ("rockylinux",),
    "almalinux": ("almalinux",),
    "amazon": ("amazonlinux",),
    "oracle": ("oraclelinux",),
    "photon": ("photon",),
    "fedora": ("fedora",),
    "wolfi": ("wolfi-base",),
}


def scanned_os(signals: Sequence[Signal]) -> tuple[str, str] | None:
    """The ``(family, version)`` of the scanned OS: Trivy's ``<image> (alpine 3.9.4)`` target, else the purl's
    ``distro=`` qualifier of an apk package; the most common one across ``signals``."""
    found: Counter[tuple[str, str]] = Counter()
    for s in signals:
        if s.target and (m := _OS_IN_TARGET.search(s.target)):
            found[(m.group(1).lower(), m.group(2))] += 1
        elif s.purl and s.purl.startswith("pkg:apk/alpine/") and (m := re.search(r"distro=([0-9][\w.]*)", s.purl)):
            found[("alpine", m.group(1))] += 1
    return min(found, key=lambda k: (-found[k], k)) if found else None


def _image_matches(image: str, family: str, version: str) -> bool:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or "@" in image:
        return False
    return name.split("/")[-1] in OS_IMAGES.get(family, (family,)) and (tag == version or tag.startswith(version + "-"))


def locate_base_images(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> Located | str:
    os = scanned_os(signals)
    if os is None:
        return "the scan does not name the operating system release of the image, so its base image is unknown"
    family, version = os
    sites = []
    for path in _files(repo, policy, r"Dockerfile(\..+)?|.+\.[Dd]ockerfile"):
        for stage, (_, image) in enumerate(from_lines(repo.read(path) or "")):
            if _image_matches(image, family, version):
                sites.append(Site("image", path, image.rpartition(":")[0], image, stage=stage, signals=tuple(signals)))
    if not sites:
        return (
            f"no Dockerfile fixloop may change has a FROM on {family} {version}: the image is probably built on "
            "another base image (rebuild it on a patched one) or its Dockerfile is not in this repository"
        )
    paths = sorted({s.path for s in sites})
    chosen = _choose(paths, item)
    if chosen is None:
        return f"several Dockerfiles are FROM {family} {version} ({_listing(paths)}); the scan does not say which"
    return Located([s for s in sites if s.path in chosen])


# ---------------------------------------------------------------- dependency_bump

_MANIFESTS = {
    "pypi": r"requirements.*\.txt",
    "npm": r"package-lock\.json",
    "go": r"go\.mod",
}


def _python_sites(repo: RepoView, paths: list[str], package: str, installed: str) -> list[Site]:
    want = canonicalize_name(package)
    sites = []
    for path in paths:
        for _, name, version, _ in python_pins(repo.read(path) or ""):
            if canonicalize_name(name) == want and version == installed:
                sites.append(Site("pypi", path, name, version))
    return sites


def _go_sites(repo: RepoView, paths: list[str], module: str, installed: str) -> list[Site]:
    return [
        Site("go", path, module, version)
        for path in paths
        for _, mod, version in go_requires(repo.read(path) or "")
        if mod == module and version == installed
    ]


def _npm_sites(repo: RepoView, paths: list[str], package: str, installed: str, policy: Policy) -> list[Site]:
    sites = []
    for lockfile in paths:
        try:
            lock = json.loads(repo.read(lockfile) or "")
        except ValueError:
            continue
        if not isinstance(lock, dict):
            continue
        entries = [
            e
            for k, e in (lock.get("packages") or {}).items()
            if k == f"node_modules/{package}" or k.endswith(f"/node_modules/{package}")
        ] + [e for k, e in (lock.get("dependencies") or {}).items() if k == package]
        if not any(isinstance(e, dict) and e.get("version") == installed for e in entries):
            continue
        manifest = posixpath.join(posixpath.dirname(lockfile), "package.json")
        direct = False
        try:
            doc = json.loads(repo.read(manifest) or "{}")
        except ValueError:
            doc = {}
        for section in ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies"):
            spec = (doc.get(section) or {}).get(package) if isinstance(doc, dict) else None
            if spec is not None and (spec_version(spec) or ("", ""))[1] == installed:
                direct = True
        if direct and not policy.allows(manifest):
            continue
        sites.append(Site("npm", manifest, package, installed, lockfile=lockfile, direct=direct))
    return sites


def locate_packages(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> Located:
    by_package: dict[tuple[str, str, str], list[Signal]] = {}
    for s in sorted(signals, key=lambda s: s.fingerprint):
        if s.package and s.installed_version and s.ecosystem:
            by_package.setdefault((s.ecosystem, s.package, s.installed_version), []).append(s)
    located = Located()
    for (eco, package, installed), sigs in sorted(by_package.items()):
        shown = clean(package, 120)
        pattern = _MANIFESTS.get(eco)
        if pattern is None:
            reason = f"fixloop does not edit {clean(eco, 40)} manifests yet"
            located.not_fixable.append(NotFixable(package=shown, reason=reason))
            continue
        paths = _files(repo, policy, pattern)
        if eco == "pypi":
            sites = _python_sites(repo, paths, package, installed)
        elif eco == "go":
            sites = _go_sites(repo, paths, package, installed)
        else:
            sites = _npm_sites(repo, paths, package, installed, policy)
        paths = sorted({s.path for s in sites})
        chosen = _choose(paths, item)
        if not sites:
            reason = f"no file fixloop may change pins it at {clean(installed, 60)}"
            located.not_fixable.append(NotFixable(package=shown, reason=reason))
        elif chosen is None:
            reason = (
                f"pinned at {clean(installed, 60)} in several files ({_listing(paths)}); the scan does not say which"
            )
            located.not_fixable.append(NotFixable(package=shown, reason=reason))
        else:
            located.sites += [replace(s, signals=tuple(sigs)) for s in sites if s.path in chosen]
    return located


def locate(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> Located | str:
    """Where the fix of ``item`` goes: FROM lines for an ``os_rebuild``, pins for a ``dependency_bump``
    (requirements*.txt, package.json + package-lock.json, go.mod). A reason string (for a Jira comment) when
    nothing is located; packages that cannot be located are listed in ``not_fixable``."""
    if item.kind is WorkItemKind.OS_REBUILD:
        return locate_base_images(item, signals, repo, policy)
    if item.kind is WorkItemKind.DEPENDENCY_BUMP:
        return locate_packages(item, signals, repo, policy)
    return f"a {item.kind.value} work item is not fixed by a merge request"
