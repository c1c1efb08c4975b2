"""The merge request's text: a title a reviewer understands, a description with the findings closed, what is not
fixed, risks, verification, rollback, and a machine-readable block fixloop reads back.

Scanner text is untrusted: identifiers (packages, advisories, versions, paths) are shown as code spans (no
Markdown, HTML, links, mentions or references inside), free text is escaped and defanged, everything is bounded.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from datetime import UTC, date

from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict

from fixloop.core import lifecycle  # it imports this package (facts, locate): its names are read at call time
from fixloop.core.change.facts import ChangeFacts, DependencyRole, Lifecycle, Link, PackageRelease, ago, bumped_images
from fixloop.core.change.images import Delivery, Dependent, ImageSpec
from fixloop.core.change.ops import (
    BumpBaseImage,
    BumpGoModule,
    BumpMavenDependency,
    BumpNpmPackage,
    BumpPythonPin,
    BumpWorkloadImage,
    Operation,
    PackageOp,
    SetHelmValue,
    subject,
)
from fixloop.core.change.plan import PLAN_VERSION, REGISTRIES, HeldBack, Jump, Plan
from fixloop.core.markup import INVISIBLE, defang_urls, markdown
from fixloop.core.models import Signal, WorkItem, WorkItemKind, advisory_counts
from fixloop.core.parsing import clean

IMAGE_OPS = (BumpBaseImage, BumpWorkloadImage, SetHelmValue)  # a new image: closes every OS finding of the old one
PACKAGE_OPS = (BumpPythonPin, BumpNpmPackage, BumpGoModule, BumpMavenDependency)
TITLE_MAX = 255  # GitLab's limit
BREAKING_MARK = "Breaking: "  # before the title of a change with a breaking bump, when it fits TITLE_MAX
CALLOUTS_MAX = 10  # breaking bumps called out at the top (the others are counted)
VERIFICATION_MAX = 1_500  # the verification plan paragraph
TABLE_ROWS_MAX = 100
SUMMARY_MAX = 1200  # characters of a drafted summary
DRAFT_NOTES_MAX = 5
ROLLBACK = "Revert the merge commit; fixloop opens the revert MR if verification fails."
_ECO_WORD = {"pypi": "Python", "npm": "npm", "go": "Go"}
_BLOCK = re.compile(r"<!-- fixloop:(\{[^\n]*\}) -->\s*\Z")


class MergeRequestText(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str
    description: str
    labels: list[str]


# ---------------------------------------------------------------- escaping


def code(value: object, limit: int = 120, *, cell: bool = False) -> str:
    """Untrusted text as an inline code span: one line, bounded, backticks replaced, ``|`` escaped in a table cell."""
    s = clean(value, limit).replace("`", "\u02cb") or " "
    return f"`{s.replace('|', chr(92) + '|') if cell else s}`"


text = markdown  # untrusted free text in the description: ``fixloop.core.markup.markdown``


def plain(value: object, limit: int) -> str:
    """Untrusted text in a plain-text field (the MR title): one line, bounded, no angle brackets or backticks."""
    return re.sub(r"[<>`]", "", clean(value, limit))


def title_line(value: object, limit: int = TITLE_MAX) -> str:
    """Untrusted free text as an MR title (a model's draft): ``plain`` without zero-width or bidi control
    characters, and, since GitLab renders references, mentions and autolinks in titles, every @mention and
    #, !, ~, %, $, & reference (such a character before a space, ``,;:)`` or the end starts none, as in
    ``+200 %``: it is left alone; before a period it is broken too, as GitLab's label names may start with one:
    ``~.x``) and every ``://`` broken with a zero-width space; at most ``limit`` characters."""
    s = re.sub(r"([@#!~%$&])(?![\s,;:)]|$)", "\\1\u200b", INVISIBLE.sub("", plain(value, limit)))
    return clean(defang_urls(s), limit)


_ADVISORY_LINKS = (
    (re.compile(r"^CVE-\d{4}-\d{4,7}$"), "https://nvd.nist.gov/vuln/detail/{}"),
    (re.compile(r"^GHSA(-[23456789cfghjmpqrvwx]{4}){3}$"), "https://github.com/advisories/{}"),
    (re.compile(r"^SNYK-[A-Z0-9]+(-[A-Z0-9]+)*-\d+$"), "https://security.snyk.io/vuln/{}"),
    (re.compile(r"^(PYSEC|GO|RUSTSEC|OSV|GSD|GMS|MAL)-\d{4}-\d{1,7}$"), "https://osv.dev/vulnerability/{}"),
)


def advisory(value: str) -> str:
    """An advisory id, linked to its canonical page when it is a well-formed id of a known database (the link is
    built from the id, never taken from the scanner), else a plain code span."""
    for pattern, url in _ADVISORY_LINKS:
        if pattern.match(value):
            return f"[{value}]({url.format(value)})"
    return code(value, 64, cell=True)


