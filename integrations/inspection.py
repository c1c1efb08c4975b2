"""fixloop's own inspection report (``fixloop inspect --repo PATH``) -> signals: the proactive findings of a
repository that no scanner reports, delivered like a scanner report (``fixloop submit``, the gateway's report
endpoint).

Format (``fixloop.core.change.drift.inspection_document``): ``{"fixloop_inspection": 1, "repository",
"generated_at", "drift": [{ecosystem, package, target, versions[{version, paths[], services[]}]}], "drift_more",
"skipped": [{path, reason}]}``. Each ``drift`` entry is one signal (category ``drift``, severity ``info``, the
repository as its artifact), fingerprinted by the repository, the package and the set of pinned versions: the same
drift inspected twice is one signal; once a version changes it is a new one. ``drift_more`` (entries past the
report's bound) and each ``skipped`` manifest become warnings, never silence.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, TypeAdapter

from fixloop.core.models import Category, Kind, Severity, Signal, Source, fingerprint
from fixloop.core.parsing import ParseContext, WireModel, opt, timestamp, title

SHOWN_VERSIONS = 5  # versions named in a signal's title


class PinnedVersion(WireModel):
    version: str
    paths: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)


class Drift(WireModel):
    ecosystem: str
    package: str
    target: str | None = None
    versions: list[PinnedVersion] = Field(default_factory=list)


class Skipped(WireModel):
    path: str
    reason: str | None = None


_DRIFTS = TypeAdapter(list[Drift])
_SKIPPED = TypeAdapter(list[Skipped])


def matches(doc: object) -> bool:
    return isinstance(doc, dict) and "fixloop_inspection" in doc


def _where(v: PinnedVersion) -> str:
    return ", ".join(v.services) or ", ".join(v.paths[:2]) + (" …" if len(v.paths) > 2 else "")


def parse(doc: object, ctx: ParseContext) -> None:
    assert isinstance(doc, dict)
    repository = opt(doc.get("repository"), 300) if isinstance(doc.get("repository"), str) else None
    generated = doc.get("generated_at")
    observed: datetime = (timestamp(generated) if isinstance(generated, str) else None) or ctx.received_at
    for i, d in enumerate(_DRIFTS.validate_python(doc.get("drift") or [])):
        if len(d.versions) < 2:
            ctx.warn(f"{ctx.pointer('drift', i)}: {opt(d.package, 100)} lists fewer than two versions: not drift")
            continue
        versions = sorted({v.version for v in d.versions})
        shown = "; ".join(f"{v.version} in {_where(v)}" for v in d.versions[:SHOWN_VERSIONS])
        more = f"; and {len(d.versions) - SHOWN_VERSIONS} more" if len(d.versions) > SHOWN_VERSIONS else ""
        target = d.target or d.versions[0].version
        services = sorted({s for v in d.versions for s in v.services})
        ctx.emit(
            Signal(
                fingerprint=fingerprint("fixloop", "drift", repository, d.ecosystem, d.package, "\x1e".join(versions)),
                source=Source.FIXLOOP,
                kind=Kind.FINDING,
                title=title(
                    f"{d.package} ({d.ecosystem}) pinned at {len(d.versions)} versions: {shown}{more}; "
                    f"consolidate on {target}"
                ),
                severity=Severity.INFO,
                observed_at=observed,
                raw_ref=ctx.pointer("drift", i),
                category=Category.DRIFT,
                package=opt(d.package),
                installed_version=opt(d.versions[-1].version),  # the oldest pin
                ecosystem=opt(d.ecosystem),
                artifact=repository,
                service=opt(services[0]) if len(services) == 1 else None,
                location=opt(", ".join(sorted({p for v in d.versions for p in v.paths}))),
            )
        )
    more = doc.get("drift_more")
    if isinstance(more, int) and more > 0:
        ctx.warn(f"{ctx.pointer('drift_more')}: {more} more drifting packages were not listed by the inspection")
    for j, s in enumerate(_SKIPPED.validate_python(doc.get("skipped") or [])):
        ctx.warn(f"{ctx.pointer('skipped', j)}: {opt(s.path, 200)} was not inspected: {opt(s.reason, 200)}")
