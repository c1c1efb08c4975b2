"""plan(): a work item, its signals and the repository in; the validated change (or why there is none) out.

Pure and deterministic: no network, no git, no clock. The registry's tag list comes in as a function
(``tags(repository) -> [tag, ...]``), a package's release list as another (``releases(ecosystem, package) ->
ReleaseList``, asked only for a breaking bump or one beyond the policy's ``max_jump``); the same inputs give the
same plan, byte for byte.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core import lifecycle  # it imports this package (facts, locate): its names are read at call time
from fixloop.core.change.edit import apply
from fixloop.core.change.locate import (
    PYTHON_LOCKFILES,
    Located,
    NotFixable,
    RepoView,
    Site,
    as_repo,
    base_image_sites,
    locate,
    migration_base,
)
from fixloop.core.change.ops import (
    BumpBaseImage,
    BumpGoModule,
    BumpMavenDependency,
    BumpNpmPackage,
    BumpPythonPin,
    BumpWorkloadImage,
    Operation,
    PackageOp,
    PolicyViolation,
    SetHelmValue,
    sort_key,
)
from fixloop.core.change.policy import POLICY_FILE, Policy, load_policy, validate
from fixloop.core.change.versions import (
    LINES_MAX,
    JumpKind,
    MaxJump,
    best_within,
    breaking,
    go_version,
    line_name,
    maven_variants,
    newest_on_line,
    newest_tag,
    required_version,
    risk,
    skipped_lines,
    split_versions,
    within,
)
from fixloop.core.models import FIX_KINDS, EndOfLifeFacts, Signal, WorkItem, WorkItemKind
from fixloop.core.parsing import clean, highest_version, package_name
from fixloop.core.service import service_of_paths

TagLookup = Callable[[str], Sequence[str]]
PLAN_VERSION = 1
_BLAST_SHOWN = 10  # Dockerfiles named in a migration's blast radius (the rest counted)
HELD_MAX = 100  # advisories held back by max_jump kept on a plan (the others are counted in the reason)
REGISTRIES = {"pypi": "PyPI", "npm": "npm", "go": "the Go module proxy", "maven": "Maven Central"}


@dataclass(frozen=True)
class ReleaseList:
    """A package's releases as its registry lists them: ``registry`` (``PyPI``), ``versions`` (the released ones,
    yanked and file-less releases left out), or None with ``missing``: why they are not known, as the MR says it
    (``PyPI lookups are off``)."""

    registry: str
    versions: tuple[str, ...] | None = None
    missing: str | None = None


ReleaseLookup = Callable[[str, str], ReleaseList]


class Jump(BaseModel):
    """A breaking bump, called out at the top of the merge request: ``kind`` (a new major, a 0.x minor; None: only
    ``prerelease``), the release lines it skips (``skipped``, as ``line_name`` writes them; ``skipped_more``
    beyond ``LINES_MAX``), named by ``registry``'s release list, or when it is None by the versions the advisories
    name (``unlisted``: why no release list was read)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: Annotated[str, Field(max_length=120)]
    current: Annotated[str, Field(max_length=60)]
    new: Annotated[str, Field(max_length=60)]
    kind: JumpKind | None = None
    prerelease: bool = False
    skipped: list[Annotated[str, Field(max_length=24)]] = Field(default_factory=list, max_length=LINES_MAX)
    skipped_more: Annotated[int, Field(ge=0)] = 0
    registry: Annotated[str, Field(max_length=40)] | None = None
    unlisted: Annotated[str, Field(max_length=200)] | None = None


class HeldBack(BaseModel):
    """An advisory of a bumped package that the bump does not fix: its fix is beyond the policy's ``max_jump``
    (``needs``: its lowest fixed version above the installed one). Its signal (``fingerprint``) stays open."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: Annotated[str, Field(max_length=120)]
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    advisory: Annotated[str, Field(max_length=120)]
    needs: Annotated[str, Field(max_length=60)] | None = None
    max_jump: MaxJump


class Plan(BaseModel):
    """A validated change: ``operations`` (sorted), the resulting ``edits`` ``{path: new text}``, their unified
    ``diff``, what the work item asked for but no operation fixes (``not_fixable``), reviewer warnings (``risks``:
    major version jumps, pre-releases), ``notes`` (follow-ups such as a dropped lockfile integrity hash), the
    breaking bumps (``jumps``, one per operation at most) and the advisories of bumped packages left open by the
    policy's ``max_jump`` (``held_back``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    work_item_id: str
    branch: str
    operations: list[Operation] = Field(min_length=1)
    edits: dict[str, str]
    diff: str
    not_fixable: list[NotFixable] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    jumps: list[Jump] = Field(default_factory=list)
    held_back: list[HeldBack] = Field(default_factory=list)