# ---------------------------------------------------------------- findings


def _fixes(signals: Sequence[Signal]) -> str:
    """``fixes 3 CVEs: 1 critical, 2 medium``: the work item's and Jira's counting rule (``advisory_counts``)."""
    return f"fixes {advisory_counts(signals).text()}"


def _covered(plan: Plan, signals: Sequence[Signal]) -> list[tuple[Signal, str]]:
    """``(signal, fixed version)`` of each signal an operation closes: every OS package finding for a base image
    bump (the fix comes with the new image), the bumped package's findings otherwise."""
    new_by_package: dict[str, str] = {}
    rebuild = any(isinstance(op, IMAGE_OPS) for op in plan.operations)
    held = {h.fingerprint for h in plan.held_back}  # left open by the policy's max_jump
    for op in plan.operations:
        if isinstance(op, PACKAGE_OPS):
            new_by_package[canonicalize_name(subject(op))] = op.new
    out = []
    for s in signals:
        name = canonicalize_name(s.package or "")
        if name in new_by_package:
            if s.fingerprint not in held:
                out.append((s, new_by_package[name]))
        elif rebuild:
            out.append((s, s.fixed_version or "?"))
    out.sort(key=lambda sv: (-sv[0].severity.rank, sv[0].advisory_id or "", sv[0].package or ""))
    return out


def closed_findings(item: WorkItem, plan: Plan, signals: Sequence[Signal]) -> list[tuple[Signal, str]]:
    """``(signal, fixed version)`` of each of ``item``'s signals (``signals`` may be a superset) that ``plan``'s
    operations close, most severe first: the rows of the MR's findings table."""
    wanted = set(item.signals)
    return _covered(plan, sorted((s for s in signals if s.fingerprint in wanted), key=lambda s: s.fingerprint))


# ---------------------------------------------------------------- breaking bumps and max_jump (up front)


def jumps_of(plan: Plan) -> list[Jump]:
    """The breaking bumps among ``plan``'s operations (a model's draft may keep fewer than were planned)."""
    # a Jump's fields are bounded as the planner wrote them (``clean``): a 61-character version is matched cut too
    made = {
        (clean(subject(op), 120), clean(op.current, 60), clean(op.new, 60))
        for op in plan.operations
        if isinstance(op, PACKAGE_OPS)
    }
    return [j for j in plan.jumps if (j.package, j.current, j.new) in made]


def held_of(plan: Plan) -> list[HeldBack]:
    """The advisories ``plan``'s package operations leave open under the policy's ``max_jump``."""
    made = {canonicalize_name(subject(op)) for op in plan.operations if isinstance(op, PACKAGE_OPS)}
    return [h for h in plan.held_back if canonicalize_name(h.package) in made]


