"""GitLab security reports (container scanning, dependency scanning, SAST, secret detection) -> signals.

Format: GitLab's security report schemas (gitlab-org/security-products/security-report-schemas,
``dist/*-report-format.json``), versions 2.x to 15.x: ``{version, vulnerabilities[], remediations[], scan{type,
scanner, analyzer, start_time, end_time, status}}``. A vulnerability has ``id`` (absent in 2.x), ``name`` or
``message``, ``description``, ``cve`` (2.x: a compound compare key), ``severity`` (``Critical/High/Medium/Low/
Info/Unknown``, may be missing in SAST), ``solution``, ``identifiers[{type, name, value, url}]`` and a
``location``: ``{dependency{package{name}, version}, operating_system, image}`` (container scanning),
``{file, dependency}`` (dependency scanning) or ``{file, start_line, end_line}`` (SAST, secrets).
The report kind comes from ``scan.type`` (2.x: the per-vulnerability ``category``), else from the location.

Trivy's GitLab template (``contrib/gitlab.tpl``, report version 14.0.6) writes the first word of each Trivy result's
``Target`` as ``location.image`` and ``"Unknown"`` as ``operating_system``: for OS packages the scanned image (the
``(alpine 3.15.0)`` that named the OS is cut off: the OS is unknown), for language packages Trivy's name of those it
gathers across the image (``Node.js``, ``Python``, ``Java``, ``Ruby``, ``Conda``: ``pkg/scanner/langpkg``'s
``PkgTargets``) or the path of a lockfile in it (``var/www/composer.lock``). Those are language-package findings: the
ecosystem comes from the name, the target is the name, and the artifact is the scanned image when the report's other
entries name exactly one (else none: what the report says is kept, nothing is guessed).
"""

from __future__ import annotations

import re
from datetime import datetime

from fixloop.core.models import Category, Kind, Signal, Source, fingerprint
from fixloop.core.parsing import (
    ParseContext,
    WireModel,
    aware,
    ecosystem,
    opt,
    resolve_fix,
    severity,
    split_versions,
    title,
)


class Identifier(WireModel):
    type: str | None = None
    name: str | None = None
    value: str | int | None = None  # CWE values are numbers in some analyzers
    url: str | None = None


class Package(WireModel):
    name: str | None = None


class Dependency(WireModel):
    package: Package | None = None
    version: str | None = None


class Location(WireModel):
    file: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    dependency: Dependency | None = None
    operating_system: str | None = None
    image: str | None = None


class Vulnerability(WireModel):
    id: str | None = None
    category: str | None = None
    name: str | None = None
    message: str | None = None
    description: str | None = None
    cve: str | None = None
    severity: str | None = None
    solution: str | None = None
    location: Location | None = None
    identifiers: list[Identifier] | None = None


class Scan(WireModel):
    type: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


class Report(WireModel):
    version: str | int | float | None = None
    vulnerabilities: list[Vulnerability]
    scan: Scan | None = None


_VULN_SCANS = frozenset({"container_scanning", "dependency_scanning", "cluster_image_scanning"})
_SECRET_IDS = re.compile(r"gitleaks|trufflehog|secret", re.I)
_ADVISORY_RANK = {
    t: n for n, t in enumerate(("cve", "ghsa", "osvdb", "gemnasium", "elsa", "rhsa", "usn", "dsa", "alas"))
}
_CLASS_TYPES = frozenset({"cwe", "owasp"})
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_OS_SUFFIX = re.compile(r"^(?P<image>.*\S)\s+\((?P<os>[^()]*)\)$")
_UPGRADE = re.compile(
    r"upgrade\s+(?:\S+\s+)?to\s+(?:versions?\s+)?(?P<v>.+?)(?:\s+or\s+(?:above|later|higher))?\.?\s*$", re.I
)
_LOCKFILES = {
    "go.sum": "go",
    "go.mod": "go",
    "package-lock.json": "npm",
    "yarn.lock": "npm",
    "pnpm-lock.yaml": "npm",
    "npm-shrinkwrap.json": "npm",
    "requirements.txt": "pypi",
    "pipfile.lock": "pypi",
    "poetry.lock": "pypi",
    "uv.lock": "pypi",
    "pom.xml": "maven",
    "build.gradle": "maven",
    "build.gradle.kts": "maven",
    "build.sbt": "maven",
    "gemfile.lock": "gem",
    "composer.lock": "composer",
    "cargo.lock": "cargo",
    "packages.lock.json": "nuget",
    "packages.config": "nuget",
    "conan.lock": "conan",
    "gradle.lockfile": "maven",
    "mix.lock": "hex",
    "pubspec.lock": "pub",
    "podfile.lock": "cocoapods",
    "package.resolved": "swift",
}
# Trivy's names of the language packages it gathers across an image (pkg/scanner/langpkg PkgTargets); matched as
# written (capitalised: an image reference is lower case).
_TRIVY_TARGETS = {
    "Node.js": "npm",
    "Python": "pypi",
    "Java": "maven",
    "Ruby": "gem",
    "Conda": "conda",
    "Kubernetes": "kubernetes",
}