class NotLocated(BaseModel):
    """No change: ``reason`` is the sentence for the Jira comment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    work_item_id: str
    reason: str
    not_fixable: list[NotFixable] = Field(default_factory=list)


def branch_name(item: WorkItem) -> str:
    return f"fixloop/{item.id}"


def policy_of(repo: RepoView) -> Policy:
    """The repository's ``fixloop.yaml`` policy, or the default one."""
    return load_policy(repo.read(POLICY_FILE))


def plan(
    item: WorkItem,
    signals: Sequence[Signal],
    repo: RepoView | Mapping[str, str],
    *,
    tags: TagLookup | None = None,
    policy: Policy | None = None,
    releases: ReleaseLookup | None = None,
) -> Plan | NotLocated:
    """Plan the change fixing ``item``: locate it, pick versions (the lowest fixing every advisory, by the
    ecosystem's rules; for an item grouped across manifests, ``per-package`` or ``per-service``, one version per
    package everywhere: the highest of those; base images: the newest tag of the same line and variant from
    ``tags``), apply and validate.

    A bump beyond the policy's ``max_jump`` becomes the highest version within it that fixes the most advisories
    (``versions.best_within``, on the release list ``releases`` gives, else on the versions the advisories name);
    the advisories it leaves open are ``held_back`` and said in ``not_fixable``, and a package none of whose
    advisories is fixed within the jump is not bumped (``not_fixable`` says why). A breaking bump (a new major, a
    0.x minor, a pre-release) is a ``Jump`` naming the release lines it skips.

    ``signals`` may be a superset: only the item's own (by fingerprint) are used. Raises ``PolicyViolation`` when
    the change fails validation (a non-retryable error for the activity); returns ``NotLocated`` when there is
    nothing to change."""
    view = as_repo(repo)
    policy = policy if policy is not None else policy_of(view)
    if item.kind not in FIX_KINDS:
        return NotLocated(work_item_id=item.id, reason=f"{item.kind.value} work items are not fixed by a merge request")
    wanted = set(item.signals)
    own = sorted((s for s in signals if s.fingerprint in wanted), key=lambda s: s.fingerprint)
    if not own:
        return NotLocated(work_item_id=item.id, reason="none of the work item's signals were given")
    migration = item.eol if item.kind is WorkItemKind.EOL_MIGRATION else None
    located = locate(item, own, view, policy)
    if isinstance(located, str):
        return NotLocated(work_item_id=item.id, reason=_by_hand(migration, located))
    ops, not_fixable, risks, notes, jumps, held = _operations(
        located, view, tags, releases, policy.max_jump, migration, one_version=item.grouping is not None
    )
    if not ops:
        reasons = "; ".join(f"{n.package}: {n.reason}" for n in not_fixable) or "nothing to change"
        reason = _by_hand(migration, clean(reasons, 1600))
        return NotLocated(work_item_id=item.id, reason=reason, not_fixable=not_fixable)
    if migration is not None:
        risks = _migration_risks(migration, own, ops, view, policy) + risks
    edits, edit_notes = apply(ops, view.read)
    if not edits:
        raise PolicyViolation("the operations change no file")
    diff = validate(edits, view.read, policy)
    return Plan(
        work_item_id=item.id,
        branch=branch_name(item),
        operations=ops,
        edits=dict(sorted(edits.items())),
        diff=diff,
        not_fixable=not_fixable,
        risks=_unique(risks),
        notes=_unique(notes + edit_notes),
        jumps=jumps,
        held_back=held[:HELD_MAX],
    )


def check_proposal(proposed: Sequence[Operation], planned: Plan) -> list[Operation]:
    """The operations a drafter (the LLM) picked, if every one is among the planned (validated) ones; else
    ``PolicyViolation``. A drafter can choose among valid operations, never add one."""
    allowed = {op.model_dump_json() for op in planned.operations}
    for op in proposed:
        if op.model_dump_json() not in allowed:
            raise PolicyViolation(f"proposed operation is not a validated one: {clean(op.describe(), 200)}")
    if not proposed:
        raise PolicyViolation("no operation proposed")
    return sorted(proposed, key=sort_key)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _by_hand(migration: EndOfLifeFacts | None, reason: str) -> str:
    """A migration's reason for having no merge request, naming the line to move to (Jira says it)."""
    if migration is None:
        return reason
    target = lifecycle.target_text(migration)
    return clean(f"{reason}. Migrate by hand to {target}: {lifecycle.describe(migration)}", 2000)


