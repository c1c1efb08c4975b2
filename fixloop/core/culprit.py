"""The culprit change of an incident: the commit of the GitOps repository that Flux applied last before the onset.

Pure (no I/O): the caller (``fixloop.activities.investigate``) reads the commits and Flux's applied history and hands
them here.

Inputs
  * ``commits``: commits of the GitOps repository's default branch that touched a candidate's paths (its manifests,
    image references, config, Helm values), as GitLab's commits API lists them (``GET /projects/:id/repository/
    commits?path=&since=&until=&ref_name=``, docs.gitlab.com/api/commits/), each with the merge request that merged
    it (``GET .../commits/:sha/merge_requests``), whether fixloop made it, and its diff summary (``+``/``-`` lines
    per file, from ``GET .../commits/:sha/diff``).
  * ``applied``: what Flux applied and when: ``(revision sha, time)`` pairs from the Kustomization's
    ``status.lastAppliedRevision`` with its Ready condition's ``lastTransitionTime``, and from the
    notification-controller events ``ReconciliationSucceeded`` (fluxcd/kustomize-controller
    ``docs/spec/v1/kustomizations.md``; ``fixloop.integrations.flux.applied_revisions``).
  * ``contains(revision_sha, commit_sha)``: whether the applied revision holds the commit (the commit is the revision
    or one of its ancestors); the caller answers it from git (GitLab's merge base). Without it only the exact sha
    counts.

The rule (deterministic)
  1. A commit is applied at the earliest time of an applied revision that contains it; a commit no applied revision
     contains was never applied (merged but not deployed) and is never the culprit. Flux tracks a branch that moves
     forward, so once a revision holds a commit every later one does: the first is found by bisection, and of the
     revisions before the window only the last is asked.
  2. Candidates: commits applied strictly before ``onset`` and at or after ``onset - lookback``, and authored and
     committed no later than ``onset`` (a commit after the onset is never named, whatever the clocks say).
  3. The culprit is the candidate applied last; ties (several commits deployed by one revision) go to the later
     committed, then the later authored, then the lower sha (lexicographic), so the answer never depends on input
     order.

Times are timezone-aware datetimes (naive ones are taken as UTC); ``lookback`` a ``timedelta``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.parsing import clean

TITLE_MAX = 200  # chars of a commit title kept in the evidence
NAME_MAX = 100  # chars of an author name or username
FILES_SHOWN = 10  # files listed in the evidence text (the rest counted)
EVIDENCE_MAX = 2_000  # chars of the evidence text


class FileChange(BaseModel):
    """One file of a commit's diff: ``path`` (the new path), ``added``/``removed`` lines (``+``/``-`` lines of the
    unified diff); ``complete`` False when GitLab did not show the diff (too large, collapsed): the counts are 0."""

    model_config = ConfigDict(extra="forbid")

    path: str
    added: int = Field(default=0, ge=0)
    removed: int = Field(default=0, ge=0)
    complete: bool = True


class MergeRequestRef(BaseModel):
    """The merge request that merged a commit (GitLab's basic MR entity, reduced)."""

    model_config = ConfigDict(extra="forbid")

    iid: int
    title: str = ""
    web_url: str = ""
    author_username: str = ""
    source_branch: str = ""
    merged_by_username: str | None = None


class ChangeCommit(BaseModel):
    """A commit that touched a candidate's paths (GitLab's commit entity, reduced, plus what fixloop learned of it).

    ``author_username``: the GitLab user behind the commit when known (the MR author for a single-author MR);
    ``by_fixloop``: fixloop made it (its bot's commit, a ``fixloop/`` branch, or the ``Fixloop-Work-Item`` trailer);
    ``paths``: which of the asked paths it touched."""

    model_config = ConfigDict(extra="forbid")

    sha: str = Field(min_length=7, max_length=64)
    title: str = ""
    author_name: str = ""
    author_email: str = ""
    author_username: str | None = None
    authored_at: datetime
    committed_at: datetime
    parent_shas: list[str] = []
    merge_request: MergeRequestRef | None = None
    by_fixloop: bool = False
    files: list[FileChange] = []
    paths: list[str] = []


class AppliedRevision(BaseModel):
    """Flux applied revision ``sha`` at ``at`` (``revision``: Flux's text, e.g. ``main@sha1:<sha>``; ``source``:
    where the pair was read, ``status`` or ``event``)."""

    model_config = ConfigDict(extra="forbid")

    sha: str = Field(min_length=7, max_length=64)
    at: datetime
    revision: str | None = None
    source: str = "status"


class Culprit(BaseModel):
    """The culprit change: ``commit``, applied by Flux at ``applied_at`` through ``applied_revision``,
    ``before_onset_seconds`` before the onset; ``evidence`` says it in words (bounded, plain text: escape it for
    where it lands). ``candidates``: how many commits were applied in the window; ``not_applied``: shas merged
    before the onset but not applied before it; ``after_onset``: how many commits came after the onset."""

    model_config = ConfigDict(extra="forbid")

    commit: ChangeCommit
    applied_at: datetime
    applied_revision: str
    before_onset_seconds: float
    evidence: str
    candidates: int
    not_applied: list[str] = []
    after_onset: int = 0


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _exact(revision_sha: str, commit_sha: str) -> bool:
    a, b = revision_sha.lower(), commit_sha.lower()
    return a.startswith(b) or b.startswith(a)


def applied_at(
    commit_sha: str, applied: Sequence[AppliedRevision], contains: Callable[[str, str], bool] | None = None
) -> AppliedRevision | None:
    """The earliest applied revision that holds ``commit_sha``, or None when none does. ``applied`` is taken in
    time order (ties: the lower sha); Flux tracks a branch that moves forward, so once a revision holds a commit
    every later one does, and the first one is found by bisection (about log2(len(applied)) ``contains`` calls).
    A force-push that drops the commit from the branch breaks that order; then a revision that holds it is
    returned, not necessarily the first."""
    holds = contains or _exact
    history = sorted(applied, key=lambda a: (_utc(a.at), a.sha))

    def held(i: int) -> bool:
        return _exact(history[i].sha, commit_sha) or holds(history[i].sha, commit_sha)

    if not history or not held(len(history) - 1):
        return None
    lo, hi = 0, len(history) - 1  # held(hi) is true
    while lo < hi:
        mid = (lo + hi) // 2
        if held(mid):
            hi = mid
        else:
            lo = mid + 1
    return history[lo]


def duration(seconds: float) -> str:
    """``seconds`` in words: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    return _duration(seconds)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7_200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86_400} d {s % 86_400 // 3600} h"


def diff_summary(files: Sequence[FileChange]) -> str:
    """``path (+a -r), ...`` for the first ``FILES_SHOWN`` files, then ``and N more``; ``no files`` when empty."""
    if not files:
        return "no files"
    shown = [
        f"{clean(f.path, 200)} (+{f.added} -{f.removed})" if f.complete else f"{clean(f.path, 200)} (diff not shown)"
        for f in files[:FILES_SHOWN]
    ]
    more = len(files) - FILES_SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def evidence(c: ChangeCommit, applied: datetime, revision: str, onset: datetime) -> str:
    """The culprit's evidence in one paragraph: who, whose change (fixloop's or a person's), its MR, when it was
    applied (``applied``, by ``revision``) and how long before the onset, and the diff summary (plain text, at most
    ``EVIDENCE_MAX`` chars)."""
    who = clean(c.author_name, NAME_MAX) or "unknown author"
    if c.author_username:
        who += f" (@{clean(c.author_username, NAME_MAX)})"
    kind = "fixloop's change" if c.by_fixloop else "a person's change"
    if c.merge_request is not None:
        mr = c.merge_request
        via = f"merged in !{mr.iid}"
        if mr.title:
            via += f" \u201c{clean(mr.title, TITLE_MAX)}\u201d"
        if mr.web_url:
            via += f" ({clean(mr.web_url, 300)})"
    else:
        via = "pushed without a merge request"
    before = (_utc(onset) - _utc(applied)).total_seconds()
    added = sum(f.added for f in c.files)
    removed = sum(f.removed for f in c.files)
    text = (
        f"Commit {c.sha[:12]} \u201c{clean(c.title, TITLE_MAX)}\u201d by {who}, {kind}, {via}; "
        f"committed {_utc(c.committed_at).isoformat(timespec='seconds')}, applied by Flux "
        f"{_utc(applied).isoformat(timespec='seconds')} ({clean(revision, 120)}), "
        f"{_duration(before)} before the onset. Files: {diff_summary(c.files)}; +{added} -{removed} lines."
    )
    return clean(text, EVIDENCE_MAX)


def pick_culprit(
    onset: datetime,
    lookback: timedelta,
    commits: Iterable[ChangeCommit],
    applied: Sequence[AppliedRevision],
    contains: Callable[[str, str], bool] | None = None,
) -> Culprit | None:
    """The commit Flux applied last before ``onset`` within ``lookback`` (see the module docstring for the rule and
    its tie-break), with its evidence; None when no commit was applied in the window. ``ValueError`` for a negative
    ``lookback``."""
    if lookback < timedelta(0):
        raise ValueError("lookback must not be negative")
    t1 = _utc(onset)
    t0 = t1 - lookback
    # the revisions before the onset; of those before the window only the last matters (what ran when it began)
    history = sorted((a for a in applied if _utc(a.at) < t1), key=lambda a: (_utc(a.at), a.sha))
    before_window = sum(1 for a in history if _utc(a.at) < t0)
    history = history[max(before_window - 1, 0) :]
    unique = {c.sha.lower(): c for c in sorted(commits, key=lambda c: c.sha)}
    picked: list[tuple[ChangeCommit, AppliedRevision]] = []
    not_applied: list[str] = []
    after = 0
    for sha, c in sorted(unique.items()):
        if _utc(c.committed_at) > t1 or _utc(c.authored_at) > t1:
            after += 1
            continue
        at = applied_at(sha, history, contains)
        if at is None:
            not_applied.append(sha)
            continue
        if _utc(at.at) >= t0:
            picked.append((c, at))
    if not picked:
        return None

    def key(item: tuple[ChangeCommit, AppliedRevision]) -> tuple[datetime, datetime, datetime]:
        c, at = item
        return (_utc(at.at), _utc(c.committed_at), _utc(c.authored_at))

    best = max(key(i) for i in picked)
    commit, at = min((i for i in picked if key(i) == best), key=lambda i: i[0].sha.lower())
    revision = at.revision or at.sha
    return Culprit(
        commit=commit,
        applied_at=_utc(at.at),
        applied_revision=revision,
        before_onset_seconds=(t1 - _utc(at.at)).total_seconds(),
        evidence=evidence(commit, at.at, revision, t1),
        candidates=len(picked),
        not_applied=not_applied,
        after_onset=after,
    )


def with_details(culprit: Culprit, commit: ChangeCommit, onset: datetime) -> Culprit:
    """``culprit`` with its commit replaced by ``commit`` (the same sha, with what was read of it after the pick:
    its merge request, diff, whether fixloop made it) and the evidence said again. ``ValueError`` for another sha."""
    if commit.sha.lower() != culprit.commit.sha.lower():
        raise ValueError("with_details: not the culprit's commit")
    text = evidence(commit, culprit.applied_at, culprit.applied_revision, onset)
    return culprit.model_copy(update={"commit": commit, "evidence": text})


def line_counts(diff: str) -> tuple[int, int]:
    """``(added, removed)`` lines of a unified diff body as GitLab's diff entity gives it (hunks from the first
    ``@@``, no ``---``/``+++`` headers): lines starting with ``+`` and with ``-``."""
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
    return added, removed


WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Rollout", "CronJob", "Job", "HelmRelease"})
PATHS_MAX = 20  # paths of one candidate (``fixloop.workflows.contracts.investigate.PATHS_MAX``)


def _segments(path: str) -> list[str]:
    return [s for s in path.strip("/").split("/") if s]


def named_paths(entity: str, tree: Iterable[tuple[str, str]], *, limit: int = PATHS_MAX) -> list[str]:
    """The repository paths named after ``entity`` (a service or workload name): each directory whose last segment
    is the name (``apps/base/catalog``, ``services/catalog``) and each file whose name without its extension is the
    name (``apps/production/catalog.yaml``), not below an already named directory; sorted, at most ``limit``.
    ``tree``: ``(path, type)`` pairs, ``type`` ``tree`` or ``blob`` (GitLab's repository tree,
    docs.gitlab.com/api/repositories/#list-repository-tree). The comparison ignores case."""
    want = entity.strip().lower()
    if not want:
        return []
    found: list[str] = []
    for path, kind in sorted(tree):
        parts = _segments(path)
        if not parts:
            continue
        last = parts[-1].lower()
        named = last == want if kind == "tree" else (kind == "blob" and last.rsplit(".", 1)[0] == want)
        if named and not any(path.startswith(f.rstrip("/") + "/") for f in found):
            found.append(path.strip("/"))
    return found[:limit]


def workload_doc(entity: str, text: str, kinds: Collection[str] = WORKLOAD_KINDS) -> dict[str, Any] | None:
    """The document of the manifest file ``text`` (YAML, one or more documents) that declares a workload named
    ``entity`` (``kind`` in ``kinds``, ``metadata.name`` equal to it, ignoring case), the first one; None when none
    does or the text is not YAML (a template)."""
    from ruamel.yaml import YAML  # imported where it is needed

    want = entity.strip().lower()
    try:
        docs = list(YAML(typ="safe", pure=True).load_all(text))
    except Exception:  # ruamel's YAMLError family
        return None
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") not in kinds:
            continue
        meta = doc.get("metadata")
        if isinstance(meta, dict) and str(meta.get("name", "")).lower() == want:
            return doc
    return None


def declares_workload(entity: str, text: str) -> bool:
    """Whether the manifest file ``text`` declares a workload named ``entity`` (``workload_doc``)."""
    return workload_doc(entity, text) is not None


def describe_culprit(entity: str, culprit: Culprit | None, *, commits_read: int = 0, lookback: timedelta) -> str:
    """One candidate's culprit change as plain text (escape it for where it lands): ``<entity>: `` and the
    culprit's ``evidence`` (the commit, who, whose change, its merge request, when Flux applied it, the diff
    summary); or that no commit touching the candidate's files was applied in the ``lookback`` before the onset."""
    name = clean(entity, 200)
    if culprit is None:
        read = f" ({commits_read} commit(s) touching its files read)" if commits_read else ""
        span = _duration(lookback.total_seconds())
        return f"{name}: no commit touching its files was applied in the {span} before the onset{read}."
    return f"{name}: {culprit.evidence}"