def matches(doc: object) -> bool:
    if not isinstance(doc, dict) or "vulnerabilities" not in doc:
        return False
    return "version" in doc or "scan" in doc or "remediations" in doc


def parse(doc: object, ctx: ParseContext) -> None:
    report = Report.model_validate(doc)
    scan = report.scan or Scan()
    observed = aware(scan.end_time or scan.start_time) or ctx.received_at
    images = {image for v in report.vulnerabilities if (image := _os_image(v.location))}
    scanned = next(iter(images)) if len(images) == 1 else None
    for i, v in enumerate(report.vulnerabilities):
        loc = v.location or Location()
        dep = loc.dependency or Dependency()
        pkg = dep.package.name if dep.package else None
        ids = v.identifiers or []
        kind = (scan.type or v.category or "").lower()
        if kind in _VULN_SCANS or (not kind and pkg and (loc.image or loc.operating_system or loc.file)):
            _vulnerability(v, loc, pkg, dep.version, ids, ctx, observed, i, scanned)
        else:
            secret = kind == "secret_detection" or any(_SECRET_IDS.search(x.type or "") for x in ids)
            _code_finding(v, loc, ids, Category.SECRET if secret else Category.SAST, ctx, observed, i)


def _advisory(ids: list[Identifier], fallback: str | None) -> tuple[str | None, list[str], str | None]:
    """(advisory id, aliases, url): a CVE first, then other advisory databases, then the first identifier;
    CWE and OWASP identifiers are classes, not ids."""
    best: Identifier | None = None
    best_rank = 100
    named: list[Identifier] = []
    for x in ids:
        kind = (x.type or "").lower()
        if kind in _CLASS_TYPES or not (x.value or x.name):
            continue
        named.append(x)
        rank = _ADVISORY_RANK.get(kind, 99)
        if rank < best_rank:
            best, best_rank = x, rank
    if best is None:
        return opt(fallback), [], None
    value = str(best.value) if best.value is not None else None
    # A bare database key (Gemnasium's UUIDs) says little: its name ("Gemnasium-<uuid>") says where it is from.
    advisory = opt(best.name if best.name and (not value or _UUID.match(value)) else value)
    # Aliases by name where the bare value says little ("Gemnasium-<uuid>" rather than "<uuid>").
    aliases = [
        a
        for a in dict.fromkeys(
            opt(x.value if (x.type or "").lower() in ("cve", "ghsa") else (x.name or x.value))
            for x in named
            if x is not best
        )
        if a and a != advisory
    ]
    return advisory, aliases, opt(best.url)