def _migration_tag(site: Site, migration: EndOfLifeFacts, tags: Sequence[str]) -> tuple[str | None, str]:
    """The tag a migration moves ``site`` to (``newest_on_line`` on the target line, same image), or None and
    why."""
    target = migration.target
    if target is None:
        return None, f"endoflife.date lists no supported {migration.label} line to move {site.current} to"
    if target.product != migration.product:
        return None, (
            f"the line to move to, {lifecycle.target_text(migration)}, is another image than {site.name}: fixloop "
            "does not change which image a Dockerfile builds on"
        )
    tag = site.current.rpartition(":")[2]
    names = (migration.codename, target.codename)
    codenames = (names[0].split()[0].lower(), names[1].split()[0].lower()) if names[0] and names[1] else None
    new = newest_on_line(tag, target.cycle, tags, codenames)
    if new is None:
        target = lifecycle.target_text(migration)
        return None, f"the registry lists no {site.name} tag on {target} in the variant of {tag}"
    return new, ""


def _migration_risks(
    migration: EndOfLifeFacts, signals: Sequence[Signal], ops: Sequence[Operation], repo: RepoView, policy: Policy
) -> list[str]:
    """The reviewer's warnings of a migration: a major one (the line's end of life, the target and its support,
    endoflife.date's page) and its blast radius (every FROM on the ended line in the repository, with its service,
    and which of them this change moves)."""
    out = [
        f"Major migration to {lifecycle.target_text(migration)}, not a patch: packages, their versions, defaults and "
        f"removed features change; build and test the service on it. {lifecycle.describe(migration)}"
    ]
    base = migration_base(migration, signals)
    if base is None or migration.cycle is None:
        return out
    sites = base_image_sites(base[0], base[1], repo, policy)
    paths = sorted({s.path for s in sites})
    moved = sorted({op.path for op in ops})
    listed = ", ".join(
        f"{p} ({service})" if (service := service_of_paths([p])) else p for p in paths[:_BLAST_SHOWN]
    )
    more = f" and {len(paths) - _BLAST_SHOWN} more" if len(paths) > _BLAST_SHOWN else ""
    others = [p for p in paths if p not in moved]
    rest = f"; the other {len(others)} need the same migration" if others else ""
    out.append(
        f"Blast radius: {len(sites)} FROM line(s) in {len(paths)} Dockerfile(s) on {migration.label} "
        f"{migration.cycle} in this repository: {listed}{more}; this merge request moves {', '.join(moved)}{rest}."
    )
    return out