def _listing_words(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def _changelog(release: PackageRelease | None) -> Link | None:
    links = release.links if release is not None else []
    return next((link for link in links if link.label in ("release notes", "changelog")), None)


def jump_sentence(jump: Jump, release: PackageRelease | None, *, markup: bool = True) -> str:
    """One breaking bump as a reviewer reads it first: ``Werkzeug 0.11 → 0.15.3 is a 0.x minor jump (skips 0.12,
    0.13 and 0.14 by PyPI's release list): read the changelog before approving.``, the release lines skipped
    named by the registry's release list or, without one, by the versions the advisories name (and why no list was
    read), and the target release's release notes or changelog (``release``, from ``fixloop.core.change.facts``)
    linked. ``markup``: GitLab Markdown (identifiers as code spans, the rest escaped); False: plain text, for Jira
    (whose activity escapes it)."""
    ident = code if markup else (lambda v, n=120: clean(v, n))
    words = text if markup else (lambda v, n=300: clean(v, n))
    what = {"major": "a major jump", "0.x minor": "a 0.x minor jump"}.get(jump.kind or "", "")
    verb = f"is {what} to a pre-release" if what and jump.prerelease else f"is {what}" if what else "is a pre-release"
    lines = [*jump.skipped] + ([f"{jump.skipped_more} more"] if jump.skipped_more else [])
    skips = ""
    if jump.kind is not None and jump.registry:
        by = f"{words(jump.registry, 40)}'s release list"
        skips = f" (skips {_listing_words(lines)} by {by})" if lines else f" ({by} has no release line between them)"
    elif jump.kind is not None:
        why = f"; no release list was read: {words(jump.unlisted, 200)}" if jump.unlisted else ""
        skips = (
            f" (skips {_listing_words(lines)} by the versions the advisories name{why})"
            if lines
            else f" (the advisories name no release line between them{why})"
        )
    link = _changelog(release)
    if link is None:
        tail = "read its release notes before approving"
    elif markup:
        tail = f"read the [{link.label}]({link.url}) before approving"
    else:
        tail = f"read the {link.label} ({link.url}) before approving"
    change = f"{ident(jump.package, 120)} {ident(jump.current, 60)} \u2192 {ident(jump.new, 60)}"
    return f"{change} {verb}{skips}: {tail}."


def held_sentence(package: str, held: Sequence[HeldBack], *, markup: bool = True) -> str:
    """The advisories of ``package`` a bump leaves open under the policy's ``max_jump``, each with the version it
    needs: ``Werkzeug: CVE-2019-14806 needs 0.15.3, pyup.io-26435 needs 0.12; they stay open on the work item.``
    (advisories linked as in the findings table when ``markup``)."""
    limit = 20
    adv = advisory if markup else (lambda v: clean(v, 120))
    ident = code if markup else (lambda v, n=120: clean(v, n))
    named = [f"{adv(h.advisory)} needs {ident(h.needs, 60)}" if h.needs else adv(h.advisory) for h in held]
    more = f" and {len(named) - limit} more" if len(named) > limit else ""
    return f"{ident(package, 120)}: {', '.join(named[:limit])}{more}; they stay open on the work item."


def _by_package(held: Sequence[HeldBack]) -> dict[str, list[HeldBack]]:
    out: dict[str, list[HeldBack]] = {}
    for h in held:
        out.setdefault(h.package, []).append(h)
    return out


def callouts(plan: Plan, facts: ChangeFacts | None, *, markup: bool = True) -> list[str]:
    """What a reviewer must read before the rest, one line each: every breaking bump of ``plan``
    (``jump_sentence``) and every package whose advisories the policy's ``max_jump`` leaves open
    (``held_sentence``), at most ``CALLOUTS_MAX`` of each (the others counted: at most ``2 * CALLOUTS_MAX + 2``
    lines). ``markup``: each a Markdown blockquote line
    (``> **Breaking:** ...``); False: plain text lines (``Breaking: ...``), for the Jira comment."""
    jumps = jumps_of(plan)
    strong = (lambda w: f"> **{w}:** ") if markup else (lambda w: f"{w}: ")
    out = [
        strong("Breaking") + jump_sentence(j, facts.release_of(j.package, j.new) if facts else None, markup=markup)
        for j in jumps[:CALLOUTS_MAX]
    ]
    if len(jumps) > CALLOUTS_MAX:
        out.append(strong("Breaking") + f"{len(jumps) - CALLOUTS_MAX} more bumps: see the risk notes.")
    packages = sorted(_by_package(held_of(plan)).items())
    for package, held in packages[:CALLOUTS_MAX]:
        jump = f"`max_jump: {held[0].max_jump}`" if markup else f"max_jump: {held[0].max_jump}"
        out.append(strong(f"Not fixed within {jump}") + held_sentence(package, held, markup=markup))
    if len(packages) > CALLOUTS_MAX:
        out.append(strong("Not fixed") + f"{len(packages) - CALLOUTS_MAX} more packages: see below.")
    return out


# ---------------------------------------------------------------- title


def _one_package(ops: Sequence[Operation]) -> PackageOp | None:
    """The first of ``ops`` when they all bump one package (by its normalised name) to one version, else None."""
    bumps = [op for op in ops if isinstance(op, PACKAGE_OPS)]
    if not bumps or len(bumps) != len(ops) or len({(canonicalize_name(subject(o)), o.new) for o in bumps}) != 1:
        return None
    return bumps[0]


def title_for(plan: Plan, covered: Sequence[Signal]) -> str:
    ops = plan.operations
    fixes = _fixes(covered)
    dirs = sorted({posixpath.dirname(op.path) for op in ops})
    where = f" in {dirs[0]}" if len(dirs) == 1 and dirs[0] else ""
    if all(isinstance(op, BumpBaseImage) for op in ops):
        changes = {(op.current, op.new) for op in ops if isinstance(op, BumpBaseImage)}
        if len(changes) == 1:
            ((cur, new),) = changes
            image, _, old_tag = cur.rpartition(":")
            head = f"Bump {image.split('/')[-1]} base image {old_tag} \u2192 {new.rpartition(':')[2]}"
        else:
            head = f"Bump base images{where}"
    elif len(ops) == 1 and isinstance(ops[0], BumpWorkloadImage | SetHelmValue):
        op = ops[0]
        image = op.image.split("/")[-1] if isinstance(op, BumpWorkloadImage) else plain(op.key, 80)
        head = f"Bump {image} image {op.current} \u2192 {op.new}{where}"
    elif len(ops) == 1 and isinstance(ops[0], PACKAGE_OPS):
        op = ops[0]
        head = f"Bump {plain(subject(op), 80)} {op.current} \u2192 {op.new}{where}"
    elif (one := _one_package(ops)) is not None:  # one package raised to one version in several files
        currents = ", ".join(dict.fromkeys(plain(o.current, 40) for o in ops if isinstance(o, PACKAGE_OPS)))
        head = f"Bump {plain(subject(one), 80)} {currents} \u2192 {one.new}{where or f' in {len(ops)} manifests'}"
    else:
        kinds = {op.op for op in ops}
        word = {
            "bump_python_pin": "Python ",
            "bump_npm_package": "npm ",
            "bump_go_module": "Go ",
            "bump_maven_dependency": "Maven ",
        }
        eco = word.get(next(iter(kinds)), "") if len(kinds) == 1 else ""
        head = f"Bump {len(ops)} {eco}packages{where}"
    return plain(f"{head} ({fixes})", TITLE_MAX)


# ---------------------------------------------------------------- description


def _change_line(op: Operation) -> str:
    if isinstance(op, BumpBaseImage):
        return f"- {code(op.path)}: base image {code(op.current)} \u2192 {code(op.new)} (FROM of stage {op.stage})"
    if isinstance(op, BumpNpmPackage):
        files = " and ".join(code(p) for p in op.paths())
        direct = "" if op.direct else " (transitive: lockfile only)"
        return f"- {files}: {code(op.package)} {code(op.current)} \u2192 {code(op.new)}{direct}"
    return f"- {code(op.path)}: {code(subject(op))} {code(op.current)} \u2192 {code(op.new)}"  # type: ignore[union-attr]


def machine_block(item: WorkItem, plan: Plan) -> str:
    """``<!-- fixloop:{json} -->``: the work item, branch and operations, as fixloop reads them back. The JSON is
    ASCII with ``<``, ``>``, ``&`` and ``-`` escaped, so no value can end the comment."""
    payload = {
        "version": PLAN_VERSION,
        "work_item": item.id,
        "branch": plan.branch,
        "operations": [op.model_dump(mode="json") for op in plan.operations],
    }
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    for ch in "<>&-":
        body = body.replace(ch, f"\\u{ord(ch):04x}")
    return f"<!-- fixloop:{body} -->"


def read_back(description: str) -> dict[str, object] | None:
    """The machine-readable block at the end of a description fixloop wrote, or None."""
    m = _BLOCK.search(description[-200_000:])
    if not m:
        return None
    try:
        data = json.loads(m.group(1))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- what the change is (fixloop.core.change.facts)


def _role_text(role: DependencyRole) -> str:
    via = ", ".join(code(v, 100) for v in role.via) + (f" and {role.via_more} more" if role.via_more else "")
    how = "a direct" if role.direct else "a transitive"
    where = f" ({code(role.group, 60)})" if role.group else ""
    if role.scope == "dev":
        kind = f"{how} dev-only dependency{where}"
    elif role.scope == "optional":
        kind = f"{how} optional dependency{where}"
    else:
        kind = f"{how} runtime dependency"
    return kind + (f" (via {via})" if via else "")


def _release_text(release: PackageRelease, today: date) -> str:
    parts = []
    if release.released_at is not None:
        day = release.released_at.astimezone(UTC).date()
        parts.append(f"released {day.isoformat()}, {ago(day, today)}")
    if release.yanked:
        why = f": {text(release.yanked_reason, 200)}" if release.yanked_reason else ""
        parts.append(f"**yanked** from {REGISTRIES[release.ecosystem]}{why}")
    if release.links:
        parts.append(", ".join(f"[{link.label}]({link.url})" for link in release.links))
    if release.missing:
        parts.append(f"release notes: {text(release.missing, 200)}")
    return "; ".join(parts)


def packages_section(facts: ChangeFacts, operations: Sequence[Operation]) -> list[str]:
    """The ``### Packages`` lines: per bumped package its change, its role (direct or transitive and via which
    packages, runtime, dev-only or optional), its target release's date and age (relative to
    ``facts.looked_up_on``), yank state and links (fixloop's labels, URLs checked by ``facts.safe_url``), or why
    they were not looked up; a transitive or dev-only package says what that means for the verification. Empty
    without a package operation."""
    out = []
    for op in operations:
        if not isinstance(op, PACKAGE_OPS):
            continue
        name = subject(op)
        role = facts.role_of(name, op.paths())
        release = facts.release_of(name, op.new)
        about = [_role_text(role)] if role else []
        if release is not None and (shown := _release_text(release, facts.looked_up_on)):
            about.append(shown)
        line = f"- {code(name, 120)} {code(op.current, 60)} \u2192 {code(op.new, 60)}"
        out.append(line + (": " + "; ".join(about) if about else ""))
        if role is not None and not role.direct:
            parents = ", ".join(code(v, 100) for v in role.via) or "other packages"
            verb = "supports" if len(role.via) == 1 and not role.via_more else "support"
            out.append(
                f"  - {code(name, 120)} is a transitive dependency (via {parents}): the service does not use it "
                f"directly; check that {parents} {verb} {code(op.new, 60)}."
            )
        if role is not None and role.scope == "dev":
            out.append(
                f"  - {code(name, 120)} is a dev-only dependency: it does not run in the deployed service, so runtime "
                "metrics after the deploy prove little about this change; the CI pipeline is its test."
            )
    return ["### Packages", *out, ""] if out else []


DEV_ONLY_VERIFICATION = (
    "_Every package this change bumps is dev-only: the deployed service does not run it, so the runtime metrics "
    "above prove little about this change; its CI pipeline is the test that counts._"
)


def dev_only(facts: ChangeFacts, operations: Sequence[Operation]) -> bool:
    """Whether every operation bumps a package whose role (``facts``) is dev-only."""
    roles = [facts.role_of(subject(op), op.paths()) if isinstance(op, PACKAGE_OPS) else None for op in operations]
    return bool(roles) and all(r is not None and r.scope == "dev" for r in roles)


def _lifecycle_text(life: Lifecycle, today: date) -> str:
    what = f"{life.label} {life.cycle}" if life.cycle else life.label  # both validated: no markup
    if life.missing:
        return f"{what}: end of life: {text(life.missing, 200)}"
    newest = f"; the newest release line is {life.newest}" if life.newest else ""
    if isinstance(life.eol, date):
        day = life.eol.isoformat()
        if life.eol <= today:
            return f"**{what} reached end of life on {day}** ({ago(life.eol, today)}): no more security fixes{newest}"
        return f"{what} is supported until {day} ({ago(life.eol, today)}){newest}"
    if life.eol is True:
        return f"**{what} has reached end of life**: no more security fixes{newest}"
    return f"{what} has no announced end of life{newest}"


def lifecycle_section(facts: ChangeFacts, operations: Sequence[Operation]) -> list[str]:
    """The ``### Lifecycle`` lines: per image ``operations`` leave running, the release line it is on and its end
    of life (past: said in bold, with the newest line), or why it was not looked up. Empty without one."""
    images = bumped_images(operations)
    lines = [
        f"- {code(life.image, 255)}: {_lifecycle_text(life, facts.looked_up_on)}"
        for life in facts.lifecycles
        if life.image in images
    ]
    return ["### Lifecycle", *lines, ""] if lines else []


def render(
    item: WorkItem,
    plan: Plan,
    signals: Sequence[Signal],
    *,
    jira_key: str | None = None,
    jira_url: str | None = None,
    verification: str | None = None,
    drafted_by: str = "fixloop rules",
    drafted_title: str | None = None,
    drafted_summary: str | None = None,
    drafted_notes: Sequence[str] = (),
    draft_refused: str | None = None,
    facts: ChangeFacts | None = None,
) -> MergeRequestText:
    """The MR title, description and labels of ``plan`` for ``item`` (``signals`` may be a superset).

    A change with a breaking bump (``plan.jumps``: a new major, a 0.x minor, a pre-release) or advisories its
    policy's ``max_jump`` leaves open (``plan.held_back``) starts with their ``callouts`` (the changelog linked from
    ``facts``), and its title with ``BREAKING_MARK`` when that fits ``TITLE_MAX``.

    ``facts``: what the registries and the repository say of the bumped packages and images
    (``fixloop.core.change.facts``), shown as ``### Packages`` and ``### Lifecycle`` after the changes; None: not
    shown.

    A model's draft (``fixloop.core.change.draft``): ``drafted_by`` names the model, ``drafted_title`` replaces the
    rules'
    title (``title_line``: one line, inert; an empty one keeps the rules' title), ``drafted_summary`` (one escaped
    paragraph, at most ``SUMMARY_MAX`` characters) and ``drafted_notes`` (at most ``DRAFT_NOTES_MAX``, each escaped)
    are shown as the model's. ``draft_refused``: why a model's draft was not used (the text is the rules')."""
    covered = closed_findings(item, plan, signals)
    if item.kind is WorkItemKind.EOL_MIGRATION and item.eol is not None:  # no fix on the old line: the new line's
        covered = [(s, fixed if fixed != "?" else lifecycle.target_text(item.eol)) for s, fixed in covered]
    title = title_for(plan, [s for s, _ in covered])
    if item.kind is WorkItemKind.EOL_MIGRATION and title.startswith("Bump "):  # a move to another release line
        title = "Migrate " + title.removeprefix("Bump ")
    if drafted_title is not None and title_line(drafted_title):
        title = title_line(drafted_title)
    if jumps_of(plan) and len(BREAKING_MARK) + len(title) <= TITLE_MAX and not title.lower().startswith("breaking"):
        title = BREAKING_MARK + title
    out = [line for c in callouts(plan, facts) for line in (c, "")]
    out += [f"fixloop work item {code(item.id)}: {text(item.title)}", ""]
    if drafted_summary is not None and clean(drafted_summary, SUMMARY_MAX):
        out += [f"**Summary** (drafted by {text(drafted_by, 80)}): {text(drafted_summary, SUMMARY_MAX)}", ""]
    if jira_key and re.fullmatch(r"[A-Z][A-Z0-9_]{0,30}-\d{1,9}", jira_key):
        if jira_url and re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d+)?/[A-Za-z0-9/._-]*", jira_url):
            out += [f"Jira: [{jira_key}]({jira_url})", ""]
        else:
            out += [f"Jira: {jira_key}", ""]
    out += ["### Changes", *[_change_line(op) for op in plan.operations], ""]
    if facts is not None:
        out += packages_section(facts, plan.operations) + lifecycle_section(facts, plan.operations)
    out += [
        "### Findings closed",
        "",
        "| Advisory | Package | Installed \u2192 fixed | Severity |",
        "|---|---|---|---|",
    ]
    for s, fixed in covered[:TABLE_ROWS_MAX]:
        adv = advisory(s.advisory_id) if s.advisory_id else code("(no id)")
        versions = f"{code(s.installed_version or '?', 60, cell=True)} \u2192 {code(fixed, 60, cell=True)}"
        out.append(f"| {adv} | {code(s.package or '?', 80, cell=True)} | {versions} | {s.severity.value} |")
    if len(covered) > TABLE_ROWS_MAX:
        out.append(f"| \u2026 and {len(covered) - TABLE_ROWS_MAX} more | | | |")
    out.append("")
    if plan.not_fixable:
        out += ["### Not fixed by this MR"]
        out += [f"- {code(n.package, 80)}: {text(n.reason)}" for n in plan.not_fixable[:TABLE_ROWS_MAX]]
        out.append("")
    risks = plan.risks or ["None known: the new versions are in the same release line."]
    out += ["### Risk notes", *[f"- {text(r)}" for r in risks], *[f"- {text(n)}" for n in plan.notes], ""]
    notes = [n for n in drafted_notes[:DRAFT_NOTES_MAX] if clean(n, 300)]
    if notes:
        out += [f"### Reviewer notes (drafted by {text(drafted_by, 80)})", *[f"- {text(n)}" for n in notes], ""]
    out += [
        "### Verification",
        text(verification, VERIFICATION_MAX)
        if verification
        else "_Filled in by fixloop at deploy time: "
        "the service's monitors and error rate over the verification window; a triggered monitor fails it._",
        "",
    ]
    if facts is not None and dev_only(facts, plan.operations):
        out += [DEV_ONLY_VERIFICATION, ""]
    drafted = f"{text(drafted_by, 80)}: the model's draft was refused: {text(draft_refused)}" if draft_refused else ""
    drafted = f"_Drafted by {drafted or text(drafted_by, 80)}; validated by fixloop's policy._"
    out += ["### Rollback", ROLLBACK, "", drafted, ""]
    out.append(machine_block(item, plan))
    labels = ["fixloop", "security", f"fixloop::{item.kind.value}", f"severity::{item.severity.value}"]
    return MergeRequestText(title=title, description="\n".join(out) + "\n", labels=labels)


