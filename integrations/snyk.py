"""Snyk CLI JSON (``snyk test --json``, ``snyk container test --json``) -> signals.

Format (Snyk CLI docs, "snyk test" JSON output): one project object, or with ``--all-projects`` an array of them:
``{vulnerabilities[], packageManager, projectName, displayTargetFile, targetFile, path}``. Each entry of
``vulnerabilities`` is one vulnerable *dependency path* (``from[]``), so the same issue repeats; fixloop emits one
signal per distinct (issue id, package, version) of a project. Severity is lower-case; ``fixedIn`` lists versions;
``identifiers`` maps ``CVE``/``GHSA``/``CWE``/... to lists.

A container project (``snyk container test``; ``projectName`` ``docker-image|<image>``, ``packageManager`` ``deb``,
``apk``, ``rpm`` or ``linux``; its ``applications[]``, the image's application dependencies with ``--app-vulns``, are
projects of the same image, each signal's target their file) names its OS release in each vulnerability's
``packageManager`` (``debian:11``, ``alpine:3.17``, ``rhel:8``) and, with ``--file=Dockerfile``, its base image in
``docker.baseImage`` (``debian:10``; snyk/cli ``src/lib/snyk-test/legacy.ts``, ``LegacyVulnApiResult.docker``). Snyk's
JSON has no package URL, so an OS package's signal gets the purl-spec one those name, of its ``packageName`` (the
signal's package: the source package, ``pkg:deb/debian/gcc-10@10.2.1-6?distro=debian-11``): the ``distro`` qualifier
is how the planner reads the scanned OS (``fixloop.core.change.locate.scanned_os``). ``platform`` (``linux/amd64``) is
the OS and architecture, not a release.
"""

from __future__ import annotations

import re

from packageurl import PackageURL
from pydantic import TypeAdapter

from fixloop.core.change.locate import os_of_image
from fixloop.core.models import Category, Kind, Signal, Source, fingerprint
from fixloop.core.parsing import ParseContext, WireModel, ecosystem, opt, resolve_fix, severity, split_versions, title


class Vulnerability(WireModel):
    id: str
    title: str | None = None
    packageName: str
    packageManager: str | None = None  # container scans: the OS release, "debian:11"
    version: str
    severity: str | None = None
    fixedIn: list[str] | None = None
    identifiers: dict[str, list[str | int] | None] | None = None  # NSP ids are numbers


class Docker(WireModel):
    baseImage: str | None = None  # with --file=Dockerfile: the Dockerfile's base image, "debian:10"


class Project(WireModel):
    vulnerabilities: list[Vulnerability] | None = None
    docker: Docker | None = None
    packageManager: str | None = None
    projectName: str | None = None
    displayTargetFile: str | None = None
    targetFile: str | None = None
    path: str | None = None
    applications: list[Project] | None = None  # a container scan's application dependencies (npm, pip, ...)


_PROJECTS = TypeAdapter(list[Project])
_OS_RELEASE = re.compile(r"([a-z][a-z0-9._-]{0,39}):([0-9][A-Za-z0-9.+~-]{0,39})")  # "debian:11", "sles:15.4"
_OS_PACKAGES = ("deb", "apk", "rpm")


def _os_purl(eco: str | None, v: Vulnerability, base: tuple[str, str] | None) -> str | None:
    """The purl of an OS package finding of a container project, with the OS release as its ``distro`` qualifier:
    the vulnerability's ``packageManager`` (``debian:11``), else the project's ``docker.baseImage`` when that is an
    OS image (``debian:10``); None for another package, or when neither names a release."""
    m = _OS_RELEASE.fullmatch(v.packageManager or "")
    release = (m.group(1), m.group(2)) if m else base
    eco = eco if eco in _OS_PACKAGES else ecosystem(release[0]) if release else None
    if release is None or eco not in _OS_PACKAGES:
        return None
    try:
        purl = PackageURL(eco, release[0], v.packageName, v.version, {"distro": f"{release[0]}-{release[1]}"})
    except ValueError:  # a name or version packageurl-python refuses: no purl rather than a wrong one
        return None
    return opt(purl.to_string())


def _is_project(d: object) -> bool:
    return (
        isinstance(d, dict)
        and "vulnerabilities" in d
        and ("packageManager" in d or "projectName" in d or "uniqueCount" in d or "ok" in d)
    )


def matches(doc: object) -> bool:
    if isinstance(doc, list):
        return bool(doc) and _is_project(doc[0])
    return _is_project(doc)


def parse(doc: object, ctx: ParseContext) -> None:
    projects = _PROJECTS.validate_python(doc) if isinstance(doc, list) else [Project.model_validate(doc)]
    many = isinstance(doc, list)
    for p_index, project in enumerate(projects):
        name = project.projectName or ""
        is_image = name.startswith("docker-image|")
        artifact = name.split("|", 1)[1] if is_image else (project.projectName or project.path)
        target = project.displayTargetFile or project.targetFile or project.projectName
        base = os_of_image(project.docker.baseImage) if is_image and project.docker else None
        at = (p_index,) if many else ()
        _emit(project, artifact, target, base if is_image else None, is_image, at, ctx)
        for a_index, app in enumerate(project.applications or []):  # the image's application dependencies
            app_target = app.displayTargetFile or app.targetFile or app.projectName
            _emit(app, artifact, app_target, None, False, (*at, "applications", a_index), ctx)


def _emit(
    project: Project,
    artifact: str | None,
    target: str | None,
    base: tuple[str, str] | None,
    os_packages: bool,
    at: tuple[str | int, ...],
    ctx: ParseContext,
) -> None:
    """One signal per vulnerability of ``project`` (``at``: its JSON pointer), of ``artifact`` in ``target``;
    ``os_packages``: a container's OS packages (their purl names the release)."""
    eco = ecosystem(project.packageManager)
    for i, v in enumerate(project.vulnerabilities or []):
        ids = v.identifiers or {}
        aliases = [
            a
            for key, values in ids.items()
            if key.upper() != "CWE"  # CVE, GHSA, ALTERNATIVE ids name the same issue; CWEs are classes
            for a in (opt(x) for x in values or [])
            if a and a != v.id
        ]
        fixed = split_versions(v.fixedIn)
        fixed_version, fix_status = resolve_fix(eco, v.version, fixed, "fixed" if fixed else "not-fixed")
        ctx.emit(
            Signal(
                fingerprint=fingerprint("snyk", "vulnerability", artifact, target, v.id, v.packageName, v.version),
                source=Source.SNYK,
                kind=Kind.FINDING,
                title=title(f"{v.id} in {v.packageName} {v.version}" + (f": {v.title}" if v.title else "")),
                severity=severity(v.severity),
                observed_at=ctx.received_at,
                raw_ref=ctx.pointer(*at, "vulnerabilities", i),
                url=opt(f"https://security.snyk.io/vuln/{v.id}"),
                category=Category.VULNERABILITY,
                advisory_id=opt(v.id),
                aliases=list(dict.fromkeys(aliases)),
                package=opt(v.packageName),
                installed_version=opt(v.version),
                fixed_version=fixed_version,
                fixed_versions=fixed,
                fix_status=fix_status,
                ecosystem=eco,
                artifact=opt(artifact),
                target=opt(target),
                purl=_os_purl(eco, v, base) if os_packages else None,
            )
        )