def _operations(
    located: Located,
    repo: RepoView,
    tags: TagLookup | None,
    releases: ReleaseLookup | None,
    max_jump: MaxJump,
    migration: EndOfLifeFacts | None = None,
    one_version: bool = False,
) -> tuple[list[Operation], list[NotFixable], list[str], list[str], list[Jump], list[HeldBack]]:
    ops: list[Operation] = []
    not_fixable = list(located.not_fixable)
    risks: list[str] = []
    notes: list[str] = []
    jumps: dict[tuple[str, str, str], Jump] = {}
    held_back: list[HeldBack] = []
    tag_lists: dict[str, list[str]] = {}
    everywhere = _one_version(located.sites) if one_version else {}
    listed: dict[tuple[str, str], ReleaseList] = {}

    def release_list(site: Site) -> ReleaseList:
        key = (site.kind, site.name)
        if key not in listed:
            registry = REGISTRIES.get(site.kind, "the registry")
            listed[key] = releases(*key) if releases is not None else ReleaseList(registry, None, "not looked up")
        return listed[key]

    for site in located.sites:
        if site.kind in ("image", "workload", "helm"):
            if tags is None:
                not_fixable.append(NotFixable(package=site.name, reason="no registry tag list to choose from"))
                continue
            if site.name not in tag_lists:
                tag_lists[site.name] = sorted({t for t in tags(site.name) if isinstance(t, str)})
            tag = site.current.rpartition(":")[2]
            if migration is not None:
                new_tag, reason = _migration_tag(site, migration, tag_lists[site.name])
            else:
                new_tag = newest_tag(tag, tag_lists[site.name])
                shown = site.current if site.kind == "image" else f"{site.name}:{site.current}"
                reason = f"the registry lists no newer tag of {shown} in the same line and variant"
            if new_tag is None:
                not_fixable.append(NotFixable(package=site.name, reason=reason))
                continue
            ops.append(_image_op(site, new_tag))
            continue
        advisories = _advisories(site)
        new = required_version(site.kind, site.current, advisories)
        if new is not None:
            new = everywhere.get((site.kind, package_name(site.kind, site.name)), new)
        if new is None:
            reason = f"no fixed version above {clean(site.current, 60)} fixes every advisory"
            not_fixable.append(NotFixable(package=clean(site.name, 120), reason=reason))
            continue
        held: list[HeldBack] = []
        if not within(max_jump, site.current, new):
            limited = best_within(site.kind, site.current, advisories, max_jump, release_list(site).versions)
            held = [
                HeldBack(
                    package=clean(site.name, 120),
                    fingerprint=site.signals[i].fingerprint,
                    advisory=clean(site.signals[i].advisory_id or "(no id)", 120),
                    needs=clean(needs, 60) if needs else None,
                    max_jump=max_jump,
                )
                for i, needs in zip(limited.held, limited.needs, strict=True)
            ]
            if limited.version is None:
                reason = f"no version within max_jump: {max_jump} fixes any of its advisories: {_needs(held)}"
                not_fixable.append(NotFixable(package=clean(site.name, 120), reason=clean(reason, 2000)))
                continue
            new = limited.version
        if site.kind == "maven" and (variants := maven_variants(site.current, new, advisories)):
            if len(variants) > 1:
                reason = (
                    f"fixed in several variants ({clean(', '.join(variants), 120)}) and {clean(site.current, 60)} "
                    "names none of them; fixloop does not pick one"
                )
            else:
                reason = f"the fixed version {clean(new, 60)} is another variant than {clean(site.current, 60)}"
            not_fixable.append(NotFixable(package=clean(site.name, 120), reason=reason))
            continue
        try:
            op = _package_op(site, new)
        except ValueError:  # a version or name outside the grammar the operation accepts
            reason = f"the fixed version {clean(new, 60)!r} is not a version fixloop can write"
            not_fixable.append(NotFixable(package=clean(site.name, 120), reason=reason))
            continue
        ops.append(op)
        if held:
            reason = f"not fixed within max_jump: {max_jump}: {_needs(held)}"
            not_fixable.append(NotFixable(package=clean(site.name, 120), reason=clean(reason, 2000)))
            held_back += held
        if (jump := _jump(site, op.new, advisories, release_list)) is not None:
            jumps.setdefault((jump.package, jump.current, jump.new), jump)
        if warning := risk(site.kind, site.current, op.new):
            risks.append(f"{site.name} {site.current} \u2192 {op.new}: {warning}")
        if site.shares:
            risks.append(
                f"{site.name} {site.current} \u2192 {op.new}: the property {site.property} of {site.path} also sets "
                f"the version of {_listing(list(site.shares))}; check they are released at {op.new}"
            )
        notes += _follow_ups(op, repo)
    ordered = sorted(jumps.values(), key=lambda j: (j.package.lower(), j.current, j.new))
    return sorted(set(ops), key=sort_key), not_fixable, risks, notes, ordered, held_back


def _needs(held: Sequence[HeldBack], limit: int = 20) -> str:
    """``CVE-2019-14806 needs 0.15.3, pyup.io-26435 needs 0.12``: each held advisory and its lowest fix."""
    shown = [f"{h.advisory} needs {h.needs}" if h.needs else f"{h.advisory} (no fixed version)" for h in held[:limit]]
    return ", ".join(shown) + (f" and {len(held) - limit} more" if len(held) > limit else "")


def _jump(
    site: Site, new: str, advisories: Sequence[Sequence[str]], release_list: Callable[[Site], ReleaseList]
) -> Jump | None:
    """The ``Jump`` of bumping ``site`` to ``new`` when it is breaking (``versions.breaking``), else None: the
    release lines it skips from the registry's release list (asked only here), else from the advisories'
    versions."""
    kind, prerelease = breaking(site.kind, site.current, new)
    if kind is None and not prerelease:
        return None
    listed = release_list(site) if kind is not None else None
    registry, unlisted = None, None
    if listed is not None and listed.versions is not None:
        versions: Sequence[str] = listed.versions
        registry = listed.registry
    else:
        versions = [c for fixed in advisories for c in split_versions(fixed)]
        unlisted = clean(listed.missing or "not looked up", 200) if listed is not None else None
    named = [line_name(line) for line in skipped_lines(site.kind, site.current, new, versions)] if kind else []
    lines = [n for n in named if len(n) <= 24]  # a 30-digit "major" is no line a reviewer needs named
    return Jump(
        package=clean(site.name, 120),
        current=clean(site.current, 60),
        new=clean(new, 60),
        kind=kind,
        prerelease=prerelease,
        skipped=lines[:LINES_MAX],
        skipped_more=max(0, len(lines) - LINES_MAX),
        registry=clean(registry, 40) if registry else None,
        unlisted=unlisted,
    )


