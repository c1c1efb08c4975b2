"""GitLab merge requests: a thin typed client on the official ``python-gitlab`` library.

REST API v4 (docs.gitlab.com/api/rest/): branches (``/repository/branches``), commits with actions
(``POST /repository/commits``), repository files and tree, merge requests, notes and merge request approvals
(docs.gitlab.com/api/merge_request_approvals/), the pipelines of a commit and their jobs (docs.gitlab.com/api/
pipelines/, docs.gitlab.com/api/jobs/; the models in ``fixloop.integrations.gitlab.pipelines``). Auth is a
personal, project or group access token with the ``api`` scope, sent as ``PRIVATE-TOKEN``.

Idempotency (every write can be re-run by a Temporal retry and changes nothing the second time):
``ensure_branch`` leaves an existing branch alone; ``commit_files`` commits nothing when the branch already holds
exactly the wanted contents; ``find_or_create_merge_request`` finds the MR of the source branch before it creates
one: with a ``loop`` marker, the MR of that branch in any state (opened, merged, closed) whose description begins
with the loop's hidden ``<!-- fixloop:loop=<workflow id> run=<run id> -->`` (``loop_marker``), so a retry after a
person merged or closed it returns that MR instead of opening a second one; else the open MR of the branch (a 409
"Another open merge request already exists" from a race is answered by finding it again);
``add_note`` with a ``dedup_key`` ends the note with an HTML comment ``<!-- fixloop-ref: <key> -->`` (invisible in
GitLab's rendering) and looks for it among the MR's notes before adding; ``revert_commit`` looks for a commit on the
branch whose message says "This reverts commit <sha>".

Approvals and SHAs: GitLab's approvals API lists who approved, not which commit they saw. fixloop binds an approval to
a SHA this way: ``approvals`` reads the MR's head ``sha`` before and after reading the approvals and returns them with
that SHA (a ``Conflict`` if the head moved in between, so the caller re-reads). With the project setting "Reset
approvals on push" (``reset_approvals_on_push``, on by default), GitLab removes every approval when a commit is pushed
to the source branch, so approvals listed together with head ``S`` were given at ``S``. The gate then accepts an
approval only for the SHA it was recorded with, and merges with ``sha=S`` (GitLab answers 409 if the head moved).
``approval_settings`` reads that setting (``GET /projects/:id/approvals``); when it is off or unknown, the workflow
binds approvals by observation instead (``fixloop.core.gate.observe``). ``approvals`` gives each approver's user id
(``approved_by[].user.id``), so the gate can tell the author and the bot apart; ``is_group_member`` and ``find_user``
check the approver policy and the human behind a ``decide``.

Errors: ``GitlabError`` -> ``fixloop.integrations.errors.status_error`` by ``response_code`` (401/403 ``AuthError``,
404 ``NotFound``, 409 ``Conflict``, 400/422 ``Invalid``, 429/5xx retryable); requests' connection errors and
timeouts -> ``TransportError``. The library's retries are off (``retry_transient_errors=False``, no sleeping on 429,
``max_retries=0``): Temporal is the only retry layer. Messages carry GitLab's error text, never the token.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import gitlab
import requests
from gitlab.exceptions import GitlabError
from pydantic import BaseModel, Field, HttpUrl, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fixloop.integrations.checks import CheckResult, Status, bounded, failed, hint
from fixloop.integrations.errors import (
    AuthError,
    ExceptionMap,
    IntegrationError,
    NotFound,
    answer_error,
    by_status,
    map_exceptions,
    status_error,
    transport_error,
)
from fixloop.integrations.gitlab.pipelines import MAX_JOBS, Pipeline, PipelineJob

SYSTEM = "gitlab"
DEDUP_MARKER = "<!-- fixloop-ref: {key} -->"
LOOP_MARKER_MAX = 400  # characters of a loop's marker
BRANCH_MRS_MAX = 20  # merge requests of one source branch looked through for a loop's marker (newest first)
_MARKER_UNSAFE = re.compile(r"[^A-Za-z0-9._/:@=+-]")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a full commit SHA (SHA-1 or SHA-256 repositories)


class GitLabSettings(BaseSettings):
    """``FIXLOOP_GITLAB_URL`` (the instance, e.g. ``https://gitlab.com``; no ``/api/v4``), ``FIXLOOP_GITLAB_TOKEN``
    (access token, ``api`` scope), ``FIXLOOP_GITLAB_PROJECT`` (``namespace/name`` or numeric id, default
    ``platform/gitops``), ``FIXLOOP_GITLAB_BOT_USERNAME`` (whose approvals never count), ``FIXLOOP_GITLAB_TIMEOUT``
    (seconds per HTTP request); the approval policy: ``FIXLOOP_GITLAB_APPROVERS`` (comma-separated usernames),
    ``FIXLOOP_GITLAB_APPROVER_GROUP`` (a group path or id), ``FIXLOOP_GITLAB_AUTHOR_APPROVALS_COUNT`` (default
    false; ``fixloop.core.gate``)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_GITLAB_", env_file=".env", extra="ignore")

    url: HttpUrl = Field(description="The GitLab instance, e.g. https://gitlab.com (no /api/v4); enables GitLab.")
    token: SecretStr = Field(description="Access token with the api scope (fixloop's bot user).")
    project: str = Field(
        default="platform/gitops", min_length=1, description="The GitOps project: namespace/name or numeric id."
    )
    bot_username: str = Field(
        default="fixloop-bot", min_length=1, description="The token's user, whose approvals never count."
    )
    timeout: float = Field(default=30.0, gt=0, le=300, description="Seconds per HTTP request.")
    approvers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        max_length=1_000,
        description="Comma-separated GitLab usernames whose approvals (and decide) count; empty: any human "
        "(see also approver_group).",
    )
    approver_group: str | None = Field(
        default=None,
        min_length=1,
        max_length=1_000,
        description="A GitLab group (path or id) whose members' approvals (and decide) count, inherited members "
        "included; with approvers, either suffices.",
    )
    author_approvals_count: bool = Field(
        default=False, description="Whether the merge request author's own approval counts at the gate."
    )

    @field_validator("approvers", mode="before")
    @classmethod
    def _usernames(cls, v: object) -> object:
        if isinstance(v, str):
            return [u.strip().lstrip("@") for u in v.split(",") if u.strip()]
        return v