def render_incident(
    item: WorkItem,
    choice_reason: str,
    action: str,
    changes: Sequence[str],
    *,
    culprits: Sequence[str] = (),
    figures: Sequence[str] = (),
    monitors: Sequence[int] = (),
    service: str | None = None,
    window: str | None = None,
    risk: str | None = None,
    rollback: str = ROLLBACK,
    jira_key: str | None = None,
    machine: str = "",
) -> MergeRequestText:
    """The merge request of an incident's remediation (``fixloop.core.remediation``): a title naming the action and the
    service, and a description a reviewer can judge in a minute: the incident (alerts, onset, affected services),
    the top root-cause candidates with their evidence, why this action (``choice_reason``), the culprit change(s)
    (``culprits``: plain-text lines from ``fixloop.core.culprit.describe_culprit``) or the figures behind a new value
    (``figures``), the exact change (``changes``: Markdown lines already built from the typed operations), the risk,
    the verification plan (the ``monitors`` that must recover, ``service``'s metrics over ``window``) and the
    rollback. Every untrusted text is escaped (``text``) or a code span; ``machine`` is the read-back block."""
    facts = item.incident
    target = service or (facts.candidates[0].service if facts and facts.candidates else None) or "the service"
    verbs = {
        "revert": "Revert the culprit change of",
        "rollback_image": "Roll back the image of",
        "memory": "Raise the memory limit of",
        "replicas": "Scale out",
    }
    title = title_line(f"{verbs.get(action, action)} {target} (incident: {item.title.removeprefix('Incident: ')})")
    out = [f"fixloop work item {code(item.id)}: {text(item.title)}", ""]
    if jira_key and re.fullmatch(r"[A-Z][A-Z0-9_]{0,30}-\d{1,9}", jira_key):
        out += [f"Jira: {jira_key}", ""]
    if facts is not None:
        names = ", ".join(code(s, 80) for s in facts.services[:10]) or "(none)"
        onset = facts.onset.isoformat(timespec="seconds")
        out += [
            "### The incident",
            f"{len(item.signals)} alert(s) from {code(onset)} on {names}.",
            "",
            "Likely root cause, best first:",
        ]
        for i, c in enumerate(facts.candidates, 1):
            out.append(f"{i}. {code(c.entity, 80)} ({c.kind or 'not in the topology'}), score {c.score:.2f}")
            out += [f"   - {text(e, 300)}" for e in c.evidence[:6]]
        out.append("")
    out += ["### Why this change", text(choice_reason, 1_000), ""]
    if culprits:
        out += ["### Culprit change", *[f"- {text(line, 600)}" for line in culprits[:5]], ""]
    if figures:
        out += ["### Figures", *[f"- {text(line, 300)}" for line in figures[:10]], ""]
    out += ["### Change", *changes, ""]
    out += ["### Risk", text(risk or "The change restores a state that ran before, or adds capacity.", 600), ""]
    shown = ", ".join(code(m, 20) for m in monitors) or "none named by the alerts"
    out += [
        "### Verification",
        f"After Flux applies the merge: the incident's monitors ({shown}) must recover, and {code(target, 80)}'s "
        f"error rate and latency must not regress over {text(window or 'the verification window', 80)} after it "
        "against the same window before it (Mann-Whitney, `fixloop.yaml` `verification:`).",
        "",
        "### Rollback",
        text(rollback, 600),
        "",
        "_Chosen and validated by fixloop's rules (fixloop.core.remediation, fixloop.yaml `incidents:`); a human "
        "approves the head that is merged._",
        "",
    ]
    if machine:
        out.append(machine)
    labels = [
        "fixloop",
        "incident",
        f"fixloop::{item.kind.value}",
        f"fixloop::{action}",
        f"severity::{item.severity.value}",
    ]
    return MergeRequestText(title=title, description="\n".join(out) + "\n", labels=labels)


