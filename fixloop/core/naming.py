"""What a finding work item is called: its title (``finding_title``: the service when triage knows it, the scanned
artifact otherwise) and, once its fix is located in a service's files (at triage: ``located``, which names its id
too; or at planning: ``named``), that service and a title naming it; the work item of an image rebuilt on its
base image's new tag (``rebuilt_on``, a base-image chain). Which service a scanned artifact is:
``fixloop.core.service.ServiceNames``. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from fixloop.core.lifecycle import day, target_text
from fixloop.core.models import (
    FIX_KINDS,
    TITLE_MAX,
    AdvisoryCounts,
    EndOfLifeFacts,
    Grouping,
    PackageBump,
    WorkItem,
    WorkItemKind,
    service_slug,
    work_item_id,
)
from fixloop.core.parsing import title, version_key

_DIGEST_WORDS = {
    "vulnerability": "unfixed vulnerabilities",
    "misconfiguration": "misconfigurations",
    "secret": "exposed secrets",
    "sast": "code findings (SAST)",
    "drift": "packages pinned at several versions",
}


def _place(service: str | None, target: str | None, fallback: str) -> str:
    """Where a change goes in a title: ``<target> of <service>``, ``<service>``, else ``fallback``."""
    if service:
        return f"{target} of {service}" if target else service
    return fallback


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _by_version(ecosystem: str | None, versions: Sequence[str]) -> list[str]:
    """``versions`` without repeats, lowest first by the ecosystem's rules (as given when they do not compare)."""
    distinct = list(dict.fromkeys(versions))
    keys = [version_key(ecosystem, v) for v in distinct]
    try:
        return [v for _, v in sorted(zip(keys, distinct, strict=True), key=lambda kv: kv[0])]
    except TypeError:  # a version the ecosystem's rules do not read
        return distinct


def finding_title(
    kind: WorkItemKind,
    counts: AdvisoryCounts,
    *,
    service: str | None = None,
    artifact: str | None = None,
    target: str | None = None,
    packages: Sequence[PackageBump] = (),
    category: str | None = None,
    eol: EndOfLifeFacts | None = None,
    grouping: Grouping | None = None,
) -> str:
    """The rules' title of a finding work item, at most ``TITLE_MAX`` characters, naming ``service`` when it is
    known and the scanned ``artifact`` (and ``target``) otherwise; its counts are ``counts.text()``:

    * ``os_rebuild``: ``Rebuild <service or image> on a patched base image (fixes 3 CVEs: 1 critical, 2 medium)``;
    * ``dependency_bump``: ``Bump <package> <installed> → <fixed> in <target> of <service> (fixes ...)`` (one
      package), ``Bump <n> packages in ...`` (several); without a service ``in <target or artifact>``; a
      ``per-package`` one (``grouping``), ``Bump <package> <installed>, <installed> → <fixed> in every manifest``;
    * ``risk_digest``: ``Risk digest: <n> <what> in <service or artifact / target> (<severities>)``, ``what`` from
      the ``category`` (``unfixed vulnerabilities``, ``misconfigurations``, ...);
    * ``eol_migration`` (with its ``eol`` facts): ``Migrate CentOS 7.6.1810 (end of life 2024-06-30) in <service or
      image> to CentOS Stream 9 (covers 403 CVEs: ...)``."""
    if kind is WorkItemKind.EOL_MIGRATION and eol is not None:
        where = service or artifact or target or "the image"
        head = f"Migrate {eol.label} {eol.release} (end of life {day(eol.eol)}) in {where} to {target_text(eol)}"
        text = f"{head} (covers {counts.text()})"
    elif kind is WorkItemKind.OS_REBUILD:
        text = f"Rebuild {service or artifact or target or 'the image'} on a patched base image (fixes {counts.text()})"
    elif kind is WorkItemKind.DEPENDENCY_BUMP and grouping == "per-package" and packages:
        first = packages[0]
        installed = ", ".join(_by_version(first.ecosystem, [p.installed_version or "?" for p in packages]))
        head = f"Bump {first.package} {installed} \u2192 {first.fixed_version} in every manifest"
        text = f"{head} (fixes {counts.text()})"
    elif kind is WorkItemKind.DEPENDENCY_BUMP:
        place = _place(service, target, target or artifact or "the project")
        if len(packages) == 1:
            p = packages[0]
            head = f"Bump {p.package} {p.installed_version or '?'} \u2192 {p.fixed_version} in {place}"
        else:
            head = f"Bump {_plural(len({p.package for p in packages}), 'package')} in {place}"
        text = f"{head} (fixes {counts.text()})"
    else:
        what = _DIGEST_WORDS.get(category or "", "findings")
        place = " / ".join(p for p in (artifact, target) if p) or "unnamed target"
        text = f"Risk digest: {counts.total} {what} in {_place(service, target, place)} ({counts.severities()})"
    return title(text, TITLE_MAX)


def named(item: WorkItem, service: str | None) -> WorkItem:
    """``item`` once planning found the ``service`` its change touches: a fix (``os_rebuild``,
    ``dependency_bump``, ``eol_migration``) that triage could not name a service for takes it, and its title names it
    instead of the scanned artifact: the rules' title is made again (``finding_title``); a model's title has the
    artifact's name replaced by the service's (left as it is when it does not contain it). The id stays (branches,
    labels and the loop's workflow id are made from it). ``item`` itself when there is nothing to name: no
    ``service``, the item already has one, or it is no fix."""
    if not service or item.service or item.kind not in FIX_KINDS:
        return item
    if item.engine != "llm" and item.counts is not None:
        text = finding_title(
            item.kind,
            item.counts,
            service=service,
            artifact=item.artifact,
            target=item.target,
            packages=item.packages,
            eol=item.eol,
            grouping=item.grouping,
        )
    elif item.artifact and item.artifact in item.title:
        text = title(item.title.replace(item.artifact, service), TITLE_MAX)
    else:
        text = item.title
    return item.model_copy(update={"service": service, "title": text})


def located(item: WorkItem, service: str | None) -> WorkItem:
    """``item`` (a fix triage named no service for) once its fix was located in ``service``'s files at triage: named
    (``named``) and its id ``<service>-<kind>-<hash>`` (the same hash: the same grouping, the same loop, for as
    long as the repository keeps that package or image in that service). ``item`` itself when ``named`` changes
    nothing, or for an id of the earlier ``wi-`` form."""
    renamed = named(item, service)
    slug = service_slug(service)
    if renamed is item or not slug or item.id.startswith("wi-"):
        return item
    return renamed.model_copy(update={"id": f"{slug}-{item.id}"})


def rebuilt_on(item: WorkItem, image: str, base: str, tag: str) -> WorkItem:
    """The work item of ``image`` (an ``images:`` name) rebuilt FROM ``base``'s new ``tag``, one link of the
    base-image chain that ``item`` (the base's fix) started: an ``os_rebuild`` of service ``image``, titled
    ``Rebuild <image> on <base> <tag> (<item's title>)``, with ``item``'s signals, severity and advisories (what the
    rebuild fixes in that image); its id ``<image>-os-rebuild-<hash>`` is derived from ``item``'s id and ``image``,
    so the same chain gives the same ids."""
    return WorkItem(
        id=work_item_id(WorkItemKind.OS_REBUILD, image, "base-image-chain", item.id, image),
        kind=WorkItemKind.OS_REBUILD,
        title=title(f"Rebuild {image} on {base} {tag} ({item.title})", TITLE_MAX),
        severity=item.severity,
        signals=item.signals,
        engine=item.engine,
        advisories=item.advisories,
        service=image,
        counts=item.counts,
    )