class GitLabUser(BaseModel):
    id: int
    username: str
    name: str


class BranchRef(BaseModel):
    name: str
    sha: str  # head commit
    created: bool = False  # ensure_branch: True when this call created it


class CommitRef(BaseModel):
    sha: str  # the branch head after the call
    created: bool  # False when the branch already held the contents (nothing committed)


class MergeRequestInfo(BaseModel):
    """A merge request (GitLab's MR entity, docs.gitlab.com/api/merge_requests/#get-single-mr), reduced."""

    iid: int
    id: int
    title: str
    description: str
    state: str  # opened | closed | merged | locked
    source_branch: str
    target_branch: str
    sha: str | None  # head of the source branch
    web_url: str
    merge_commit_sha: str | None  # set once merged (merge method "merge commit")
    squash_commit_sha: str | None = None
    detailed_merge_status: str | None  # mergeable, not_approved, conflict, draft_status, not_open, ...
    has_conflicts: bool = False
    labels: list[str]
    author_username: str
    author_id: int | None = None
    merged_by_username: str | None = None
    merged_at: str | None = None  # ISO 8601
    created: bool = False  # find_or_create_merge_request: True when this call created it

    @property
    def merged_commit_sha(self) -> str | None:
        """The commit the target branch got: the merge commit, else the squash commit (fast-forward squash)."""
        return self.merge_commit_sha or self.squash_commit_sha


class Approver(BaseModel):
    """One entry of ``approved_by``: the user's id and username (``approved_by[].user.{id,username}``)."""

    id: int
    username: str


class ApprovalSettings(BaseModel):
    """A project's approval configuration (``GET /projects/:id/approvals``, docs.gitlab.com/api/
    merge_request_approvals/#get-configuration), reduced; ``available`` False when GitLab has no such endpoint (CE,
    or a token that may not read it: 404/403), and then ``reset_approvals_on_push`` is None (unknown)."""

    available: bool = True
    reset_approvals_on_push: bool | None = None
    merge_requests_author_approval: bool | None = None


class UserInfo(BaseModel):
    """A user (``GET /users/:id``, docs.gitlab.com/api/users/): ``state`` active | blocked | deactivated | ...;
    ``bot`` GitLab's flag (bots, service accounts)."""

    id: int
    username: str
    state: str
    bot: bool = False


class Approvals(BaseModel):
    """Who approved merge request ``iid`` while its head was ``sha`` (see the module docstring)."""

    iid: int
    sha: str | None
    approved_by: list[str]  # usernames
    approvers: list[Approver] = Field(default_factory=list)  # the same, with user ids
    approvals_required: int
    approvals_left: int

    def human_approvers(self, bot_username: str) -> list[str]:
        """The approvers other than the bot (fixloop never counts its own approval)."""
        return [u for u in self.approved_by if u != bot_username]


class NoteRef(BaseModel):
    id: int
    created: bool  # False when a note with the same dedup_key was already there


class FileDiff(BaseModel):
    """One file of a merge request's diff (GitLab's diff entity): its paths and unified diff (hunks only)."""

    old_path: str
    new_path: str
    diff: str
    complete: bool = True  # False when GitLab did not show the diff (too large, collapsed): its lines are unknown


class CommitInfo(BaseModel):
    """A commit as GitLab's commits API lists it (docs.gitlab.com/api/commits/, the commit entity), reduced; times
    are ISO 8601 as GitLab gives them (``2022-01-20T14:14:54.000+00:00``)."""

    id: str
    title: str = ""
    message: str = ""
    author_name: str = ""
    author_email: str = ""
    authored_date: datetime
    committed_date: datetime
    parent_ids: list[str] = []
    web_url: str = ""


class TreeItem(BaseModel):
    path: str
    name: str
    type: str  # blob | tree | commit (submodule)
    id: str
    mode: str