def delivery_section(delivery: Delivery) -> list[str]:
    """The ``### Delivery`` lines of a change's merge request: for a source change, the image CI builds and the
    environments its tag goes through (in order, each rolled out and verified before the next); for a manifest
    change, the environment it is followed in. Names are validated (DNS labels, image references) and still shown as
    code spans."""
    envs = " \u2192 ".join(code(t.name, 63) for t in delivery.targets)
    if delivery.image is not None and delivery.dependents:
        return _base_delivery(delivery)
    if delivery.image is None:
        where = delivery.targets[0]
        return [
            "### Delivery",
            f"Nothing is built: Flux ({code(where.flux, 120)}) applies this merge in {code(where.name, 63)}, where "
            + (f"the rollout of {code(delivery.workload, 80)} must complete" if delivery.workload else "it is verified")
            + " before verification.",
            "",
        ]
    image = delivery.image
    how = (
        "fixloop opens a merge request setting the new tag, gated like this one"
        if image.delivery == "merge-request"
        else "Flux's image automation commits the new tag"
    )
    return [
        "### Delivery",
        f"This merge changes the source of {code(image.image, 255)}: CI builds it (tag rule {code(image.tag, 20)}), "
        f"then per environment ({envs}) {how}; each must roll out and pass verification before the next. A failure "
        "reverts there and goes no further.",
        "",
    ]