def _advisories(site: Site) -> list[list[str]]:
    """Each advisory of a package site as the versions that fix it."""
    return [s.fixed_versions or [s.fixed_version or ""] for s in site.signals]


def _one_version(sites: Sequence[Site]) -> dict[tuple[str, str], str]:
    """(ecosystem, package) -> the one version a bump across manifests raises it to everywhere: the highest of
    its sites' lowest versions fixing every advisory there (``required_version``), by the ecosystem's rules."""
    needs: dict[tuple[str, str], list[str]] = {}
    for site in sites:
        if site.kind in ("image", "workload", "helm"):
            continue
        new = required_version(site.kind, site.current, _advisories(site))
        if new is not None:
            needs.setdefault((site.kind, package_name(site.kind, site.name)), []).append(
                go_version(new) if site.kind == "go" else new
            )
    return {key: highest_version(key[0], versions) or versions[-1] for key, versions in needs.items()}


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(clean(n, 120) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _image_op(site: Site, new_tag: str) -> Operation:
    if site.kind == "workload":
        return BumpWorkloadImage(path=site.path, image=site.name, current=site.current, new=new_tag)
    if site.kind == "helm":
        assert site.key is not None
        return SetHelmValue(path=site.path, key=site.key, document=site.document, current=site.current, new=new_tag)
    return BumpBaseImage(path=site.path, stage=site.stage, current=site.current, new=f"{site.name}:{new_tag}")


def _package_op(site: Site, new: str) -> PackageOp:
    if site.kind == "pypi":
        return BumpPythonPin(path=site.path, package=site.name, current=site.current, new=new)
    if site.kind == "go":
        return BumpGoModule(path=site.path, module=site.name, current=site.current, new=go_version(new, site.name))
    if site.kind == "maven":
        return BumpMavenDependency(
            path=site.path, package=site.name, property=site.property, current=site.current, new=new
        )
    return BumpNpmPackage(
        path=site.path,
        lockfile=site.lockfile,
        direct=site.direct,
        package=site.name,
        current=site.current,
        new=new,
    )


def _follow_ups(op: Operation, repo: RepoView) -> list[str]:
    """Notes for what fixloop does not edit itself: go.sum; the Python lockfile next to a pyproject.toml or Pipfile
    (poetry.lock, uv.lock, Pipfile.lock: fixloop cannot compute their hashes, so it leaves them as they are and the
    reviewer regenerates them on the branch; until then they still pin the old version); and a transitive npm
    package whose parents' ranges may not admit the new version."""
    if isinstance(op, BumpPythonPin):
        manifest = op.path.rsplit("/", 1)[-1]
        out = []
        for lock, (lock_manifest, regenerate, _) in PYTHON_LOCKFILES.items():
            path = posixpath.join(posixpath.dirname(op.path), lock)
            if lock_manifest == manifest and repo.read(path) is not None:
                out.append(
                    f"{path} is not changed (fixloop cannot compute its hashes) and still pins the old versions: "
                    f"regenerate it on this branch before merging: {regenerate}"
                )
        return out
    if isinstance(op, BumpGoModule):
        go_sum = posixpath.join(posixpath.dirname(op.path), "go.sum")
        if repo.read(go_sum) is not None:
            return [f"{go_sum} needs the new checksums: run `go mod tidy` on the branch"]
        return []
    if isinstance(op, BumpNpmPackage) and not op.direct and op.lockfile:
        from univers.version_range import NpmVersionRange
        from univers.versions import SemverVersion

        out = []
        lock = json.loads(repo.read(op.lockfile) or "{}")
        for key, entry in sorted((lock.get("packages") or {}).items()):
            spec = ((entry or {}).get("dependencies") or {}).get(op.package) if isinstance(entry, dict) else None
            if not isinstance(spec, str):
                continue
            try:
                ok = SemverVersion(op.new) in NpmVersionRange.from_native(spec)
            except Exception:  # univers raises assorted errors on ranges it cannot read
                ok = False
            if not ok:
                out.append(f"{key or 'the root package'} asks for {op.package} {spec}, which may not admit {op.new}")
        return out
    return []
