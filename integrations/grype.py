"""Grype JSON reports (``grype -o json``) -> signals.

Format: Anchore Grype's JSON presenter (``grype/presenter/models/document.go``), 0.7 to 0.9x:
``{matches[], source{type, target}, distro{name, version}, descriptor{name, version, timestamp}}``; a match is
``{vulnerability{id, severity, fix{versions[], state}, dataSource, urls}, relatedVulnerabilities[], artifact{name,
version, type, purl, locations[{path}]}}``. ``source.target`` is an object with ``userInput`` for images (a string
for directories); ``severity`` may be missing.

Fixes: the current schema's ``fix.state`` is ``fixed``, ``not-fixed``, ``wont-fix`` or ``unknown``
(``grype/vulnerability/fix.go``); its ``fix.versions`` are fixed versions only when the state is ``fixed`` (a
``wont-fix`` match may still list placeholders: ``["fix_1", "fix_2"]``). The legacy schema of 0.7
(``grype/presenter/formats/models/vulnerability.go``, before ``fix``) writes one string,
``vulnerability.fixedInVersion``, and no state.
"""

from __future__ import annotations

from typing import Any

from fixloop.core.models import Category, Kind, Signal, Source, fingerprint
from fixloop.core.parsing import (
    ParseContext,
    WireModel,
    ecosystem,
    ecosystem_from_purl,
    opt,
    resolve_fix,
    severity,
    split_versions,
    timestamp,
    title,
)

_OS_TYPES = frozenset({"deb", "rpm", "apk", "alpm", "portage"})


class Fix(WireModel):
    versions: list[str] | None = None
    state: str | None = None


class Vulnerability(WireModel):
    id: str
    severity: str | None = None
    dataSource: str | None = None
    fix: Fix | None = None
    fixedInVersion: str | None = None  # the legacy schema (0.7): the one fixed version, no state


class Related(WireModel):
    id: str
    severity: str | None = None


class Location(WireModel):
    path: str | None = None


class Artifact(WireModel):
    name: str
    version: str
    type: str | None = None
    purl: str | None = None
    locations: list[Location] | None = None


class Match(WireModel):
    vulnerability: Vulnerability
    relatedVulnerabilities: list[Related] | None = None
    artifact: Artifact


class ScanSource(WireModel):
    type: str | None = None
    target: Any = None


class Distro(WireModel):
    name: str | None = None
    version: str | None = None


class Descriptor(WireModel):
    name: str | None = None
    version: str | None = None
    timestamp: str | None = None  # RFC 3339; "" in some goldens


class Report(WireModel):
    matches: list[Match]
    source: ScanSource | None = None
    distro: Distro | None = None
    descriptor: Descriptor | None = None


def matches(doc: object) -> bool:
    return isinstance(doc, dict) and "matches" in doc and ("source" in doc or "descriptor" in doc or "distro" in doc)


def parse(doc: object, ctx: ParseContext) -> None:
    report = Report.model_validate(doc)
    observed = timestamp(report.descriptor.timestamp if report.descriptor else None) or ctx.received_at
    artifact = _artifact(report.source)
    distro = report.distro
    os_target = " ".join(p for p in (distro.name, distro.version) if p) if distro else ""
    for i, m in enumerate(report.matches):
        v, a = m.vulnerability, m.artifact
        paths = sorted({loc.path for loc in a.locations or [] if loc.path})
        is_os = (a.type or "").lower() in _OS_TYPES
        target = os_target if is_os and os_target else (paths[0] if paths else None)
        eco = ecosystem(a.type) if a.type and a.type != "binary" else ecosystem_from_purl(a.purl) or ecosystem(a.type)
        fixed, state = _fix(v)
        fixed_version, fix_status = resolve_fix(eco, a.version, fixed, state)
        related = [r for r in m.relatedVulnerabilities or [] if r.id != v.id]
        sev = v.severity or next((r.severity for r in related if r.severity), None)
        ctx.emit(
            Signal(
                # All locations: the same package version installed twice in an image is two findings.
                fingerprint=fingerprint("grype", "vulnerability", artifact, v.id, a.name, a.version, *paths),
                source=Source.GRYPE,
                kind=Kind.FINDING,
                title=title(f"{v.id} in {a.name} {a.version}"),
                severity=severity(sev),
                observed_at=observed,
                raw_ref=ctx.pointer("matches", i),
                url=opt(v.dataSource),
                category=Category.VULNERABILITY,
                advisory_id=opt(v.id),
                aliases=list(dict.fromkeys(x for x in (opt(r.id) for r in related) if x)),
                package=opt(a.name),
                installed_version=opt(a.version),
                fixed_version=fixed_version,
                fixed_versions=fixed,
                fix_status=fix_status,
                ecosystem=eco,
                artifact=opt(artifact),
                target=opt(target),
                purl=opt(a.purl),
            )
        )


def _fix(v: Vulnerability) -> tuple[list[str], str | None]:
    """(fixed versions, state) of a match: ``fix.versions`` when ``fix.state`` is ``fixed`` or absent (none for
    ``not-fixed``, ``wont-fix``, ``unknown``: the state says why), else the legacy ``fixedInVersion`` (state
    ``fixed`` when it is there, None when not)."""
    if v.fix is not None:
        state = opt(v.fix.state)
        fixed = split_versions(v.fix.versions) if state is None or state.lower() == "fixed" else []
        return fixed, state
    fixed = split_versions(v.fixedInVersion)
    return fixed, "fixed" if fixed else None


def _artifact(source: ScanSource | None) -> str | None:
    if source is None:
        return None
    t = source.target
    if isinstance(t, dict):
        return opt(t.get("userInput") or next(iter(t.get("tags") or []), None) or t.get("imageID"))
    return opt(t) if isinstance(t, str) else None