def _base_delivery(delivery: Delivery) -> list[str]:
    """The ``### Delivery`` lines of a base image's change: built, then each dependent rebuilt on the new tag."""
    image = delivery.image
    assert image is not None
    lines = [
        "### Delivery",
        f"This merge changes the source of the base image {code(image.image, 255)}: CI builds it (tag rule "
        f"{code(image.tag, 20)}); it runs in no environment itself. Once its new tag is in the registry, fixloop opens "
        "one merge request per image built FROM it, setting that FROM to the new tag (gated like this one); each is "
        "then built, set in the environments, rolled out and verified as its own change:",
        "",
        *(
            f"- {code(d.name, 63)}: {code(d.dockerfile, 200)} FROM {code(d.current, 300)}"
            for d in delivery.dependents
        ),
    ]
    if delivery.dependents_cut:
        cut = ", ".join(code(n, 63) for n in delivery.dependents_cut[:20])
        more = len(delivery.dependents_cut) - 20
        more_text = f" and {more} more" if more > 0 else ""
        lines.append(f"- not followed (over {len(delivery.dependents)} dependents): {cut}{more_text}")
    return [*lines, ""]


def _heading(item: WorkItem, jira_key: str | None, about: str = "") -> list[str]:
    """The first lines of a follow-up merge request: its work item, and its Jira key when it is one."""
    out = [f"fixloop work item {code(item.id)}: {text(item.title)}", ""]
    if jira_key and re.fullmatch(r"[A-Z][A-Z0-9_]{0,30}-\d{1,9}", jira_key):
        out += [f"Jira: {jira_key}{about}", ""]
    return out


