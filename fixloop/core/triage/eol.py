"""End-of-life migrations, made by code for both triage engines (``rules`` and ``llm``, like incidents).

An image whose scanned OS release line, or the language runtime line its reference names (``python:3.7.10-slim``:
``fixloop.core.lifecycle.runtime_line``), is past its end of life on the day of triage (``fixloop.core.lifecycle``)
gets one ``eol_migration`` work item holding every OS-level vulnerability finding of that image, fixed or not:

* the findings without a fix will never get one on that line: the migration is the only change that closes them,
  where a risk digest of hundreds of them is a list nobody can act on;
* the findings with a fix are closed by the migration too (the target line carries newer packages), and a rebuild
  on the same line would edit the same ``FROM`` line: fixloop's one-merge-request-per-line rule would then make the
  migration join the rebuild's merge request, which fixes a fraction of what the migration says it does; the
  mirrors of ended lines also go away (CentOS 7's in July 2024, Debian 9 and 10 moved to archive.debian.org), so a
  rebuild's package updates stop working.

An image on an ended runtime line is the same case: the official images of an ended line get no new build (its
OS packages are not patched either), and the migration to a supported line's image (``python:3.10-slim``) moves its
OS too. An image whose runtime line and OS line have both ended gets ONE item, not two: both are the same ``FROM``
line, moved once; the item's ``eol`` is the runtime line (what the ``FROM`` names: its target's image is built on a
supported OS), with the OS line in ``eol.also``. An ended line whose end of life could not be checked never makes a
migration: an ended OS line with a runtime line endoflife.date could not say (``ruby``: no such product, or
unreachable) is the OS line's migration, and its ``also`` says the runtime line was not checked.

Language-package findings of the image keep their own items (a dependency bump per manifest). An image whose end of
life could not be checked (endoflife.date down, lookups off, an unknown line) or whose line is supported keeps its
``os_rebuild`` / ``risk_digest``, and those items carry the facts (``annotate``), so the digest says plainly whether
and why its end of life was not checked. Every signal stays in exactly one item or unassigned. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from fixloop.core.lifecycle import Lifecycles, assess, runtime_line, scanned_line
from fixloop.core.models import (
    Category,
    EndOfLifeFacts,
    Kind,
    Severity,
    Signal,
    WorkItem,
    WorkItemKind,
    advisory_counts,
    work_item_id,
)
from fixloop.core.naming import finding_title
from fixloop.core.service import ServiceNames
from fixloop.core.triage.rules import _NOT_FINDINGS, Assessed, os_level


def _os_findings(signals: Sequence[Signal]) -> dict[str, list[Signal]]:
    """The OS-level vulnerability findings of ``signals`` by scanned image (``artifact``, else ``target``), a
    fingerprint given more than once counted once (the latest observation), not-affected ones left out."""
    latest: dict[str, Signal] = {}
    for s in signals:
        prev = latest.get(s.fingerprint)
        if prev is None or s.observed_at >= prev.observed_at:
            latest[s.fingerprint] = s
    by_image: dict[str, list[Signal]] = defaultdict(list)
    for s in latest.values():
        if s.kind is not Kind.FINDING or s.category is not Category.VULNERABILITY or not os_level(s):
            continue
        if (s.fix_status or "").lower() in _NOT_FINDINGS or not (s.artifact or s.target):
            continue
        by_image[s.artifact or s.target or ""].append(s)
    return by_image


def _lines(image: str, members: Sequence[Signal]) -> list[tuple[str, str, str]]:
    """The release lines of ``image`` to check: the runtime line its reference names, then its scanned OS line."""
    return [line for line in (runtime_line(image), scanned_line(members)) if line is not None]


def scanned_lines(signals: Sequence[Signal]) -> list[tuple[str, str, str]]:
    """``(product, label, release)`` of each image's runtime and scanned OS lines among ``signals``' OS findings
    (``fixloop.core.lifecycle.runtime_line``, ``scanned_line``), each once: what to look up on endoflife.date."""
    return sorted({line for image, members in _os_findings(signals).items() for line in _lines(image, members)})


def image_facts(found: Sequence[EndOfLifeFacts]) -> EndOfLifeFacts:
    """One image's facts from its lines' (``_lines``' order: runtime, then OS): an ended line first, the runtime's
    before the OS's, else the first; the other line in ``also``."""
    main = next((f for f in found if f.ended), found[0])
    others = [f for f in found if f is not main]
    return main.model_copy(update={"also": others[0]}) if others else main


def migrations(
    signals: Sequence[Signal], lifecycles: Lifecycles, names: ServiceNames | None = None
) -> tuple[list[WorkItem], list[Signal], Assessed]:
    """Split ``signals``: (the ``eol_migration`` items of the images whose runtime or OS line has ended, the signals
    left to triage, every assessed image's facts with its OS findings: ``image_facts``). ``names`` names an item's
    service from its image (``ServiceNames``). A left signal is any whose fingerprint no migration took (duplicates
    included)."""
    items: list[WorkItem] = []
    assessed: Assessed = {}
    moved: set[str] = set()
    for image, members in sorted(_os_findings(signals).items()):
        lines = _lines(image, members)
        if not lines:
            continue
        facts = image_facts([assess(*line, lifecycles) for line in lines])
        fingerprints = frozenset(s.fingerprint for s in members)
        assessed[image] = (facts, fingerprints)
        if facts.ended:
            items.append(_migration(image, members, facts, names))
            moved |= fingerprints
    return items, [s for s in signals if s.fingerprint not in moved], assessed


def _migration(image: str, members: list[Signal], facts: EndOfLifeFacts, names: ServiceNames | None) -> WorkItem:
    members = sorted(members, key=lambda s: s.fingerprint)
    kind = WorkItemKind.EOL_MIGRATION
    counts = advisory_counts(members)
    service = names.of_artifact(image, None) if names is not None else None
    targets = sorted({s.target for s in members if s.target})
    ecosystems = sorted({s.ecosystem for s in members if s.ecosystem})
    return WorkItem(
        id=work_item_id(kind, service, kind.value, image, facts.product, facts.cycle),
        kind=kind,
        title=finding_title(kind, counts, service=service, artifact=image, eol=facts),
        severity=max((s.severity for s in members), key=lambda sev: sev.rank, default=Severity.UNKNOWN),
        signals=[s.fingerprint for s in members],
        artifact=image,
        target=targets[0] if len(targets) == 1 else None,
        ecosystem=ecosystems[0] if len(ecosystems) == 1 else None,
        advisories=sorted({s.advisory_id for s in members if s.advisory_id}),
        service=service,
        counts=counts,
        eol=facts,
    )


def annotate(items: list[WorkItem], assessed: Assessed) -> list[WorkItem]:
    """``items`` with the end-of-life facts of their image on each item made only of one assessed image's OS
    findings (its ``os_rebuild`` and its risk digest of unfixed ones, whichever engine made them)."""
    owner = {fp: image for image, (_, fps) in assessed.items() for fp in fps}
    out = []
    for w in items:
        images = {owner.get(fp) for fp in w.signals}
        if w.eol is None and len(images) == 1 and None not in images:
            (image,) = images
            w = w.model_copy(update={"eol": assessed[str(image)][0]})
        out.append(w)
    return out
