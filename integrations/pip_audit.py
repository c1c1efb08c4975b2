"""pip-audit JSON output (``pip-audit -f json``) -> signals.

Formats (pypa/pip-audit ``pip_audit/_format/json.py``): legacy, a top-level array of dependencies; current,
``{"dependencies": [...], "fixes": [...]}``. A dependency is ``{name, version, vulns[{id, fix_versions[],
aliases[], description}]}``, or ``{name, skip_reason}`` when it could not be audited: each skipped dependency is
reported as a warning, never dropped silently. The JSON names no requirements file, so ``target`` is unset.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from fixloop.core.models import Category, Kind, Severity, Signal, Source, fingerprint
from fixloop.core.parsing import ParseContext, WireModel, opt, resolve_fix, split_versions, title


class Vuln(WireModel):
    id: str
    fix_versions: list[str] | None = None
    aliases: list[str] | None = None
    description: str | None = None


class Dependency(WireModel):
    name: str
    version: str | None = None
    vulns: list[Vuln] | None = None
    skip_reason: str | None = None


_DEPENDENCIES = TypeAdapter(list[Dependency])


def _is_dependency(d: object) -> bool:
    return isinstance(d, dict) and "name" in d and ("vulns" in d or "skip_reason" in d)


def matches(doc: object) -> bool:
    if isinstance(doc, list):
        return bool(doc) and _is_dependency(doc[0])
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("dependencies"), list)
        and (not doc["dependencies"] or _is_dependency(doc["dependencies"][0]))
    )


def parse(doc: object, ctx: ParseContext) -> None:
    legacy = isinstance(doc, list)
    deps = _DEPENDENCIES.validate_python(doc if legacy else doc["dependencies"])  # type: ignore[index]
    base: tuple[str, ...] = () if legacy else ("dependencies",)
    for d, dep in enumerate(deps):
        if dep.skip_reason is not None:
            ctx.warn(f"{ctx.pointer(*base, d)}: {opt(dep.name, 100)} not audited: {opt(dep.skip_reason, 200)}")
            continue
        for k, v in enumerate(dep.vulns or []):
            fixed = split_versions(v.fix_versions)
            fixed_version, fix_status = resolve_fix("pypi", dep.version, fixed, "fixed" if fixed else "affected")
            ctx.emit(
                Signal(
                    fingerprint=fingerprint("pip-audit", "vulnerability", v.id, dep.name.lower(), dep.version),
                    source=Source.PIP_AUDIT,
                    kind=Kind.FINDING,
                    title=title(f"{v.id} in {dep.name} {dep.version or ''}".rstrip()),
                    severity=Severity.UNKNOWN,  # pip-audit reports none
                    observed_at=ctx.received_at,
                    raw_ref=ctx.pointer(*base, d, "vulns", k),
                    url=opt(f"https://osv.dev/vulnerability/{v.id}"),
                    category=Category.VULNERABILITY,
                    advisory_id=opt(v.id),
                    aliases=[a for a in (opt(x) for x in v.aliases or []) if a and a != v.id],
                    package=opt(dep.name),
                    installed_version=opt(dep.version),
                    fixed_version=fixed_version,
                    fixed_versions=fixed,
                    fix_status=fix_status,
                    ecosystem="pypi",
                )
            )