def render_rebuild(
    item: WorkItem,
    base: ImageSpec,
    dependent: Dependent,
    tag: str,
    operations: Sequence[BumpBaseImage],
    *,
    digest: str | None,
    source_sha: str,
    source_iid: int,
    jira_key: str | None = None,
) -> MergeRequestText:
    """The merge request that rebuilds ``dependent`` FROM ``base``'s ``tag`` (built by CI from ``source_sha``, the
    merge of !``source_iid``): the title of ``item`` (``fixloop.core.naming.rebuilt_on``), the FROM lines changed,
    the base's build and the rollback (this change only: the base and its other dependents stay). Its delivery
    section is added by the planner."""
    out = _heading(item, jira_key, " (the base-image chain's issue)")
    built = f" ({code(digest, 80)})" if digest else ""
    out += [
        "### Change",
        *(_change_line(op) for op in operations),
        "",
        "### Base image",
        f"CI built {code(base.image + ':' + tag, 300)}{built} from {code(source_sha[:12])}, the merge of !{source_iid} "
        f"(the fix of the base image {code(base.name, 63)}). {code(dependent.name, 63)} is built FROM it: this merge "
        "rebuilds it on the new tag.",
        "",
        "### Rollback",
        text(
            "A failed verification opens a merge request reverting this change (and its tag changes); the base image "
            "and its other dependents are not touched.",
            600,
        ),
        "",
        "_Planned by fixloop's base-image chain (fixloop.core.change.images, fixloop.yaml `images:`); a human "
        "approves the head that is merged._",
        "",
    ]
    labels = ["fixloop", f"fixloop::{item.kind.value}", "fixloop::base-image-chain"]
    return MergeRequestText(title=title_line(item.title), description="\n".join(out) + "\n", labels=labels)