def _vulnerability(
    v: Vulnerability,
    loc: Location,
    pkg: str | None,
    version: str | None,
    ids: list[Identifier],
    ctx: ParseContext,
    observed: datetime,
    i: int,
    scanned: str | None = None,
) -> None:
    """One vulnerability finding; ``scanned``: the one image the report's OS entries name, if exactly one."""
    advisory, aliases, url = _advisory(ids, v.cve or v.id)
    in_image: tuple[str, ...] = ()  # identity beyond (artifact, target): the image a language target is in
    if loc.image or loc.operating_system:  # container scanning
        artifact, target = _image_and_os(loc)
        eco = ecosystem(target.split()[0]) if target else None
        where = (artifact, target)
        if target is None and (lang := _language(artifact)):  # Trivy's template: language packages in the image
            artifact, target, eco = scanned, artifact, lang
            # The fingerprint as before, plus the scanned image ("Node.js" is the same name in every image's report)
            in_image = (scanned,) if scanned else ()
    else:  # dependency scanning: the manifest or lockfile
        artifact = None
        target = loc.file
        eco = _LOCKFILES.get((loc.file or "").rsplit("/", 1)[-1].lower())
        where = (artifact, target)
    fixed = _solution_versions(v.solution)
    fixed_version, fix_status = resolve_fix(eco, version, fixed, "fixed" if fixed else None)
    ctx.emit(
        Signal(
            fingerprint=fingerprint("gitlab", "vulnerability", *where, advisory, pkg, version, *in_image),
            source=Source.GITLAB,
            kind=Kind.FINDING,
            title=title(
                f"{advisory} in {pkg} {version or ''}".rstrip()
                + (f": {v.name or v.message}" if v.name or v.message else "")
            ),
            severity=severity(v.severity),
            observed_at=observed,
            raw_ref=ctx.pointer("vulnerabilities", i),
            url=url,
            category=Category.VULNERABILITY,
            advisory_id=advisory,
            aliases=aliases,
            package=opt(pkg),
            installed_version=opt(version),
            fixed_version=fixed_version,
            fixed_versions=fixed,
            fix_status=fix_status,
            ecosystem=eco,
            artifact=opt(artifact),
            target=opt(target),
        )
    )


def _image_and_os(loc: Location) -> tuple[str | None, str | None]:
    """(image, OS) of a container scanning location; the OS None when unknown. Trivy's 2.x template puts the OS in
    the image name: ``img.tar.gz (alpine 3.10.2)``."""
    image, os_name = loc.image, loc.operating_system
    m = _OS_SUFFIX.match(image or "")
    if m:
        image = m.group("image")
        if not os_name or os_name.lower() == "unknown":
            os_name = m.group("os")
    return image, os_name if os_name and os_name.lower() != "unknown" else None


def _language(image: str | None) -> str | None:
    """The ecosystem of a container scanning ``location.image`` that names language packages, not an image:
    Trivy's ``Node.js``, ``Python``, ... or a lockfile's path (``var/www/composer.lock``); else None."""
    if not image:
        return None
    name = image.strip()
    return _TRIVY_TARGETS.get(name) or _LOCKFILES.get(name.rsplit("/", 1)[-1].lower())


def _os_image(loc: Location | None) -> str | None:
    """The image a container scanning location names for its OS packages (not a language target), else None."""
    if loc is None or not (loc.image or loc.operating_system):
        return None
    image, os_name = _image_and_os(loc)
    return opt(image) if os_name is not None or not _language(image) else None


def _code_finding(
    v: Vulnerability,
    loc: Location,
    ids: list[Identifier],
    category: Category,
    ctx: ParseContext,
    observed: datetime,
    i: int,
) -> None:
    rule, aliases, url = _advisory(ids, v.cve or v.id)
    where = f"{loc.file}:{loc.start_line}" if loc.file and loc.start_line else loc.file
    name = v.name or v.message or rule or "finding"
    ctx.emit(
        Signal(
            fingerprint=fingerprint(
                "gitlab", category.value, loc.file, loc.start_line, loc.end_line, rule, v.cve or v.id
            ),
            source=Source.GITLAB,
            kind=Kind.FINDING,
            title=title(f"{name} ({where})" if where else name),
            severity=severity(v.severity),
            observed_at=observed,
            raw_ref=ctx.pointer("vulnerabilities", i),
            url=url,
            category=category,
            advisory_id=rule,
            aliases=aliases,
            target=opt(loc.file),
            location=opt(where),
        )
    )


def _solution_versions(solution: str | None) -> list[str]:
    """Fixed versions named by a solution text ("Upgrade busybox to 1.34.1-r5", "Upgrade to version 2.2.3
    or above."); [] for "No solution provided" and anything else."""
    if not solution:
        return []
    m = _UPGRADE.search(solution.strip())
    if not m:
        return []
    return split_versions(m.group("v").replace(" or ", ","))
