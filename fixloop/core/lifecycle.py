"""End of life of the release lines a scanned image is on, and the supported line to move it to.

Two lines of an image are checked, from what triage has of it (its findings; the repository's Dockerfiles are not
read at triage):

* its OS line: a scanner names the OS release of an image (Trivy ``<image> (centos 7.6.1810)``, Grype ``debian
  10``, a package purl's ``distro``: ``fixloop.core.change.locate.scanned_os``; ``scanned_line``);
* its language runtime line, from the scanned artifact's image reference (``runtime_line``): the official
  ``python:3.7.10-slim``, ``node:12-alpine``, ``ruby:3.0`` images and any registry's image of that name
  (``cgr.dev/chainguard/ruby:latest-3.0``), the runtimes of ``fixloop.core.products.RUNTIMES``. A scan of an image
  archive (Trivy's ``testdata/.../distroless-python27.tar.gz``) names no reference: no runtime line; a runtime
  installed as an OS package (Debian's ``python2.7``) is the OS line's, patched as long as that line is supported.

endoflife.date lists the release lines of each product and their end of life (``fixloop.integrations.endoflife``,
looked up by ``fixloop.activities.triage``, handed in here as ``Lifecycles``). ``assess`` says whether a line is past
its end of life on a given day and which line to move to; the triage engines then make one ``eol_migration`` work
item per such image (``fixloop.core.triage.eol``) instead of a risk digest of findings nobody can fix on that line.

The end of life is endoflife.date's ``eol``: the end of the security support the project itself gives (Debian's
security team, Ubuntu's standard support, CentOS's updates). Extended support (Debian LTS, Ubuntu Pro ESM, a vendor's
paid support) is shown beside it, not counted: the official image of a line gets no new build after its ``eol``,
and paid support is not in it.

The target (``choose_target``) is the oldest line released by ``today`` that is newer than the ended one and still
supported ``MIN_SUPPORT_LEFT`` (a year) after ``today``; when none lasts that long, the supported line whose support
lasts longest. The oldest such line is the smallest jump (fewest changed packages, defaults and ABIs: the migration
most likely to pass its tests) that is not another migration within months; the newest line is often too new for
the runtime images built on it, or a short-lived one (Ubuntu's interim releases, Node.js's odd majors). A product
without any supported line moves to its successor (``SUCCESSORS``: CentOS -> CentOS Stream), another image.

Pure: no clock (``today`` is an input, the activity's UTC day), no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from fixloop.core.change.facts import Cycle, image_products, match_cycle
from fixloop.core.change.locate import scanned_os
from fixloop.core.models import EndOfLifeFacts, EndOfLifeTarget, Signal
from fixloop.core.parsing import clean
from fixloop.core.products import LABELS, OS_PRODUCTS, RUNTIMES

# A product every line of which has ended -> the product its users move to (another image).
SUCCESSORS: dict[str, tuple[str, str]] = {"centos": ("centos-stream", LABELS["centos-stream"])}
MIN_SUPPORT_LEFT = timedelta(days=365)
NOT_LOOKED_UP = "not looked up"
_NUMBERS = re.compile(r"^\d+(?:\.\d+)*$")


@dataclass(frozen=True)
class Lifecycles:
    """What endoflife.date said on ``today`` (a UTC day): ``lines`` maps a product to its release lines, or to why
    there are none (``not looked up: endoflife.date unreachable``, ``endoflife.date has no product x``)."""

    today: date
    lines: Mapping[str, Sequence[Cycle] | str] = field(default_factory=dict)

    def of(self, product: str) -> Sequence[Cycle] | str:
        return self.lines.get(product, NOT_LOOKED_UP)


def scanned_line(signals: Sequence[Signal]) -> tuple[str, str, str] | None:
    """``(product, label, release)`` of the OS release ``signals`` were scanned on (``scanned_os``: the most common
    one), when endoflife.date tracks that OS (``fixloop.core.products.OS_PRODUCTS``): ``("centos", "CentOS",
    "7.6.1810")``; else None."""
    found = scanned_os(signals)
    if found is None or found[0] not in OS_PRODUCTS:
        return None
    product, label = OS_PRODUCTS[found[0]]
    release = clean(found[1], 60)
    return (product, label, release) if release else None


def runtime_line(image: str | None) -> tuple[str, str, str] | None:
    """``(product, label, release)`` of the language runtime line a scanned image's reference names, when it is an
    image of a runtime of ``RUNTIMES`` (``fixloop.core.change.facts.image_products``: the last path segment and the
    tag's version): ``python:3.7.10-slim`` -> ``("python", "Python", "3.7.10")``, ``node:12-alpine`` -> ``("nodejs",
    "Node.js", "12")``, Chainguard's ``cgr.dev/chainguard/ruby:latest-3.0`` -> ``("ruby", "Ruby", "3.0")``; None for
    any other image, an archive path, a tag naming no version (``latest``, ``lts-alpine``) or a digest-only
    reference."""
    if not image:
        return None
    name, colon, tag = image.split("@", 1)[0].rpartition(":")
    if colon and tag.startswith("latest-"):  # Chainguard's tags: latest-<line>
        image = f"{name}:{tag.removeprefix('latest-')}"
    for product, label, release in image_products(image):
        if product in RUNTIMES and (release := clean(release, 60))[:1].isdigit():  # a word (lts, slim): no line
            return product, label, release
    return None


def products(lines: Sequence[tuple[str, str, str]]) -> list[str]:
    """The endoflife.date products to look up for these scanned lines: each one's product and its successor
    (``SUCCESSORS``), each once, sorted."""
    wanted = {p for p, _, _ in lines} | {SUCCESSORS[p][0] for p, _, _ in lines if p in SUCCESSORS}
    return sorted(wanted)


def reached(eol: date | bool | None, today: date) -> bool:
    """Whether an end of life ``eol`` is reached on ``today``: True, or a date on or before it (the day endoflife.date
    names is the first without support). False (not announced) and None (not known) are never reached."""
    return eol is True or (isinstance(eol, date) and eol <= today)


def _supported_until(c: Cycle, day: date) -> bool:
    """Whether line ``c`` is still supported on ``day`` (its end of life announced as False counts as supported; an
    unknown one does not: fixloop does not send a migration to a line whose support it cannot say)."""
    return c.eol is False or (isinstance(c.eol, date) and c.eol > day)


def _version(cycle: str) -> tuple[int, ...] | None:
    return tuple(int(x) for x in cycle.split(".")) if _NUMBERS.match(cycle) else None


def _age(c: Cycle, position: int) -> tuple[date, tuple[int, ...], int]:
    """An ordering key, oldest first: the release date, else the version, else the listing (newest first)."""
    return (c.release_date or date.min, _version(c.cycle) or (), -position)


def _newer(c: Cycle, current: Cycle, positions: Mapping[str, int]) -> bool:
    if c.release_date is not None and current.release_date is not None:
        return c.release_date > current.release_date
    a, b = _version(c.cycle), _version(current.cycle)
    if a is not None and b is not None:
        return a > b
    return positions[c.cycle] < positions[current.cycle]


def choose_target(
    current: Cycle | None, cycles: Sequence[Cycle], today: date, runway: timedelta = MIN_SUPPORT_LEFT
) -> Cycle | None:
    """The line to move to from ``current`` (None: any line of ``cycles``, a successor product's): the oldest line
    released by ``today``, newer than ``current``, and supported beyond ``today + runway``; when none lasts that
    long, the supported one whose support lasts longest; None when no newer line is supported on ``today``."""
    positions = {c.cycle: i for i, c in enumerate(cycles)}
    released = [c for c in cycles if c.release_date is None or c.release_date <= today]
    newer = [c for c in released if current is None or (c.cycle != current.cycle and _newer(c, current, positions))]
    supported = [c for c in newer if _supported_until(c, today)]
    lasting = [c for c in supported if _supported_until(c, today + runway)]
    if lasting:
        return min(lasting, key=lambda c: _age(c, positions[c.cycle]))
    if not supported:
        return None
    return max(supported, key=lambda c: (c.eol is False, c.eol if isinstance(c.eol, date) else date.min))


def _target(product: str, label: str, c: Cycle) -> EndOfLifeTarget:
    return EndOfLifeTarget(
        product=product, label=label, cycle=c.cycle, codename=c.codename, eol=c.eol, latest=c.latest
    )


def assess(product: str, label: str, release: str, lifecycles: Lifecycles) -> EndOfLifeFacts:
    """The end of life of ``release`` (``10.8``, ``7.6.1810``, a codename) of ``product`` among what
    ``lifecycles`` holds (``match_cycle``: the longest line the version is on), on ``lifecycles.today``, and the
    line to move to when it has ended (``choose_target``; a product with none moves to its successor's). ``missing``
    says why nothing is known: not looked up (and why), or no such line."""
    today = lifecycles.today
    base = EndOfLifeFacts(product=product, label=label, release=clean(release, 60) or "?", checked_on=today)
    found = lifecycles.of(product)
    if isinstance(found, str):
        return base.model_copy(update={"missing": clean(found, 200)})
    line = match_cycle(release, found)
    if line is None:
        return base.model_copy(
            update={"missing": f"endoflife.date lists no {label} release line for {clean(release, 40)}"}
        )
    facts = base.model_copy(
        update={
            "cycle": line.cycle,
            "codename": line.codename,
            "eol": line.eol,
            "extended": line.extended,
            "ended": reached(line.eol, today),
        }
    )
    if not facts.ended:
        return facts
    target = choose_target(line, found, today)
    if target is not None:
        return facts.model_copy(update={"target": _target(product, label, target)})
    if product in SUCCESSORS:
        successor, successor_label = SUCCESSORS[product]
        theirs = lifecycles.of(successor)
        if not isinstance(theirs, str) and (target := choose_target(None, theirs, today)) is not None:
            return facts.model_copy(update={"target": _target(successor, successor_label, target)})
    return facts


# ---------------------------------------------------------------- words


def day(value: date | bool | None) -> str:
    """An end of life as a title says it: ``2024-06-30``, ``ended`` (True without a date), ``none announced``
    (False), ``unknown`` (None)."""
    if isinstance(value, date):
        return value.isoformat()
    if value is True:
        return "ended"
    return "none announced" if value is False else "unknown"


def line_text(label: str, cycle: str, codename: str | None = None) -> str:
    """``Debian 13 (Trixie)``, ``CentOS Stream 9``."""
    return f"{label} {cycle}" + (f" ({codename})" if codename else "")


def target_text(facts: EndOfLifeFacts) -> str:
    """The line to move to, ``Debian 13 (Trixie)``, or ``a supported line`` when endoflife.date lists none."""
    t = facts.target
    return line_text(t.label, t.cycle, t.codename) if t is not None else "a supported line"


def _until(value: date | bool | None) -> str:
    if isinstance(value, date):
        return f"supported until {value.isoformat()}"
    return "supported, no end of life announced" if value is False else "of an unknown end of life"


def describe(facts: EndOfLifeFacts) -> str:
    """A plain-text paragraph for the work item's Jira issue and merge request: the line, its end of life and
    extended support, the target and its support, with endoflife.date's page and the day it was checked; or why
    the end of life could not be checked. The image's other line (``also``) follows in the same words: ``Its OS
    line: Debian 10 (Buster) reached ...`` (the target runtime's image in that OS's supported variant)."""
    text = _describe(facts)
    if facts.also is None:
        return text
    kind = "runtime" if facts.also.product in RUNTIMES else "OS"
    return f"{text} Its {kind} line: {_describe(facts.also)}"


def _describe(facts: EndOfLifeFacts) -> str:
    what = f"{facts.label} {facts.release}"
    checked = f"endoflife.date, checked on {facts.checked_on.isoformat()}: {facts.link}"
    if facts.missing is not None or facts.cycle is None:
        return f"End of life of {what}: not checked ({facts.missing or 'unknown line'})."
    line = line_text(facts.label, facts.cycle, facts.codename)
    subject = line if facts.release == facts.cycle else f"{what}, on the {line} line,"
    extended = ""
    if isinstance(facts.extended, date) and facts.extended != facts.eol:
        extended = f" (extended support until {facts.extended.isoformat()})"
    if not facts.ended:
        return f"{subject} is {_until(facts.eol)}{extended} ({checked})."
    ended = f"on {facts.eol.isoformat()}" if isinstance(facts.eol, date) else "(no date given)"
    text = f"{subject} reached its end of life {ended}{extended}: no more security fixes."
    if facts.target is None:
        return f"{text} endoflife.date lists no supported {facts.label} line to move to ({checked})."
    return f"{text} Move it to {target_text(facts)}, {_until(facts.target.eol)} ({checked})."