def render_promotion(
    item: WorkItem,
    delivery: Delivery,
    target: int,
    tag: str,
    current: str,
    *,
    digest: str | None,
    source_sha: str,
    source_iid: int,
    verdicts: Sequence[str] = (),
    window: str | None = None,
    jira_key: str | None = None,
) -> MergeRequestText:
    """The merge request that sets ``tag`` (built by CI from ``source_sha``, the merge of !``source_iid``) for
    ``delivery.image`` in ``delivery.targets[target]``'s Kustomization: a title naming the service, the tag and the
    environment (``Deploy catalog 1.4.3 to staging``; ``Promote ...`` after the first), and a description with the
    build, the environments verified before (``verdicts``, plain text), the verification and the rollback."""
    image, env = delivery.image, delivery.targets[target]
    if image is None:
        raise ValueError("a change that builds no image is not promoted")
    verb = "Deploy" if target == 0 else "Promote"
    title = title_line(f"{verb} {image.name} {tag} to {env.name} ({item.title})")
    out = _heading(item, jira_key)
    built = f" ({code(digest, 80)})" if digest else ""
    out += [
        "### Change",
        f"- {code(env.kustomization, 200)}: {code(image.image, 255)} {code(current, 128)} \u2192 {code(tag, 128)}",
        "",
        "### Build",
        f"CI built {code(image.image + ':' + tag, 300)}{built} from {code(source_sha[:12])}, the merge of "
        f"!{source_iid}.",
        "",
    ]
    if verdicts:
        out += ["### Verified before", *[f"- {text(v, 600)}" for v in verdicts[:10]], ""]
    nxt = delivery.targets[target + 1].name if target + 1 < len(delivery.targets) else None
    out += [
        "### Verification",
        f"After Flux ({code(env.flux, 120)}) applies the merge, {code(delivery.workload or image.name, 80)} in "
        f"{code(env.namespace, 63)} must roll out to {code(tag, 128)} (all replicas updated and ready, no crash loop), "
        f"then its error rate and latency in {code(env.name, 63)} must not regress over "
        f"{text(window or 'the verification window', 80)} against the same window before it."
        + (f" A pass opens the promotion to {code(nxt, 63)}." if nxt else ""),
        "",
        "### Rollback",
        text(f"A failed verification opens a merge request reverting this tag change and !{source_iid}.", 600),
        "",
        "_Planned by fixloop's image chain (fixloop.core.change.images, fixloop.yaml `images:` and `environments:`); "
        "a human approves the head that is merged._",
        "",
    ]
    labels = ["fixloop", f"fixloop::{item.kind.value}", "fixloop::promotion", f"environment::{env.name}"]
    return MergeRequestText(title=title, description="\n".join(out) + "\n", labels=labels)
