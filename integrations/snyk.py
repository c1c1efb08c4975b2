"""Snyk CLI JSON (``snyk test --json``, ``snyk container test --json``) -> signals.

Format (Snyk CLI docs, "snyk test" JSON output): one project object, or with ``--all-projects`` an array of them:
``{vulnerabilities[], packageManager, projectName, displayTargetFile, targetFile, path}``. Each entry of
``vulnerabilities`` is one vulnerable *dependency path* (``from[]``), so the same issue repeats; fixloop emits one
signal per distinct (issue id, package, version) of a project. Severity is lower-case; ``fixedIn`` lists versions;
``identifiers`` maps ``CVE``/``GHSA``/``CWE``/... to lists.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from fixloop.core.models import Category, Kind, Signal, Source, fingerprint
from fixloop.core.parsing import ParseContext, WireModel, ecosystem, lowest_fix, opt, severity, split_versions, title


class Vulnerability(WireModel):
    id: str
    title: str | None = None
    packageName: str
    version: str
    severity: str | None = None
    fixedIn: list[str] | None = None
    identifiers: dict[str, list[str | int] | None] | None = None  # NSP ids are numbers


class Project(WireModel):
    vulnerabilities: list[Vulnerability] | None = None
    packageManager: str | None = None
    projectName: str | None = None
    displayTargetFile: str | None = None
    targetFile: str | None = None
    path: str | None = None


_PROJECTS = TypeAdapter(list[Project])


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
            path = ((p_index,) if many else ()) + ("vulnerabilities", i)
            ctx.emit(
                Signal(
                    fingerprint=fingerprint("snyk", "vulnerability", artifact, target, v.id, v.packageName, v.version),
                    source=Source.SNYK,
                    kind=Kind.FINDING,
                    title=title(f"{v.id} in {v.packageName} {v.version}" + (f": {v.title}" if v.title else "")),
                    severity=severity(v.severity),
                    observed_at=ctx.received_at,
                    raw_ref=ctx.pointer(*path),
                    url=opt(f"https://security.snyk.io/vuln/{v.id}"),
                    category=Category.VULNERABILITY,
                    advisory_id=opt(v.id),
                    aliases=list(dict.fromkeys(aliases)),
                    package=opt(v.packageName),
                    installed_version=opt(v.version),
                    fixed_version=lowest_fix(eco, v.version, fixed),
                    fixed_versions=fixed,
                    fix_status="fixed" if fixed else "not-fixed",
                    ecosystem=eco,
                    artifact=opt(artifact),
                    target=opt(target),
                )
            )
