"""plan(): a work item, its signals and the repository in; the validated change (or why there is none) out.

Pure and deterministic: no network, no git, no clock. The registry's tag list comes in as a function
(``tags(repository) -> [tag, ...]``); the same inputs give the same plan, byte for byte.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.change.edit import apply
from fixloop.core.change.locate import PYTHON_LOCKFILES, Located, NotFixable, RepoView, Site, as_repo, locate
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
from fixloop.core.change.versions import go_version, maven_variants, newest_tag, required_version, risk
from fixloop.core.models import FIX_KINDS, Signal, WorkItem
from fixloop.core.parsing import clean, highest_version
from fixloop.core.triage.grouping import package_name

TagLookup = Callable[[str], Sequence[str]]
PLAN_VERSION = 1


class Plan(BaseModel):
    """A validated change: ``operations`` (sorted), the resulting ``edits`` ``{path: new text}``, their unified
    ``diff``, what the work item asked for but no operation fixes (``not_fixable``), reviewer warnings (``risks``:
    major version jumps, pre-releases) and ``notes`` (follow-ups such as a dropped lockfile integrity hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    work_item_id: str
    branch: str
    operations: list[Operation] = Field(min_length=1)
    edits: dict[str, str]
    diff: str
    not_fixable: list[NotFixable] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


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
) -> Plan | NotLocated:
    """Plan the change fixing ``item``: locate it, pick versions (the lowest fixing every advisory, by the
    ecosystem's rules; for an item grouped across manifests, ``per-package`` or ``per-service``, one version per
    package everywhere: the highest of those; base images: the newest tag of the same line and variant from
    ``tags``), apply and validate.

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
    located = locate(item, own, view, policy)
    if isinstance(located, str):
        return NotLocated(work_item_id=item.id, reason=located)
    ops, not_fixable, risks, notes = _operations(located, view, tags, one_version=item.grouping is not None)
    if not ops:
        reasons = "; ".join(f"{n.package}: {n.reason}" for n in not_fixable) or "nothing to change"
        return NotLocated(work_item_id=item.id, reason=clean(reasons, 2000), not_fixable=not_fixable)
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


def _operations(
    located: Located, repo: RepoView, tags: TagLookup | None, one_version: bool = False
) -> tuple[list[Operation], list[NotFixable], list[str], list[str]]:
    ops: list[Operation] = []
    not_fixable = list(located.not_fixable)
    risks: list[str] = []
    notes: list[str] = []
    tag_lists: dict[str, list[str]] = {}
    everywhere = _one_version(located.sites) if one_version else {}
    for site in located.sites:
        if site.kind in ("image", "workload", "helm"):
            if tags is None:
                not_fixable.append(NotFixable(package=site.name, reason="no registry tag list to choose from"))
                continue
            if site.name not in tag_lists:
                tag_lists[site.name] = sorted({t for t in tags(site.name) if isinstance(t, str)})
            tag = site.current.rpartition(":")[2]
            new_tag = newest_tag(tag, tag_lists[site.name])
            if new_tag is None:
                shown = site.current if site.kind == "image" else f"{site.name}:{site.current}"
                reason = f"the registry lists no newer tag of {shown} in the same line and variant"
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
        if warning := risk(site.kind, site.current, op.new):
            risks.append(f"{site.name} {site.current} \u2192 {op.new}: {warning}")
        if site.shares:
            risks.append(
                f"{site.name} {site.current} \u2192 {op.new}: the property {site.property} of {site.path} also sets "
                f"the version of {_listing(list(site.shares))}; check they are released at {op.new}"
            )
        notes += _follow_ups(op, repo)
    return sorted(set(ops), key=sort_key), not_fixable, risks, notes


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