def _message(e: GitlabError) -> str:
    msg = e.error_message
    if isinstance(msg, bytes):
        msg = msg.decode(errors="replace")
    if isinstance(msg, list):
        msg = "; ".join(str(m) for m in msg)
    elif isinstance(msg, dict):
        msg = "; ".join(f"{k}: {v}" for k, v in msg.items())
    return str(msg or "no error message")[:300]


# python-gitlab's and requests' exceptions as ``fixloop.integrations.errors`` (``map_exceptions``).
_ERRORS: ExceptionMap = {
    GitlabError: by_status(SYSTEM, lambda e: e.response_code, _message),
    requests.exceptions.JSONDecodeError: answer_error(SYSTEM, "the answer is not JSON (is the URL a GitLab instance?)"),
    requests.exceptions.RequestException: transport_error(SYSTEM),
}


class _Gitlab(gitlab.Gitlab):
    """python-gitlab without its own retries: no sleeping on 429, no retry of 5xx or connection errors."""

    def http_request(self, verb: str, path: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.update(obey_rate_limit=False, retry_transient_errors=False, max_retries=0)
        return super().http_request(verb, path, *args, **kwargs)


def loop_marker(workflow_id: str, run_id: str) -> str:
    """The hidden line a loop's merge request description begins with: ``<!-- fixloop:loop=<workflow id>
    run=<run id> -->`` (an HTML comment: GitLab's rendering hides it). Characters outside ``A-Za-z0-9._/:@=+-``
    become ``_`` (nothing can end the comment early); the workflow id is cut so that the marker stays within
    ``LOOP_MARKER_MAX`` characters with the whole run id (at most 64 characters; Temporal's are UUIDs)."""
    run = _MARKER_UNSAFE.sub("_", run_id)[:64]
    room = LOOP_MARKER_MAX - len("<!-- fixloop:loop= run= -->") - len(run)
    return f"<!-- fixloop:loop={_MARKER_UNSAFE.sub('_', workflow_id)[:room]} run={run} -->"


def with_marker(description: str, marker: str | None) -> str:
    """``description`` beginning with ``marker`` on its own line (once); as it is without one."""
    if marker is None:
        return description
    rest = description.removeprefix(marker).lstrip("\n")
    return f"{marker}\n{rest}"


def _mr_info(raw: dict[str, Any], created: bool = False) -> MergeRequestInfo:
    return MergeRequestInfo(
        iid=raw["iid"],
        id=raw["id"],
        title=raw.get("title") or "",
        description=raw.get("description") or "",
        state=raw["state"],
        source_branch=raw["source_branch"],
        target_branch=raw["target_branch"],
        sha=raw.get("sha"),
        web_url=raw.get("web_url") or "",
        merge_commit_sha=raw.get("merge_commit_sha"),
        squash_commit_sha=raw.get("squash_commit_sha"),
        detailed_merge_status=raw.get("detailed_merge_status"),
        has_conflicts=bool(raw.get("has_conflicts")),
        labels=list(raw.get("labels") or []),
        author_username=(raw.get("author") or {}).get("username", ""),
        author_id=(raw.get("author") or {}).get("id"),
        merged_by_username=((raw.get("merge_user") or raw.get("merged_by")) or {}).get("username"),
        merged_at=raw.get("merged_at"),
        created=created,
    )


def _file_diff(raw: dict[str, Any]) -> FileDiff:
    """GitLab's diff entity (an MR's ``diffs``, a commit's ``diff``) as a ``FileDiff``."""
    shown = not raw.get("too_large") and not raw.get("collapsed")
    return FileDiff(
        old_path=str(raw.get("old_path") or raw.get("new_path") or ""),
        new_path=str(raw.get("new_path") or raw.get("old_path") or ""),
        diff=str(raw.get("diff") or "") if shown else "",
        complete=bool(shown and (raw.get("diff") or raw.get("deleted_file") or raw.get("new_file"))),
    )


class GitLabClient:
    """Blocking; run it in a thread from async code. Every call is one or a few HTTP requests, each bounded by
    ``settings.timeout``, on the project ``settings.project``."""

    def __init__(self, settings: GitLabSettings) -> None:
        self.settings = settings
        self.gl = _Gitlab(
            url=str(settings.url).rstrip("/"),
            private_token=settings.token.get_secret_value(),
            timeout=settings.timeout,
            ssl_verify=True,
            retry_transient_errors=False,
        )
        self.project = self.gl.projects.get(settings.project, lazy=True)

    def check(self) -> GitLabUser:
        """The token's user (``GET /user``): proves URL and token work."""
        with map_exceptions(_ERRORS, "current user"):
            self.gl.auth()
        user = self.gl.user
        assert user is not None
        return GitLabUser(id=user.id, username=user.username, name=user.name)

    # -- branches and files -------------------------------------------------------------------------------------
    def branch_head(self, name: str) -> str | None:
        """The head sha of branch ``name``, or None when there is no such branch."""
        try:
            with map_exceptions(_ERRORS, f"get branch {name}"):
                return self.project.branches.get(name).commit["id"]
        except NotFound:
            return None

    def ensure_branch(self, name: str, ref: str) -> BranchRef:
        """Branch ``name`` created at ``ref`` (branch or sha) unless it exists; an existing one is left unchanged."""
        head = self.branch_head(name)
        if head is not None:
            return BranchRef(name=name, sha=head)
        try:
            with map_exceptions(_ERRORS, f"create branch {name}"):
                branch = self.project.branches.create({"branch": name, "ref": ref})
        except IntegrationError as e:  # 400 "Branch already exists": a concurrent first call won
            head = self.branch_head(name)
            if head is None:
                raise e from None
            return BranchRef(name=name, sha=head)
        return BranchRef(name=name, sha=branch.commit["id"], created=True)

    def delete_branch(self, name: str) -> bool:
        """Delete branch ``name`` (``DELETE /projects/:id/repository/branches/:branch``); False when it was already
        gone. A protected branch is GitLab's 403 (``AuthError``)."""
        try:
            with map_exceptions(_ERRORS, f"delete branch {name}"):
                self.project.branches.delete(name)
        except NotFound:
            return False
        return True

    def read_file(self, path: str, ref: str) -> str | None:
        """The text (UTF-8) of ``path`` at ``ref`` (branch or sha), or None when there is no such file there."""
        try:
            with map_exceptions(_ERRORS, f"read {path}@{ref}"):
                raw = self.project.files.raw(file_path=path, ref=ref)
        except NotFound as e:
            if "Project" in e.message:
                raise
            return None
        assert isinstance(raw, bytes)
        return raw.decode("utf-8", errors="replace")

    def read_file_head(self, path: str, ref: str, max_bytes: int) -> bytes | None:
        """The first ``max_bytes`` bytes of ``path`` at ``ref`` (the raw file streamed; what follows is not
        downloaded), or None when there is no such file there. Ask for one byte more than a bound to tell a file
        over it."""
        try:
            with map_exceptions(_ERRORS, f"read {path}@{ref}"):
                chunks = self.project.files.raw(file_path=path, ref=ref, streamed=True, iterator=True)
                data = bytearray()
                for chunk in chunks:
                    data += chunk
                    if len(data) >= max_bytes:
                        break
        except NotFound as e:
            if "Project" in e.message:
                raise
            return None
        return bytes(data[:max_bytes])

    def tree(
        self, path: str = "", ref: str | None = None, recursive: bool = False, limit: int | None = None
    ) -> list[TreeItem]:
        """The entries under directory ``path`` at ``ref`` (default branch when None), at most ``limit`` of them
        in GitLab's order (None: all; 100 per page); [] for a missing directory."""
        params: dict[str, Any] = {"path": path, "recursive": recursive, "iterator": True, "per_page": 100}
        if ref:
            params["ref"] = ref
        out: list[TreeItem] = []
        try:
            with map_exceptions(_ERRORS, f"tree {path or '/'}"):
                for item in self.project.repository_tree(**params):
                    if limit is not None and len(out) >= limit:
                        break
                    out.append(TreeItem.model_validate(item))
        except NotFound as e:
            if "Tree" in e.message:
                return []
            raise
        return out

    def commit_files(
        self,
        branch: str,
        files: dict[str, str],
        message: str,
        expected: dict[str, str | None] | None = None,
        start_branch: str | None = None,
    ) -> CommitRef:
        """One commit on ``branch`` setting each ``files[path]`` to its text (create or update).

        Nothing is committed when the branch already holds exactly these contents: the head is returned with
        ``created=False``, so re-running changes nothing. ``expected[path]`` is the content the change was planned
        against (None: the file must not exist); a file that holds neither the expected nor the new content raises
        ``Conflict`` (someone else changed it). A missing ``branch`` is created from ``start_branch`` (default: the
        project's default branch) by the commit itself."""
        if not files:
            raise IntegrationError(SYSTEM, "commit_files: no files")
        head = self.branch_head(branch)
        base = head or start_branch or self.default_branch()
        current = {path: self.read_file(path, base) for path in files}
        changed = {path: text for path, text in files.items() if current[path] != text}
        if not changed and head is not None:
            return CommitRef(sha=head, created=False)
        for path in changed:
            if expected is not None and path in expected and current[path] != expected[path]:
                raise status_error(SYSTEM, 409, f"commit_files: {path} on {base} is not the expected content")
        actions = [
            {"action": "update" if current[path] is not None else "create", "file_path": path, "content": text}
            for path, text in changed.items()
        ]
        data: dict[str, Any] = {"branch": branch, "commit_message": message, "actions": actions}
        if head is None:
            data["start_branch"] = base
        with map_exceptions(_ERRORS, f"commit to {branch}"):
            commit = self.project.commits.create(data)
        return CommitRef(sha=commit.id, created=True)

    def default_branch(self) -> str:
        with map_exceptions(_ERRORS, "get project"):
            return self.gl.projects.get(self.settings.project).default_branch

    def revert_commit(self, sha: str, branch: str) -> CommitRef:
        """Commit the revert of ``sha`` (a merge commit reverts against its first parent) on ``branch``; when one of
        the branch's last 50 commits already says "This reverts commit <sha>", that commit is returned instead."""
        with map_exceptions(_ERRORS, f"list commits of {branch}"):
            recent = self.project.commits.list(ref_name=branch, per_page=50, get_all=False)
        for c in recent:
            if f"This reverts commit {sha}" in (c.message or ""):
                return CommitRef(sha=c.id, created=False)
        with map_exceptions(_ERRORS, f"revert {sha[:12]} on {branch}"):
            raw = self.project.commits.get(sha, lazy=True).revert(branch=branch)
        assert isinstance(raw, dict)
        return CommitRef(sha=raw["id"], created=True)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether commit ``ancestor`` (a SHA, full or an unambiguous 7+ hex prefix) is ``descendant`` (a SHA or a
        branch) or one of its ancestors: ``GET /repository/merge_base?refs[]=<ancestor>&refs[]=<descendant>``
        (docs.gitlab.com/api/repositories/#merge-base) answers ``ancestor`` itself exactly then. ``False`` when a
        ref is unknown to the project (GitLab answers 400 "Could not find ref: ...") or the histories are unrelated
        (404 "Merge Base Not Found"); other errors as everywhere (a 404 for the project stays ``NotFound``)."""
        a = ancestor.strip().lower()
        if not 7 <= len(a) <= 64 or any(c not in "0123456789abcdef" for c in a):
            raise IntegrationError(SYSTEM, f"is_ancestor: {ancestor[:80]!r} is not a commit sha")
        if a == descendant.strip().lower():
            return True
        try:
            with map_exceptions(_ERRORS, f"merge base of {a[:12]} and {descendant[:40]}"):
                raw = self.project.repository_merge_base([a, descendant.strip()])
        except IntegrationError as e:
            status = getattr(e, "status", None)
            if (status == 400 and "Could not find ref" in e.message) or (status == 404 and "Merge Base" in e.message):
                return False
            raise
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise IntegrationError(SYSTEM, "merge base: the answer is not a commit")
        return raw["id"].lower().startswith(a)

    # -- merge requests -----------------------------------------------------------------------------------------
    def find_merge_request(self, source_branch: str, target_branch: str | None = None) -> MergeRequestInfo | None:
        """The open MR from ``source_branch`` (into ``target_branch`` when given), or None."""
        query: dict[str, Any] = {"state": "opened", "source_branch": source_branch}
        if target_branch:
            query["target_branch"] = target_branch
        with map_exceptions(_ERRORS, f"find merge request of {source_branch}"):
            found = self.project.mergerequests.list(**query, get_all=False, per_page=20)
        return _mr_info(found[0].asdict()) if found else None

    def merge_requests_of_branch(self, source_branch: str, limit: int = BRANCH_MRS_MAX) -> list[MergeRequestInfo]:
        """The MRs from ``source_branch`` in any state, newest first, at most ``limit``
        (``GET /projects/:id/merge_requests?state=all&source_branch=<branch>&order_by=created_at&sort=desc``)."""
        with map_exceptions(_ERRORS, f"merge requests of {source_branch}"):
            found = self.project.mergerequests.list(
                state="all", source_branch=source_branch, order_by="created_at", sort="desc", get_all=False,
                per_page=limit,
            )  # fmt: skip
        return [_mr_info(mr.asdict()) for mr in found[:limit]]

    def find_marked_merge_request(self, source_branch: str, marker: str) -> MergeRequestInfo | None:
        """The newest MR from ``source_branch``, in any state (opened, merged, closed, locked), whose description
        begins with ``marker`` (``loop_marker``: the loop that opened it), or None."""
        mine = (mr for mr in self.merge_requests_of_branch(source_branch) if mr.description.startswith(marker))
        return next(mine, None)

    def find_or_create_merge_request(
        self,
        source_branch: str,
        target_branch: str,
        title: str,
        description: str,
        labels: list[str] | None = None,
        marker: str | None = None,
    ) -> MergeRequestInfo:
        """The MR of ``source_branch`` for the caller. With ``marker`` (``loop_marker``) the description begins with
        it, and an MR of the branch in any state carrying it is the caller's own: returned as it is when it is no
        longer open (merged, closed or being merged: a person acted on it; never opened a second time). Else the
        open MR of the branch (whoever opened it); created when there is none, else its title, description and
        labels updated only where they differ. There is never a second open MR for the branch."""
        labels = sorted(set(labels or []))
        description = with_marker(description, marker)
        found = self.find_marked_merge_request(source_branch, marker) if marker else None
        if found is not None and found.state != "opened":
            return found
        if found is None or found.target_branch != target_branch:
            found = self.find_merge_request(source_branch, target_branch)
        if found is None:
            data = {
                "source_branch": source_branch,
                "target_branch": target_branch,
                "title": title,
                "description": description,
                "labels": ",".join(labels),
                "remove_source_branch": True,
            }
            try:
                with map_exceptions(_ERRORS, f"create merge request from {source_branch}"):
                    mr = self.project.mergerequests.create(data)
                return _mr_info(mr.asdict(), created=True)
            except IntegrationError as e:  # 409 "Another open merge request already exists": a race was lost
                found = self.find_merge_request(source_branch, target_branch)
                if found is None:
                    raise e from None
        changes: dict[str, Any] = {}
        if found.title != title:
            changes["title"] = title
        if found.description != description:
            changes["description"] = description
        if sorted(set(found.labels)) != labels:
            changes["labels"] = ",".join(labels)
        if not changes:
            return found
        with map_exceptions(_ERRORS, f"update merge request !{found.iid}"):
            raw = self.project.mergerequests.update(found.iid, changes)
        return _mr_info(raw)

    def get_merge_request(self, iid: int) -> MergeRequestInfo:
        """Merge request ``iid``; ``NotFound`` when there is none."""
        with map_exceptions(_ERRORS, f"get merge request !{iid}"):
            return _mr_info(self.project.mergerequests.get(iid).asdict())

    def approvals(self, iid: int) -> Approvals:
        """Who approved ``iid`` and at which head (see "Approvals and SHAs" above). ``Conflict`` when the head moved
        while reading."""
        before = self.get_merge_request(iid).sha
        with map_exceptions(_ERRORS, f"approvals of !{iid}"):
            raw = self.project.mergerequests.get(iid, lazy=True).approvals.get().asdict()
        after = self.get_merge_request(iid).sha
        if before != after:
            raise status_error(SYSTEM, 409, f"approvals of !{iid}: the head moved while reading; read again")
        users = [a.get("user") or {} for a in raw.get("approved_by") or []]
        return Approvals(
            iid=iid,
            sha=after,
            approved_by=[u.get("username", "") for u in users],
            approvers=[
                Approver(id=u["id"], username=u["username"])
                for u in users
                if isinstance(u.get("id"), int) and isinstance(u.get("username"), str) and u["username"]
            ],
            approvals_required=int(raw.get("approvals_required") or 0),
            approvals_left=int(raw.get("approvals_left") or 0),
        )

    def approval_settings(self) -> ApprovalSettings:
        """The project's approval configuration (``GET /projects/:id/approvals``); ``available=False`` when GitLab
        answers 404 or 403 (CE has no such endpoint): the caller then treats ``reset_approvals_on_push`` as off."""
        try:
            with map_exceptions(_ERRORS, "approval settings"):
                raw = self.project.approvals.get().asdict()
        except (NotFound, AuthError):
            return ApprovalSettings(available=False)
        reset, author = raw.get("reset_approvals_on_push"), raw.get("merge_requests_author_approval")
        return ApprovalSettings(
            reset_approvals_on_push=reset if isinstance(reset, bool) else None,
            merge_requests_author_approval=author if isinstance(author, bool) else None,
        )

    def is_group_member(self, group: str, user_id: int) -> bool:
        """Whether user ``user_id`` is an active member of ``group`` (path or id), inherited memberships included
        (``GET /groups/:id/members/all/:user_id``, docs.gitlab.com/api/members/); a 404 (no such member) is False."""
        try:
            with map_exceptions(_ERRORS, f"member {user_id} of group {group}"):
                raw = self.gl.groups.get(group, lazy=True).members_all.get(user_id).asdict()
        except NotFound:
            return False
        return raw.get("id") == user_id and raw.get("state", "active") == "active"

    def find_user(self, username: str) -> UserInfo | None:
        """The user ``username`` (``GET /users?username=`` then ``GET /users/:id`` for ``bot``), or None."""
        with map_exceptions(_ERRORS, f"find user {username[:60]}"):
            found = self.gl.users.list(username=username, get_all=False, per_page=20)
        match = next((u for u in found if u.username == username), None)
        if match is None:
            return None
        try:
            with map_exceptions(_ERRORS, f"get user {match.id}"):
                raw = self.gl.users.get(match.id).asdict()
        except NotFound:
            return None
        return UserInfo(
            id=raw["id"], username=raw["username"], state=str(raw.get("state") or ""), bot=bool(raw.get("bot"))
        )

    def add_note(self, iid: int, body: str, dedup_key: str | None = None) -> NoteRef:
        """A comment on ``iid``. With ``dedup_key`` the body ends with ``<!-- fixloop-ref: <key> -->`` and an existing
        note carrying that marker is returned instead of adding another."""
        mr = self.project.mergerequests.get(iid, lazy=True)
        if dedup_key is not None:
            if "-->" in dedup_key or "\n" in dedup_key:
                raise IntegrationError(SYSTEM, "dedup_key must be one line without '-->'")
            marker = DEDUP_MARKER.format(key=dedup_key)
            with map_exceptions(_ERRORS, f"notes of !{iid}"):
                for note in mr.notes.list(iterator=True, per_page=100):
                    if (note.body or "").rstrip().endswith(marker):
                        return NoteRef(id=note.id, created=False)
            body = f"{body.rstrip()}\n\n{marker}"
        with map_exceptions(_ERRORS, f"comment on !{iid}"):
            note = mr.notes.create({"body": body})
        return NoteRef(id=note.id, created=True)

    # -- open merge requests and their diffs (one MR per line) -------------------------------------------------
    def open_merge_requests(self, branch_prefix: str, limit: int = 100, scan: int = 1_000) -> list[MergeRequestInfo]:
        """The open MRs whose source branch starts with ``branch_prefix`` (e.g. ``fixloop/``), oldest first, at
        most ``limit`` of them among the ``scan`` oldest open MRs of the project
        (``GET /projects/:id/merge_requests?state=opened&order_by=created_at&sort=asc``, 100 per page; GitLab has
        no branch-prefix filter, so the prefix is matched here)."""
        out: list[MergeRequestInfo] = []
        with map_exceptions(_ERRORS, "list open merge requests"):
            listed = self.project.mergerequests.list(
                state="opened", order_by="created_at", sort="asc", iterator=True, per_page=100
            )
            for n, mr in enumerate(listed):
                if n >= scan:
                    break
                raw = mr.asdict()
                if str(raw.get("source_branch", "")).startswith(branch_prefix):
                    out.append(_mr_info(raw))
                    if len(out) >= limit:
                        break
        return out

    def merge_request_diffs(self, iid: int, limit: int = 500) -> list[FileDiff]:
        """The file diffs of MR ``iid`` against its base (``GET /projects/:id/merge_requests/:iid/diffs``, GitLab
        15.7+, paginated; docs.gitlab.com/api/merge_requests/#list-merge-request-diffs), at most ``limit`` files.
        A diff GitLab does not show (``too_large``, ``collapsed``) has ``diff`` empty and ``complete`` False."""
        path = f"/projects/{self.project.encoded_id}/merge_requests/{iid}/diffs"
        out: list[FileDiff] = []
        with map_exceptions(_ERRORS, f"diffs of !{iid}"):
            for raw in self.gl.http_list(path, iterator=True, per_page=100):
                if not isinstance(raw, dict):
                    continue
                out.append(_file_diff(raw))
                if len(out) >= limit:
                    break
        return out

    def close_merge_request(self, iid: int) -> MergeRequestInfo:
        """Close MR ``iid`` (``PUT /projects/:id/merge_requests/:iid`` with ``state_event=close``); closing a closed
        one changes nothing."""
        with map_exceptions(_ERRORS, f"close merge request !{iid}"):
            raw = self.project.mergerequests.update(iid, {"state_event": "close"})
        return _mr_info(raw)

    # -- the commits that touched a path (the culprit change of an incident) ------------------------------------
    def commits_touching(
        self, path: str, since: datetime, until: datetime | None = None, ref: str | None = None, limit: int = 20
    ) -> list[CommitInfo]:
        """The newest ``limit`` (1..100) commits of ``ref`` (default: the project's default branch) that touched
        ``path`` (a file or a directory) committed between ``since`` and ``until`` (inclusive; aware datetimes,
        naive ones taken as UTC): ``GET /projects/:id/repository/commits?ref_name=&path=&since=&until=``
        (docs.gitlab.com/api/commits/#list-repository-commits; GitLab filters on the path as ``git log -- <path>``
        does, newest first). ``NotFound`` when the ref does not exist."""
        if not 1 <= limit <= 100:
            raise IntegrationError(SYSTEM, f"commits_touching: limit {limit} is not within 1..100")
        # ``path`` goes in ``query_parameters``: python-gitlab's ``list(path=)`` would replace the URL path
        query: dict[str, Any] = {"path": path, "since": _iso(since)}
        if until is not None:
            query["until"] = _iso(until, up=True)
        if ref:
            query["ref_name"] = ref
        with map_exceptions(_ERRORS, f"commits touching {path[:200]}"):
            listed = self.project.commits.list(query_parameters=query, per_page=limit, get_all=False)
        return [CommitInfo.model_validate(c.asdict()) for c in listed[:limit]]

    def commit_merge_requests(self, sha: str) -> list[MergeRequestInfo]:
        """The merge requests that hold commit ``sha`` (``GET /projects/:id/repository/commits/:sha/merge_requests``,
        docs.gitlab.com/api/commits/#list-merge-requests-associated-with-a-commit), merged ones first, then by iid.
        ``NotFound`` when there is no such commit."""
        with map_exceptions(_ERRORS, f"merge requests of {sha[:12]}"):
            raw = self.project.commits.get(sha, lazy=True).merge_requests()
        out = [_mr_info(mr) for mr in raw if isinstance(mr, dict)] if isinstance(raw, list) else []
        return sorted(out, key=lambda m: (m.state != "merged", m.iid))

    def commit_diff(self, sha: str, limit: int = 100) -> list[FileDiff]:
        """The file diffs of commit ``sha`` against its first parent (``GET /projects/:id/repository/commits/:sha/
        diff``, docs.gitlab.com/api/commits/#get-the-diff-of-a-commit, paginated), at most ``limit`` files; a diff
        GitLab does not show (``too_large``, ``collapsed``) has ``complete`` False."""
        path = f"/projects/{self.project.encoded_id}/repository/commits/{sha}/diff"
        out: list[FileDiff] = []
        with map_exceptions(_ERRORS, f"diff of {sha[:12]}"):
            for raw in self.gl.http_list(path, iterator=True, per_page=min(max(limit, 1), 100)):
                if isinstance(raw, dict):
                    out.append(_file_diff(raw))
                if len(out) >= limit:
                    break
        return out

    # -- CI pipelines of a commit (the build of a merged source change) ----------------------------------------
    def pipelines_for(self, sha: str, ref: str | None = None, limit: int = 20) -> list[Pipeline]:
        """The newest ``limit`` (1..100) pipelines of commit ``sha`` (a full hex SHA), newest first, on ``ref`` when
        given (``GET /projects/:id/pipelines?sha=&ref=&order_by=id&sort=desc``, docs.gitlab.com/api/pipelines/
        #list-project-pipelines); empty when CI has not created one (yet, or ever: no job's rules matched).
        ``IntegrationError`` for a malformed ``sha`` or ``limit``."""
        if not _SHA.fullmatch(sha):
            raise IntegrationError(SYSTEM, f"pipelines_for: {sha[:80]!r} is not a commit sha")
        if not 1 <= limit <= 100:
            raise IntegrationError(SYSTEM, f"pipelines_for: limit {limit} is not within 1..100")
        query: dict[str, Any] = {"sha": sha, "order_by": "id", "sort": "desc"}
        if ref:
            query["ref"] = ref
        with map_exceptions(_ERRORS, f"pipelines of {sha[:12]}"):
            listed = self.project.pipelines.list(query_parameters=query, per_page=limit, get_all=False)
        return [Pipeline.model_validate(p.asdict()) for p in listed[:limit]]

    def pipeline(self, pipeline_id: int) -> Pipeline:
        """Pipeline ``pipeline_id`` (``GET /projects/:id/pipelines/:pipeline_id``); ``NotFound`` when the project
        has no such pipeline."""
        with map_exceptions(_ERRORS, f"pipeline {pipeline_id}"):
            return Pipeline.model_validate(self.project.pipelines.get(pipeline_id).asdict())

    def pipeline_jobs(self, pipeline_id: int, limit: int = MAX_JOBS) -> list[PipelineJob]:
        """The jobs of pipeline ``pipeline_id`` (``GET /projects/:id/pipelines/:pipeline_id/jobs``, retried jobs
        left out as GitLab does by default; docs.gitlab.com/api/jobs/#list-pipeline-jobs), at most ``limit``
        (1..``MAX_JOBS``), 100 per page. ``NotFound`` when the project has no such pipeline."""
        if not 1 <= limit <= MAX_JOBS:
            raise IntegrationError(SYSTEM, f"pipeline_jobs: limit {limit} is not within 1..{MAX_JOBS}")
        out: list[PipelineJob] = []
        with map_exceptions(_ERRORS, f"jobs of pipeline {pipeline_id}"):
            pipeline = self.project.pipelines.get(pipeline_id, lazy=True)
            for job in pipeline.jobs.list(iterator=True, per_page=min(limit, 100)):
                out.append(PipelineJob.model_validate(job.asdict()))
                if len(out) >= limit:
                    break
        return out


def _iso(dt: datetime, up: bool = False) -> str:
    """ISO 8601 in UTC to the second, as GitLab's ``since``/``until`` take it (``YYYY-MM-DDTHH:MM:SSZ``); a
    fraction of a second is dropped, or with ``up`` rounded up (an inclusive ``until`` then misses nothing)."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    if up and dt.microsecond:
        dt = dt.replace(microsecond=0) + timedelta(seconds=1)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def check(settings: GitLabSettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s gitlab line: ``GET /user`` (URL, token; the user must be
    FIXLOOP_GITLAB_BOT_USERNAME, whose approvals never count), then ``GET /projects/:id`` (the project exists and
    the token sees it); each request bounded by ``timeout`` seconds."""
    target = str(settings.url).rstrip("/")
    client = GitLabClient(bounded(settings, timeout))
    try:
        user = client.check()
    except IntegrationError as e:
        return failed("gitlab", target, e, hint(e, {AuthError: "FIXLOOP_GITLAB_TOKEN"}, "FIXLOOP_GITLAB_URL"))
    if user.username != settings.bot_username:
        return CheckResult(
            Status.FAIL,
            "gitlab",
            f"{target}: the token is {user.username}'s but FIXLOOP_GITLAB_BOT_USERNAME is {settings.bot_username}: "
            "fixloop's own approvals would count as a human's (check FIXLOOP_GITLAB_BOT_USERNAME)",
        )
    try:
        branch = client.default_branch()
    except IntegrationError as e:
        hints = {NotFound: "FIXLOOP_GITLAB_PROJECT", AuthError: "the token's access to FIXLOOP_GITLAB_PROJECT"}
        return failed("gitlab", target, e, hint(e, hints, "FIXLOOP_GITLAB_URL"))
    return CheckResult(
        Status.OK, "gitlab", f"{target} as {user.username}, project {settings.project} (default branch {branch})"
    )
