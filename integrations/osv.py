"""OSV-Scanner JSON output (``osv-scanner --format json``) -> signals.

Format (google/osv-scanner ``pkg/models/results.go``; vulnerabilities in the OSV schema, ossf.github.io/osv-schema):
``{results[{source{path, type}, packages[{package{name, version, ecosystem}, vulnerabilities[], groups[]}]}]}``.
``groups[{ids[], aliases[], max_severity}]`` gathers the entries that are one vulnerability under several ids
(a GHSA and the PYSEC of the same CVE): fixloop emits one signal per group, with every id as an alias. A fixed
version comes from the OSV ``affected[].ranges[].events[].fixed`` of the package; severity from
``database_specific.severity`` (GHSA words), else the CVSS vectors in ``severity[]``, else ``max_severity``.
"""

from __future__ import annotations

from typing import Any

from fixloop.core.models import Category, Kind, Severity, Signal, Source, fingerprint
from fixloop.core.parsing import (
    ParseContext,
    WireModel,
    cvss_vector_score,
    ecosystem,
    opt,
    resolve_fix,
    severity,
    severity_from_score,
    title,
)


class Event(WireModel):
    introduced: str | None = None
    fixed: str | None = None


class Range(WireModel):
    type: str | None = None
    events: list[Event] | None = None


class AffectedPackage(WireModel):
    name: str | None = None
    ecosystem: str | None = None


class Affected(WireModel):
    package: AffectedPackage | None = None
    ranges: list[Range] | None = None


class CvssScore(WireModel):
    type: str | None = None
    score: str | None = None


class Vulnerability(WireModel):
    id: str
    aliases: list[str] | None = None
    summary: str | None = None
    severity: list[CvssScore] | None = None
    database_specific: dict[str, Any] | None = None
    affected: list[Affected] | None = None


class Group(WireModel):
    ids: list[str]
    aliases: list[str] | None = None
    max_severity: str | None = None


class Package(WireModel):
    name: str
    version: str | None = None
    ecosystem: str | None = None


class PackageResult(WireModel):
    package: Package
    vulnerabilities: list[Vulnerability] | None = None
    groups: list[Group] | None = None


class ScanSource(WireModel):
    path: str | None = None
    type: str | None = None


class Result(WireModel):
    source: ScanSource | None = None
    packages: list[PackageResult] | None = None


class Report(WireModel):
    results: list[Result]


def matches(doc: object) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        return False
    first = doc["results"][0] if doc["results"] else {}
    return not doc["results"] or (isinstance(first, dict) and ("packages" in first or "source" in first))


def parse(doc: object, ctx: ParseContext) -> None:
    report = Report.model_validate(doc)
    for r, result in enumerate(report.results):
        target = result.source.path if result.source else None
        for p, pr in enumerate(result.packages or []):
            pkg = pr.package
            eco = ecosystem(pkg.ecosystem)
            vulns = {v.id: (k, v) for k, v in enumerate(pr.vulnerabilities or [])}
            groups = pr.groups or [Group(ids=[vid]) for vid in vulns]
            grouped = {i for g in groups for i in g.ids}
            groups += [Group(ids=[vid]) for vid in vulns if vid not in grouped]  # never drop an ungrouped entry
            for group in groups:
                members = [vulns[i] for i in group.ids if i in vulns]
                if not members:
                    ctx.warn(
                        f"{ctx.pointer('results', r, 'packages', p)}: group {opt(group.ids, 120)} "
                        "names no listed vulnerability"
                    )
                    continue
                first_index, first = members[0]
                advisory = group.ids[0]
                aliases = [
                    a
                    for a in dict.fromkeys(
                        [
                            *group.ids[1:],
                            *(group.aliases or []),
                            *(x for _, v in members for x in [v.id, *(v.aliases or [])]),
                        ]
                    )
                    if a != advisory
                ]
                fixed = list(
                    dict.fromkeys(
                        ev.fixed
                        for _, v in members
                        for aff in v.affected or []
                        if aff.package is None or aff.package.name in (None, pkg.name)
                        for rng in aff.ranges or []
                        for ev in rng.events or []
                        if ev.fixed
                    )
                )
                fixed_version, fix_status = resolve_fix(eco, pkg.version, fixed, "fixed" if fixed else "affected")
                ctx.emit(
                    Signal(
                        fingerprint=fingerprint("osv", "vulnerability", target, advisory, pkg.name, pkg.version),
                        source=Source.OSV,
                        kind=Kind.FINDING,
                        title=title(
                            f"{advisory} in {pkg.name} {pkg.version or ''}".rstrip()
                            + (f": {first.summary}" if first.summary else "")
                        ),
                        severity=_severity(group, [v for _, v in members]),
                        observed_at=ctx.received_at,
                        raw_ref=ctx.pointer("results", r, "packages", p, "vulnerabilities", first_index),
                        url=opt(f"https://osv.dev/vulnerability/{advisory}"),
                        category=Category.VULNERABILITY,
                        advisory_id=opt(advisory),
                        aliases=[x for x in (opt(a) for a in aliases) if x],
                        package=opt(pkg.name),
                        installed_version=opt(pkg.version),
                        fixed_version=fixed_version,
                        fixed_versions=[x for x in (opt(f) for f in fixed) if x],
                        fix_status=fix_status,
                        ecosystem=eco,
                        target=opt(target),
                    )
                )


def _severity(group: Group, vulns: list[Vulnerability]) -> Severity:
    best = Severity.UNKNOWN
    for v in vulns:
        word = (v.database_specific or {}).get("severity")
        candidates = [severity(word)] if isinstance(word, str) else []
        candidates += [severity_from_score(cvss_vector_score(s.score)) for s in v.severity or [] if s.score]
        for c in candidates:
            if c.rank > best.rank:
                best = c
    if best is Severity.UNKNOWN and group.max_severity:
        try:
            best = severity_from_score(float(group.max_severity))
        except ValueError:
            pass
    return best
