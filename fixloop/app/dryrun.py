"""``fixloop plan``: what the loop would propose for some reports, on a local checkout, offline.

The loop's own code on the files of a folder instead of the GitLab project: triage as the worker's
``triage.group_signals`` runs it (the ``rules`` engine, the topology of the folder's ``fixloop.yaml`` and manifests,
the images' services, each fix named after the service it is located in: ``fixloop.activities.triage``), then
``change.plan``'s planning (``fixloop.activities.plan.ChangePlanner``) for each fix, and its unified diff computed as
``gitlab.open_merge_request`` would commit it (the typed operations applied again, ``fixloop.core.change.edit``).
No Temporal, GitLab, Jira, registry, PyPI or endoflife.date is asked: the MR says the release notes and end of life
were not looked up, and a base image is only bumped from the tags a ``--tags`` file lists.

``LocalRepo`` is the folder as a ``fixloop.core.change.RepoView`` (and a manifest reader); ``TagFile`` the offline
tag lookup; ``dry_run`` the whole run, ``DryRun`` its answer (``--json``), ``render_text`` the terminal form.
Errors: ``DryRunError`` (one line: an unreadable folder, policy or tags file, a malformed ``fixloop.yaml``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from fixloop.activities.plan import FILE_MAX_BYTES, ChangePlanner
from fixloop.activities.triage import TREE_ENTRIES, locate_services, manifest_topology, policy_parts, triage
from fixloop.core.change.drift import repository_drift
from fixloop.core.change.edit import apply
from fixloop.core.change.ops import PolicyViolation
from fixloop.core.change.policy import POLICY_FILE, load_policy, unified_diff
from fixloop.core.models import FIX_KINDS, Signal, Unassigned, WorkItem, WorkItemKind
from fixloop.core.parsing import clean, validation_message
from fixloop.core.service import ServiceNames
from fixloop.core.topology import Topology, merge
from fixloop.workflows.contracts.plan import PlanChangeInput

log = logging.getLogger(__name__)

MAX_FILES = TREE_ENTRIES  # files listed, as triage lists of a GitLab tree; the rest is left out (a warning)
GIT_TIMEOUT = 60  # seconds for ``git ls-files``
TAGS_MAX_BYTES = 16 * 1024 * 1024
TAG_MAX = 128  # characters of a tag (the OCI distribution spec's limit)
_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")

# why a work item of another kind gets no merge request from ``fixloop plan``
_NOT_A_FIX = {
    WorkItemKind.RISK_DIGEST: "a risk digest (findings without a fix, misconfigurations, secrets, SAST) gets a Jira "
    "issue, not a merge request",
    WorkItemKind.ALERT_INVESTIGATION: "an alert investigation gets a Jira issue, not a merge request",
    WorkItemKind.DEPLOY_REGRESSION: "a deploy regression is attached to the loop that deployed the service",
    WorkItemKind.INCIDENT: "an incident's remediation is planned by the running loop (it needs the culprit commit "
    "from GitLab's history and the metrics): not offline",
}


class DryRunError(Exception):
    """A folder, policy or tags file ``fixloop plan`` cannot use; ``str()`` is one line naming it."""


class LocalRepo:
    """The files under ``root`` as a ``RepoView``: a git working tree's tracked and untracked-but-not-ignored files
    (``git ls-files --cached --others --exclude-standard``, run in ``root``: a sub-folder of a repository is a
    repository of its own files), else every file under ``root`` but ``.git/``; at most ``max_files`` of them
    (path order; ``cut`` counts the rest). Texts are read from disk (the working tree, uncommitted edits
    included) on first use as UTF-8 (undecodable bytes replaced, as the GitLab client reads them) and cached.
    A path that is not a normalised relative path, a symbolic link or under one, and a file over ``max_bytes``
    read as None (the latter two logged), as a GitLab file fixloop cannot see. ``policy``: the text of a
    ``fixloop.yaml`` read instead of the folder's (``--policy``)."""

    def __init__(
        self,
        root: Path,
        policy: str | None = None,
        *,
        max_files: int = MAX_FILES,
        max_bytes: int = FILE_MAX_BYTES,
    ) -> None:
        self.root = root
        self.policy = policy
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.cut = 0
        self.git = False  # the listing came from git
        self._paths: list[str] | None = None
        self._texts: dict[str, str | None] = {}

    @classmethod
    def open(cls, root: Path, policy: Path | None = None) -> LocalRepo:
        """The folder ``root`` with ``policy``'s text as its ``fixloop.yaml`` (None: its own). ``DryRunError``
        when ``root`` is no readable folder or ``policy`` cannot be read."""
        if not root.is_dir():
            raise DryRunError(f"{root}: not a folder")
        if not os.access(root, os.R_OK | os.X_OK):
            raise DryRunError(f"{root}: not readable")
        text = None
        if policy is not None:
            try:
                data = policy.read_bytes()
            except OSError as e:
                raise DryRunError(f"{policy}: cannot read: {e.strerror or e}") from None
            if len(data) > FILE_MAX_BYTES:
                raise DryRunError(f"{policy}: over {FILE_MAX_BYTES} bytes")
            text = data.decode("utf-8", errors="replace")
        return cls(root.resolve(), text)

    def list(self) -> Iterable[str]:
        if self._paths is None:
            found = self._git_files()
            self.git = found is not None
            listed = found if found is not None else self._walk()
            paths = sorted(p for p in listed if self._file(p) is not None)
            links = sum(1 for p in listed if (self.root / p).is_symlink())
            if links:
                log.warning("%d symbolic links are not read (fixloop reads no file through a link)", links)
            if self.policy is not None and POLICY_FILE not in paths:
                paths = sorted([*paths, POLICY_FILE])
            self.cut = max(0, len(paths) - self.max_files)
            self._paths = paths[: self.max_files]
        return self._paths

    def read(self, path: str) -> str | None:
        if path == POLICY_FILE and self.policy is not None:
            return self.policy
        if path not in self._texts:
            data = self.read_head(path, self.max_bytes + 1)
            if data is not None and len(data) > self.max_bytes:
                log.warning("%s is over %d bytes: not read", clean(path, 200), self.max_bytes)
                data = None
            self._texts[path] = data.decode("utf-8", errors="replace") if data is not None else None
        return self._texts[path]

    def read_head(self, path: str, n: int) -> bytes | None:
        """The first ``n`` bytes of ``path`` (None: no such file, or one ``read`` does not see)."""
        if path == POLICY_FILE and self.policy is not None:
            return self.policy.encode()[:n]
        file = self._file(path)
        if file is None:
            return None
        try:
            with file.open("rb") as f:
                return f.read(n)
        except OSError as e:
            log.warning("%s: cannot read: %s", clean(path, 200), clean(e.strerror or e, 200))
            return None

    def _file(self, path: str) -> Path | None:
        """The regular file at repository path ``path``, None for anything else (see the class docstring)."""
        parts = path.split("/")
        if not path or "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
            return None
        file = self.root
        for part in parts:
            file = file / part
            if file.is_symlink():
                return None
        return file if file.is_file() else None

    def _git_files(self) -> list[str] | None:
        """The paths ``git ls-files`` lists in ``root`` (None: no git, or ``root`` is in no working tree)."""
        git = shutil.which("git")
        if git is None:
            if (self.root / ".git").exists():
                log.warning("git is not installed: every file of the working tree is read, ignored ones too")
            return None
        try:
            run = subprocess.run(
                [git, "-C", str(self.root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("git ls-files failed (%s): every file of the folder is read", clean(e, 200))
            return None
        if run.returncode != 0:  # not a working tree (or a git error): the folder as it is
            return None
        return list(dict.fromkeys(p for p in run.stdout.decode("utf-8", errors="replace").split("\0") if p))

    def _walk(self) -> list[str]:
        """Every file under ``root`` but ``.git/`` (folders and files in name order), at most ``max_files + 1``:
        the walk of a huge folder stops once the listing is known to be cut."""
        out: list[str] = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            rel = Path(folder).relative_to(self.root).as_posix()
            out.extend(f if rel == "." else f"{rel}/{f}" for f in sorted(files))
            if len(out) > self.max_files:
                break
        return out[: self.max_files + 1]


_TAGS: TypeAdapter[dict[str, list[Annotated[str, StringConstraints(min_length=1, max_length=TAG_MAX)]]]] = (
    TypeAdapter(dict[str, list[Annotated[str, StringConstraints(min_length=1, max_length=TAG_MAX)]]])
)


def _hub_name(image: str) -> str:
    """``docker.io/library/alpine``, ``library/alpine`` and ``alpine`` are one Docker Hub repository: ``alpine``."""
    for prefix in _DOCKER_HUB:
        image = image.removeprefix(prefix)
    return image.removeprefix("library/")


class TagFile:
    """The offline tag lookup (``fixloop.activities.plan.TagSource``): the tags of each image as a JSON file lists
    them, ``{"<image>": ["<tag>", ...]}`` (an image as a ``FROM`` line writes it, Docker Hub's with or without
    ``docker.io/`` and ``library/``; e.g. from ``crane ls alpine`` or the registry's ``GET /v2/<name>/tags/list``).
    ``tags`` None: no file given, so no base image is bumped; ``failed`` says why for each image asked."""

    def __init__(self, tags: Mapping[str, Sequence[str]] | None) -> None:
        self.tags = {_hub_name(k): list(v) for k, v in tags.items()} if tags is not None else None
        self.failed: dict[str, str] = {}

    @classmethod
    def load(cls, path: Path) -> TagFile:
        """``path``'s tags; ``DryRunError`` when it cannot be read, is over ``TAGS_MAX_BYTES`` or is not that
        shape (tags of at most ``TAG_MAX`` characters)."""
        try:
            with path.open("rb") as f:
                data = f.read(TAGS_MAX_BYTES + 1)
        except OSError as e:
            raise DryRunError(f"{path}: cannot read: {e.strerror or e}") from None
        if len(data) > TAGS_MAX_BYTES:
            raise DryRunError(f"{path}: over {TAGS_MAX_BYTES} bytes")
        try:
            return cls(_TAGS.validate_json(data))
        except ValidationError as e:
            raise DryRunError(f"{path}: not a JSON object of tag lists ({validation_message(e)})") from None

    def __call__(self, image: str) -> Sequence[str]:
        if self.tags is None:
            self.failed[image] = "not looked up: fixloop plan asks no registry (give the image's tags with --tags)"
            return []
        found = self.tags.get(_hub_name(image))
        if found is None:
            self.failed[image] = f"the --tags file lists no tags of {clean(image, 200)}"
            return []
        return found


class PlanItem(BaseModel):
    """One work item: ``planned`` with its merge request (``title``, ``branch``, ``description``, ``diff``: the
    unified diff of every file it changes, ``files`` in path order), or not, and ``reason`` why. ``title`` is the
    work item's when nothing is planned."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: WorkItemKind
    service: str | None = None
    planned: bool
    title: str
    branch: str | None = None
    description: str | None = None
    diff: str | None = None
    files: list[str] = Field(default_factory=list)
    reason: str | None = None
    not_fixable: list[str] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)


class DriftVersion(BaseModel):
    """One pinned version of a drifting package and the files and services that pin it."""

    model_config = ConfigDict(extra="forbid")

    version: str
    paths: list[str]
    services: list[str] = Field(default_factory=list)


class DriftItem(BaseModel):
    """A package the repository pins at several versions (``fixloop.core.change.drift``), ``versions`` newest
    first; ``target`` is the newest, the version a consolidation raises the others to."""

    model_config = ConfigDict(extra="forbid")

    ecosystem: str
    package: str
    target: str
    versions: list[DriftVersion]


class DryRun(BaseModel):
    """``fixloop plan --json``: every work item, each signal triage placed in none with its reason, and the
    repository's version drift (``drift``; ``drift_more``: drifting packages past the report's bound)."""

    model_config = ConfigDict(extra="forbid")

    repository: str
    items: list[PlanItem]
    unassigned: list[Unassigned] = Field(default_factory=list)
    drift: list[DriftItem] = Field(default_factory=list)
    drift_more: int = 0

    @property
    def all_planned(self) -> bool:
        return all(i.planned for i in self.items)


def _topology(repo: LocalRepo, policy_text: str | None, warn: Callable[[str], None]) -> tuple[Topology, dict]:
    """The triage activity's topology of the folder (its ``fixloop.yaml``, then its manifests, merged) and the
    images' services."""
    found: list[Topology] = []
    images: dict[str, str] = {}
    try:
        topology, images, _ = policy_parts(policy_text)
        found.append(topology)
    except ValueError as e:
        warn(f"{POLICY_FILE}: no topology from it: {clean(e, 300)}")
    paths = list(repo.list())
    found.append(manifest_topology(paths, repo.read_head, {"tree entries": repo.cut} if repo.cut else None))
    return (found[0] if len(found) == 1 else merge(*found)), images


def _item(planner: ChangePlanner, item: WorkItem, own: list[Signal], repo: LocalRepo, tags: TagFile) -> PlanItem:
    base = {"id": item.id, "kind": item.kind, "service": item.service}
    if item.kind not in FIX_KINDS:
        reason = _NOT_A_FIX.get(item.kind, f"{item.kind.value} work items are not fixed by a merge request")
        return PlanItem(**base, planned=False, title=item.title, reason=reason)
    inp = PlanChangeInput(scope=repo.root.name or str(repo.root), work_item=item, signals=own)
    try:
        planned = planner.plan_at(inp, repo, None, tags)
        edits = apply(planned.changes, repo.read)[0] if planned.located else {}
    except PolicyViolation as e:  # what change.plan fails non-retryably with: the loop opens no MR either
        return PlanItem(**base, planned=False, title=item.title, reason=f"the change fails validation: {e.reason}")
    if not planned.located:
        return PlanItem(
            **base, planned=False, title=item.title, reason=planned.reason, not_fixable=planned.not_fixable
        )
    return PlanItem(
        id=item.id,
        kind=item.kind,
        service=planned.service or item.service,
        planned=True,
        title=planned.title or item.title,
        branch=planned.branch,
        description=planned.description,
        diff=unified_diff(repo.read, edits),
        files=sorted(edits),
        not_fixable=planned.not_fixable,
        risks=planned.risks,
    )


async def dry_run(
    signals: Sequence[Signal], repo: LocalRepo, tags: TagFile, warn: Callable[[str], None] = log.warning
) -> DryRun:
    """Triage ``signals`` and plan each fix on ``repo`` (module docstring). ``warn`` is told what was left out (a
    cut listing, a topology source that failed, a fix whose files could not be read; default: this module's log).
    ``DryRunError`` when the folder's ``fixloop.yaml`` (or ``--policy``) is not a valid policy: every plan would be
    refused."""
    policy_text = repo.read(POLICY_FILE)
    try:
        policy = load_policy(policy_text)
    except PolicyViolation as e:
        raise DryRunError(f"{repo.root / POLICY_FILE if repo.policy is None else '--policy'}: {e.reason}") from None
    topology, images = _topology(repo, policy_text, warn)
    if repo.cut:
        more = "" if repo.git else "at least "
        warn(f"{repo.root}: {more}{repo.cut} files past the first {repo.max_files} are not read")
    names = ServiceNames.of(topology, images)
    result = await triage(signals, topology=topology, names=names, grouping=policy.grouping)
    result = locate_services(result, signals, repo, policy, lambda what, e: warn(f"{what}: {clean(e, 300)}"))
    by_fingerprint = {s.fingerprint: s for s in signals}
    planner = ChangePlanner()
    items = [
        _item(planner, item, [by_fingerprint[f] for f in item.signals if f in by_fingerprint], repo, tags)
        for item in result.work_items
    ]
    drift = repository_drift(repo.list(), repo.read)
    for path, why in drift.skipped:
        warn(f"{path}: not read for version drift: {why}")
    return DryRun(
        repository=str(repo.root),
        items=items,
        unassigned=result.unassigned,
        drift=[
            DriftItem(
                ecosystem=d.ecosystem,
                package=d.package,
                target=d.target,
                versions=[
                    DriftVersion(version=v.version, paths=list(v.paths), services=list(v.services))
                    for v in d.versions
                ],
            )
            for d in drift.drifts
        ],
        drift_more=drift.more,
    )


def render_text(run: DryRun) -> str:
    """The terminal form: per work item a heading (id, kind, planned or not), then the MR title, branch,
    description and diff, or the reason; the unassigned signals, then the version drift, last."""
    out: list[str] = []
    for item in run.items:
        out.append(f"=== {item.id} ({item.kind.value}): {'planned' if item.planned else 'not planned'}")
        if not item.planned:
            out += [f"Work item: {item.title}", f"Why: {item.reason or 'no reason given'}", ""]
            continue
        out += [f"MR title: {item.title}", f"Branch: {item.branch}", "", "--- MR description ---"]
        out += [(item.description or "").rstrip(), "--- diff ---", (item.diff or "").rstrip(), ""]
    if run.unassigned:
        out.append(f"=== {len(run.unassigned)} signals in no work item")
        out += [f"{u.fingerprint}: {u.reason}" for u in run.unassigned]
        out.append("")
    if run.drift:
        n = len(run.drift) + run.drift_more
        out.append(f"=== Version drift: {n} package{'s' if n != 1 else ''} pinned at several versions")
        for d in run.drift:
            pinned = "; ".join(f"{v.version} in {', '.join(v.paths)}" for v in d.versions)
            out.append(f"{d.package} ({d.ecosystem}): {pinned} (consolidate on {d.target})")
        if run.drift_more:
            out.append(f"... and {run.drift_more} more")
        out.append("")
    n = sum(i.planned for i in run.items)
    out.append(f"{n} of {len(run.items)} work items planned on {run.repository}")
    return "\n".join(out) + "\n"
