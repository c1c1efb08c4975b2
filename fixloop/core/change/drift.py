"""Version drift: the same package pinned at different versions across the repository's manifests and services.

Read from the manifests themselves, not from scans (a scan covers what was scanned; drift is what the repository
declares): every direct pin of a ``requirements*.txt`` (``name==version``), a ``pyproject.toml`` / ``Pipfile``
(a spec naming one version: a pin or a floor), a ``package.json`` (``3.3.9``, ``^3.3.9``, ``~3.3.9``,
``>=3.3.9`` in any dependency section), a ``go.mod`` ``require`` and a ``pom.xml`` ``<dependency>`` with a literal
``<version>`` (a ``${property}`` resolved through the POM's own ``<properties>``). Lockfiles are not read: what they
hold is the package manager's answer to those pins, and fixloop never edits them by hand.

``repository_pins`` lists the pins, ``version_drift`` groups them: a package (ecosystem and canonical name) whose
pins name two or more versions is a ``Drift``, its ``versions`` newest first, each with the files and services
(``fixloop.core.service.service_of_paths`` of the file) that pin it, and ``target``, the newest pinned version (the
one a consolidation would raise the others to: never a version no manifest has tested). ``drift_table`` is the
Markdown table a consolidation proposal shows (package and paths escaped: they are repository text).

Pure: no I/O. Bounded: at most ``MAX_FILES`` manifests of at most ``MAX_FILE_BYTES`` each are read, and at most
``MAX_DRIFTS`` packages reported (the rest counted, never dropped silently: ``DriftReport.more``).
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from fixloop.core.change.edit import (
    DEP_SECTIONS,
    PROPERTY_REF,
    go_requires,
    load_npm_json,
    pom_dependencies,
    pom_properties,
    python_pins,
    spec_version,
    toml_pins,
)
from fixloop.core.change.ops import PolicyViolation
from fixloop.core.markup import markdown
from fixloop.core.parsing import _UNCOMPARABLE, version_key
from fixloop.core.service import service_of_paths

MAX_FILES = 2_000
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_DRIFTS = 200
_REQUIREMENTS = re.compile(r"^requirements[\w.-]*\.(txt|in)$")


@dataclass(frozen=True, order=True)
class Pin:
    """One direct pin: ``ecosystem`` (pypi, npm, go, maven), ``package`` (canonical: PEP 503 for PyPI, as written
    elsewhere), ``version`` as written (no operator), ``path`` of the manifest, ``service`` it belongs to or None."""

    ecosystem: str
    package: str
    version: str
    path: str
    service: str | None = None


@dataclass(frozen=True)
class PinnedVersion:
    """One version of a drifting package: the files and the services (known ones) that pin it."""

    version: str
    paths: tuple[str, ...]
    services: tuple[str, ...]


@dataclass(frozen=True)
class Drift:
    """A package pinned at ``len(versions) >= 2`` versions; ``versions`` newest first; ``target`` the newest."""

    ecosystem: str
    package: str
    versions: tuple[PinnedVersion, ...]

    @property
    def target(self) -> str:
        return self.versions[0].version

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted({p for v in self.versions for p in v.paths}))

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted({s for v in self.versions for s in v.services}))

    @property
    def behind(self) -> tuple[str, ...]:
        """The files a consolidation would change: those pinning an older version than ``target``."""
        return tuple(sorted({p for v in self.versions[1:] for p in v.paths}))


@dataclass(frozen=True)
class DriftReport:
    """``drifts`` (at most ``MAX_DRIFTS``, most services first) and ``more``, how many were left out; ``skipped``:
    the manifests that could not be read, each with why (too large, not parseable)."""

    drifts: tuple[Drift, ...] = ()
    more: int = 0
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def repository_drift(paths: Iterable[str], read: Callable[[str], str | None]) -> DriftReport:
    """``version_drift`` of ``repository_pins``: the drift of a repository's listing."""
    skipped: list[tuple[str, str]] = []
    pins = repository_pins(paths, read, skipped)
    return version_drift(pins, skipped)


def _python(path: str, text: str) -> list[tuple[str, str, str]]:
    name = posixpath.basename(path)
    if _REQUIREMENTS.match(name):
        return [("pypi", canonicalize_name(n), v) for _, n, v, _ in python_pins(text)]
    if name in ("pyproject.toml", "Pipfile"):
        return [("pypi", canonicalize_name(p.name), p.version) for p in toml_pins(text, path) if p.version]
    return []


def _npm(path: str, text: str) -> list[tuple[str, str, str]]:
    doc, _ = load_npm_json(text, path)
    out = []
    for section in DEP_SECTIONS:
        deps = doc.get(section) if isinstance(doc, dict) else None
        for package, spec in (deps or {}).items() if isinstance(deps, dict) else ():
            parsed = spec_version(spec)
            if parsed and isinstance(package, str):
                out.append(("npm", package, parsed[1]))
    return out


def _maven(path: str, text: str) -> list[tuple[str, str, str]]:
    properties = pom_properties(text, path)
    out = []
    for dep in pom_dependencies(text, path):
        version = dep.version
        if version and (m := PROPERTY_REF.fullmatch(version)):
            value = properties.get(m["name"])
            version = value[0] if value else None
        if version and "${" not in version:
            out.append(("maven", dep.coordinate, version))
    return out


def _read(path: str, text: str) -> list[tuple[str, str, str]]:
    name = posixpath.basename(path)
    if name == "package.json":
        return _npm(path, text)
    if name == "go.mod":
        return [("go", module, version) for _, module, version in go_requires(text)]
    if name == "pom.xml":
        return _maven(path, text)
    return _python(path, text)


