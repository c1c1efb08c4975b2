"""Investigate activities: the culprit change of an incident's top candidates (``investigate.culprit``).

A candidate handed in without paths gets the paths of its workload found in the repository (``candidate_paths``:
named after it, else the manifests declaring it; none found: no commit is read for it).

For each candidate, the commits of the branch Flux applies (the ref of ``lastAppliedRevision``, else the GitOps
repository's default branch) that touched its paths, committed in the lookback window
(``GitLabClient.commits_touching``, at most ``COMMITS_PER_PATH`` per path), joined with what Flux applied and when
(the Kustomization's ``lastAppliedRevision`` at its Ready condition's ``lastTransitionTime``, read here, plus the
applied revisions of the Flux events the gateway received, handed in: ``fixloop.integrations.flux.applied_revisions``);
``fixloop.core.culprit.pick_culprit`` names the commit applied last before the onset, and only that commit's merge
request (``commit_merge_requests``) and diff summary (``commit_diff``) are read. "Applied revision R holds commit
C" is asked of GitLab (``is_ancestor``, ``GET /repository/merge_base``), once per pair. The window is on the
committer date (GitLab's ``since``/``until``): a commit committed before it and applied inside it is not read.

Whether fixloop made a commit: the merge request's author is the bot (``FIXLOOP_GITLAB_BOT_USERNAME``), its source
branch starts with ``fixloop/``, or the commit message carries fixloop's ``Fixloop-Work-Item:`` trailer
(``fixloop.activities.merge_request``). ``author_username`` is the merge request's author (GitLab's commit entity has
only the author's name and email).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from fixloop.activities.deploy import KUSTOMIZATION_RE, read_kustomization
from fixloop.activities.errors import as_application_errors
from fixloop.core.culprit import (
    ChangeCommit,
    FileChange,
    MergeRequestRef,
    declares_workload,
    line_counts,
    named_paths,
    pick_culprit,
    with_details,
)
from fixloop.core.parsing import clean
from fixloop.integrations.flux import FluxSettings, KubeClient, applied_revisions, parse_revision
from fixloop.integrations.gitlab.api import CommitInfo, GitLabClient, GitLabSettings, MergeRequestInfo
from fixloop.workflows.contracts.investigate import (
    COMMITS_PER_PATH,
    FILES_MAX,
    PATH_MAX,
    PATHS_MAX,
    CandidateCulprit,
    CulpritCandidate,
    CulpritInput,
    CulpritOutput,
)

CULPRIT = "investigate.culprit"
MANIFESTS_READ_MAX = 200  # YAML files read to find a workload's manifest when no path is named after it
MANIFEST_BYTES_MAX = 256 * 1024  # a manifest file larger than this is not read for that
MANIFEST_SUFFIXES = (".yaml", ".yml")
BOT_BRANCH_PREFIX = "fixloop/"
WORK_ITEM_TRAILER = "Fixloop-Work-Item:"


class InvestigateActivities:
    """The investigate-stage activities on the GitLab project of ``gitlab`` and the Kubernetes API of ``flux``
    (``kube`` replaces the client: tests). Call ``close()`` when the worker stops."""

    def __init__(self, gitlab: GitLabSettings, flux: FluxSettings, *, kube: KubeClient | None = None) -> None:
        self.gitlab_settings = gitlab
        self.flux_settings = flux
        self.gitlab = GitLabClient(gitlab)
        self.kube = kube or KubeClient.from_settings(flux)

    def close(self) -> None:
        self.kube.close()

    @activity.defn(name=CULPRIT)
    async def culprit(self, inp: CulpritInput) -> CulpritOutput:
        """Name, for each candidate, the commit touching its paths that Flux applied last before ``inp.onset``
        (see the module docstring). Read only, so a retry repeats nothing. Errors: a malformed Kustomization name
        or a naive onset -> non-retryable ``InvalidInput``; a Kustomization that does not exist -> non-retryable
        ``KustomizationNotFound``; GitLab or Kubernetes unreachable, 429/5xx -> retryable; 401/403 ->
        non-retryable ``AuthError``."""
        key = inp.kustomization or self.flux_settings.kustomization
        if not KUSTOMIZATION_RE.match(key):
            raise ApplicationError(
                f"kustomization {clean(key, 80)!r} is not namespace/name", type="InvalidInput", non_retryable=True
            )
        if inp.onset.tzinfo is None:
            raise ApplicationError("onset must carry a timezone", type="InvalidInput", non_retryable=True)
        with as_application_errors():
            return await asyncio.to_thread(self._culprit, inp, key)

    def _culprit(self, inp: CulpritInput, key: str) -> CulpritOutput:
        status = read_kustomization(self.kube, key, "CulpritInput.kustomization")
        applied = sorted(
            {(a.at, a.sha): a for a in [*applied_revisions(status), *inp.applied]}.values(), key=lambda a: (a.at, a.sha)
        )
        asked: dict[tuple[str, str], bool] = {}

        def contains(revision_sha: str, commit_sha: str) -> bool:
            if (revision_sha, commit_sha) not in asked:
                asked[revision_sha, commit_sha] = self.gitlab.is_ancestor(commit_sha, revision_sha)
            return asked[revision_sha, commit_sha]

        lookback = timedelta(seconds=inp.lookback_seconds)
        ref = _tracked_ref(status.last_applied_revision)
        listed: dict[str, CommitInfo] = {}
        details: dict[str, ChangeCommit] = {}
        tree: list[tuple[str, str]] | None = None
        out = []
        for candidate in inp.candidates:
            if not candidate.paths:
                if tree is None:
                    tree = [(i.path, i.type) for i in self.gitlab.tree(recursive=True, ref=ref)]
                paths = self.candidate_paths(candidate.entity, tree, ref)
                if not paths:
                    out.append(CandidateCulprit(entity=candidate.entity))
                    continue
                candidate = candidate.model_copy(update={"paths": paths})
            commits, truncated = self._commits(candidate, inp, lookback, ref, listed)
            found = pick_culprit(inp.onset, lookback, commits, applied, contains)
            if found is not None:  # its merge request and diff are read only now, once per commit
                sha = found.commit.sha
                if sha not in details:
                    details[sha] = self._details(listed[sha])
                found = with_details(found, details[sha].model_copy(update={"paths": found.commit.paths}), inp.onset)
            out.append(
                CandidateCulprit(
                    entity=candidate.entity,
                    paths=candidate.paths,
                    culprit=found,
                    commits_read=len(commits),
                    truncated=truncated,
                )
            )
        return CulpritOutput(candidates=out, applied=applied)

    def candidate_paths(self, entity: str, tree: list[tuple[str, str]], ref: str | None) -> list[str]:
        """The repository paths of ``entity``'s workload: the directories and files named after it
        (``fixloop.core.culprit.named_paths``: ``apps/base/catalog``, ``services/catalog``), else the YAML files
        that declare a workload of that name (``declares_workload``; at most ``MANIFESTS_READ_MAX`` files of at most
        ``MANIFEST_BYTES_MAX`` bytes are read, in path order); at most ``PATHS_MAX``, each at most ``PATH_MAX``
        characters. ``tree``: the repository's ``(path, type)`` entries at ``ref``."""
        found = [p for p in named_paths(entity, tree, limit=PATHS_MAX) if len(p) <= PATH_MAX]
        if found:
            return found
        read, at = 0, ref
        for path, kind in sorted(tree):
            if kind != "blob" or not path.endswith(MANIFEST_SUFFIXES) or len(path) > PATH_MAX:
                continue
            if read >= MANIFESTS_READ_MAX or len(found) >= PATHS_MAX:
                break
            read += 1
            at = at or self.gitlab.default_branch()
            text = self.gitlab.read_file(path, at)
            if text and len(text) <= MANIFEST_BYTES_MAX and declares_workload(entity, text):
                found.append(path)
        return found

    def _commits(
        self,
        candidate: CulpritCandidate,
        inp: CulpritInput,
        lookback: timedelta,
        ref: str | None,
        listed: dict[str, CommitInfo],
    ) -> tuple[list[ChangeCommit], bool]:
        """The distinct commits of ``ref`` (None: the default branch) that touched the candidate's paths, committed
        in the window (without their merge requests and diffs), and whether a path reached ``COMMITS_PER_PATH``
        (older ones unread); ``listed`` collects what GitLab answered."""
        by_sha: dict[str, ChangeCommit] = {}
        truncated = False
        for path in dict.fromkeys(p.strip("/") for p in candidate.paths):
            page = self.gitlab.commits_touching(
                path, since=inp.onset - lookback, until=inp.onset, limit=COMMITS_PER_PATH
            )
            truncated = truncated or len(page) >= COMMITS_PER_PATH
            for c in page:
                sha = c.id.lower()
                listed.setdefault(sha, c)
                by_sha.setdefault(sha, _commit(c)).paths.append(path)
        return list(by_sha.values()), truncated

    def _details(self, c: CommitInfo) -> ChangeCommit:
        """The commit with its merge request (the merged one), its diff summary and whether fixloop made it."""
        mrs = self.gitlab.commit_merge_requests(c.id)
        mr: MergeRequestInfo | None = next((m for m in mrs if m.state == "merged"), None)
        files = []
        for d in self.gitlab.commit_diff(c.id, limit=FILES_MAX):
            added, removed = line_counts(d.diff)
            path = clean(d.new_path, PATH_MAX)
            files.append(FileChange(path=path, added=added, removed=removed, complete=d.complete))
        bot = self.gitlab_settings.bot_username
        by_fixloop = WORK_ITEM_TRAILER in (c.message or "") or (
            mr is not None and (mr.author_username == bot or mr.source_branch.startswith(BOT_BRANCH_PREFIX))
        )
        ref = None
        if mr is not None:
            ref = MergeRequestRef(
                iid=mr.iid,
                title=clean(mr.title, 200),
                web_url=clean(mr.web_url, 300),
                author_username=clean(mr.author_username, 100),
                source_branch=clean(mr.source_branch, 255),
                merged_by_username=mr.merged_by_username,
            )
        return _commit(c).model_copy(
            update={
                "author_username": ref.author_username or None if ref is not None else None,
                "merge_request": ref,
                "by_fixloop": by_fixloop,
                "files": files,
            }
        )


def _tracked_ref(revision: str | None) -> str | None:
    """The branch Flux tracks, from its revision (``main@sha1:<sha>`` -> ``main``); None when unknown."""
    try:
        return parse_revision(revision)[0] if revision else None
    except ValueError:
        return None


def _commit(c: CommitInfo) -> ChangeCommit:
    """GitLab's commit entity as the core's ``ChangeCommit`` (texts cleaned and cut)."""
    return ChangeCommit(
        sha=c.id.lower(),
        title=clean(c.title, 200),
        author_name=clean(c.author_name, 100),
        author_email=clean(c.author_email, 200),
        authored_at=c.authored_date,
        committed_at=c.committed_date,
        parent_shas=[p.lower() for p in c.parent_ids[:8]],
        by_fixloop=WORK_ITEM_TRAILER in (c.message or ""),
    )