def is_manifest(path: str) -> bool:
    """Whether ``path`` is a manifest ``repository_pins`` reads (by its file name)."""
    name = posixpath.basename(path)
    return bool(_REQUIREMENTS.match(name)) or name in ("pyproject.toml", "Pipfile", "package.json", "go.mod", "pom.xml")


def repository_pins(
    paths: Iterable[str], read: Callable[[str], str | None], skipped: list[tuple[str, str]] | None = None
) -> list[Pin]:
    """The direct pins of every manifest among ``paths`` (module docstring), ``read(path) -> str | None`` giving a
    file's text. A manifest that does not parse or is over ``MAX_FILE_BYTES`` is left out and, when ``skipped``
    is given, appended to it with the reason. Pins in ``node_modules``/``vendor`` folders are not the
    repository's own and are not read."""
    out: list[Pin] = []
    seen = 0
    for path in sorted(paths):
        if not is_manifest(path) or any(part in ("node_modules", "vendor") for part in path.split("/")):
            continue
        seen += 1
        if seen > MAX_FILES:
            if skipped is not None:
                skipped.append((path, f"past the first {MAX_FILES} manifests"))
            continue
        text = read(path)
        if text is None:
            continue
        if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
            if skipped is not None:
                skipped.append((path, f"over {MAX_FILE_BYTES // (1024 * 1024)} MiB"))
            continue
        try:
            found = _read(path, text)
        except PolicyViolation as e:
            if skipped is not None:
                skipped.append((path, e.reason.removeprefix(f"{path}: ")))
            continue
        service = service_of_paths([path])
        out += [Pin(eco, package, version, path, service) for eco, package, version in found]
    return out


def _newest_first(eco: str, versions: Iterable[str]) -> list[str]:
    """Newest first by the ecosystem's rules; when any version is outside its grammar, all are ordered as
    written (descending), so the target is never a guess between two orders."""
    ordered = sorted(set(versions), reverse=True)
    keys = {v: version_key(eco, v) for v in ordered}
    if any(k is _UNCOMPARABLE for k in keys.values()):
        return ordered
    return sorted(ordered, key=lambda v: keys[v], reverse=True)


def version_drift(pins: Sequence[Pin], skipped: Sequence[tuple[str, str]] = ()) -> DriftReport:
    """The packages whose pins name two or more versions (module docstring), most services (then files) first;
    ``skipped`` (``repository_pins``'s) is carried into the report."""
    by_package: dict[tuple[str, str], list[Pin]] = defaultdict(list)
    for pin in pins:
        by_package[(pin.ecosystem, pin.package)].append(pin)
    drifts = []
    for (eco, package), group in by_package.items():
        versions = {p.version for p in group}
        if len(versions) < 2:
            continue
        drifts.append(
            Drift(
                ecosystem=eco,
                package=package,
                versions=tuple(
                    PinnedVersion(
                        version=v,
                        paths=tuple(sorted({p.path for p in group if p.version == v})),
                        services=tuple(sorted({p.service for p in group if p.version == v and p.service})),
                    )
                    for v in _newest_first(eco, versions)
                ),
            )
        )
    drifts.sort(key=lambda d: (-len(d.services), -len(d.paths), d.ecosystem, d.package))
    return DriftReport(
        drifts=tuple(drifts[:MAX_DRIFTS]), more=max(0, len(drifts) - MAX_DRIFTS), skipped=tuple(skipped)
    )


def drift_table(drifts: Sequence[Drift], limit: int = 50) -> str:
    """A Markdown table, one row per version of each package: package, version (the newest marked as the
    consolidation target), services, files. At most ``limit`` packages; a last line counts the rest."""
    rows = ["| Package | Version | Services | Files |", "| --- | --- | --- | --- |"]
    for d in drifts[:limit]:
        for i, v in enumerate(d.versions):
            name = f"{d.package} ({d.ecosystem})" if i == 0 else ""
            version = f"{v.version} (target)" if i == 0 else v.version
            rows.append(
                "| "
                + " | ".join(
                    markdown(x, 500)
                    for x in (name, version, ", ".join(v.services) or "-", ", ".join(v.paths))
                )
                + " |"
            )
    if len(drifts) > limit:
        rows.append(f"\n{len(drifts) - limit} more packages drift; not shown.")
    return "\n".join(rows)


INSPECTION_FORMAT = 1  # ``fixloop_inspection`` of the document ``inspection_document`` writes


def inspection_document(repository: str, report: DriftReport, generated_at: str) -> dict[str, object]:
    """``fixloop inspect``'s report: a JSON document any fixloop intake ingests like a scanner report
    (``fixloop.integrations.inspection``)::

        {"fixloop_inspection": 1, "repository": "platform/gitops", "generated_at": "2026-12-03T09:00:00Z",
         "drift": [{"ecosystem": "pypi", "package": "werkzeug", "target": "2.3.8",
                    "versions": [{"version": "2.3.8", "paths": [...], "services": ["checkout"]}, ...]}],
         "drift_more": 0, "skipped": [{"path": "...", "reason": "..."}]}
    """
    return {
        "fixloop_inspection": INSPECTION_FORMAT,
        "repository": repository,
        "generated_at": generated_at,
        "drift": [
            {
                "ecosystem": d.ecosystem,
                "package": d.package,
                "target": d.target,
                "versions": [
                    {"version": v.version, "paths": list(v.paths), "services": list(v.services)} for v in d.versions
                ],
            }
            for d in report.drifts
        ],
        "drift_more": report.more,
        "skipped": [{"path": path, "reason": reason} for path, reason in report.skipped],
    }
