"""The approval gate's decision, from facts read from the GitLab API (never from a webhook's claims). Pure: no I/O.

The facts (``MergeRequestState``) are what ``gitlab.merge_request_state`` read from GitLab REST v4:
``GET /projects/:id/merge_requests/:iid`` (``state``, ``sha`` the source branch head, ``merge_commit_sha`` /
``squash_commit_sha``, ``author``), ``GET /projects/:id/merge_requests/:iid/approvals`` (``approved_by[].user.{id,
username}``; read between two reads of the head, so the list belongs to that head), and ``GET /projects/:id/approvals``
(``reset_approvals_on_push``; docs.gitlab.com/api/merge_request_approvals/). The policy (``ApproverPolicy``) is the
worker's ``GitLabSettings``: whose approvals never count (the bot), whether the merge request's author's do, and who
may approve (a list of usernames and/or a group, checked with ``GET /groups/:id/members/all/:user_id``).

GitLab gives no SHA per approval. With ``reset_approvals_on_push`` on, GitLab removes every approval when the source
branch moves, so an approval listed together with head ``H`` was given at ``H``. When it is off (or the setting could
not be read: CE answers 404), ``observe`` binds approvals by observation instead: an approver counts for head ``H`` only
if the loop first saw their approval listed while the head was already ``H``; an approver listed before the head moved
stays bound to the older head (they must unapprove and approve again). Never less safe than the reset: a binding the
loop cannot be sure of is ``None`` and never counts.

``gate`` answers whether the loop may proceed: the merge request is merged and at least one approval counts (a human:
not the bot, not the author unless the policy says so, allowed by the policy, for exactly the merged head).
``decider_refusal`` checks the human behind a ``decide`` update the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MAX_APPROVALS = 200  # approvers kept per read (GitLab lists each approver once; more is no real merge request)


class MrState(StrEnum):
    """GitLab's MR ``state`` values (GitLab API v4, Merge requests)."""

    OPENED = "opened"
    MERGED = "merged"
    CLOSED = "closed"
    LOCKED = "locked"


class Approval(BaseModel):
    """One approval: who (GitLab ``username`` and ``user_id``), for which head SHA, when; ``bot`` if by fixloop's own
    user; ``allowed`` whether the approver passes the policy's allow list / group (None: the policy has none, or
    not checked). A webhook's claim has no ``user_id`` (it never counts: only API reads decide)."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(max_length=255)
    sha: str = Field(max_length=64)
    at: AwareDatetime | None = None
    bot: bool = False
    user_id: int | None = None
    allowed: bool | None = None


class ApproverPolicy(BaseModel):
    """Whose approvals count (from ``GitLabSettings``): never ``bot_username``'s; the merge request author's only with
    ``author_approvals_count``; with ``restricted`` (``FIXLOOP_GITLAB_APPROVERS`` or ``FIXLOOP_GITLAB_APPROVER_GROUP``
    set) only those users', as the activity found them (``Approval.allowed``). Small by construction: the lists
    themselves stay in the worker's settings."""

    model_config = ConfigDict(extra="forbid")

    bot_username: str = Field(default="fixloop-bot", max_length=255)
    author_approvals_count: bool = False
    restricted: bool = False


class MergeRequestState(BaseModel):
    """A merge request as read from the GitLab API (see the module docstring): ``head_sha`` the source branch head
    (once merged: the head that was merged), ``merge_sha`` the commit the target branch got (merge commit, else squash
    commit, else the head: fast-forward), ``approvals`` bound to ``head_sha``, the author, the project's
    ``reset_approvals_on_push`` (None: unknown) and the worker's policy."""

    model_config = ConfigDict(extra="forbid")

    state: MrState
    head_sha: str
    merge_sha: str | None = None
    merged_at: datetime | None = None
    approvals: list[Approval] = Field(default_factory=list, max_length=MAX_APPROVALS)
    author_id: int | None = None
    author: str | None = None
    reset_approvals_on_push: bool | None = None
    policy: ApproverPolicy = Field(default_factory=ApproverPolicy)


class GateVerdict(BaseModel):
    """``passed``: merged, and ``counted`` (usernames) is not empty; ``closed``: closed without merging (``locked``
    is GitLab's transient state while it merges: the gate reads again);
    ``refused``: ``(username, reason)`` of the approvals that do not count."""

    passed: bool = False
    closed: bool = False
    counted: list[str] = Field(default_factory=list)
    refused: list[tuple[str, str]] = Field(default_factory=list)


def observe(seen: Mapping[str, str | None], previous_head: str, now: MergeRequestState) -> dict[str, str | None]:
    """The approvals' bindings by observation after the read ``now``: ``{user id: the head the loop first saw the
    approval listed at}``, or None when it cannot know (the approval appeared while the head moved). ``seen`` is the
    binding after the previous read, ``previous_head`` that read's head (before the first read: the head the merge
    request was opened with). An approver no longer listed is dropped (a later approval is bound anew)."""
    out: dict[str, str | None] = {}
    for a in now.approvals:
        if a.user_id is None:
            continue
        key = str(a.user_id)
        if key in seen:
            out[key] = seen[key]  # listed since an earlier read: bound to the head it was first seen at
        else:
            out[key] = now.head_sha if now.head_sha == previous_head else None
    return out


def refusal(a: Approval, s: MergeRequestState, seen: Mapping[str, str | None]) -> str | None:
    """Why approval ``a`` of ``s`` does not count, or None when it does."""
    p = s.policy
    if a.user_id is None:
        return "no GitLab user id (not read from the API)"
    if a.bot or a.by == p.bot_username:
        return "fixloop's own user"
    if not p.author_approvals_count:
        if s.author_id is None:
            return "the merge request's author is unknown"
        if a.user_id == s.author_id:
            return "the merge request's author"
    if p.restricted and a.allowed is not True:
        return "not an allowed approver"
    if a.sha != s.head_sha:
        return f"approved {a.sha[:12]}, not the head {s.head_sha[:12]}"
    if s.reset_approvals_on_push is not True and seen.get(str(a.user_id)) != s.head_sha:
        return f"listed since before the head moved to {s.head_sha[:12]} (approvals are not reset on push)"
    return None


def gate(s: MergeRequestState, seen: Mapping[str, str | None]) -> GateVerdict:
    """The gate's verdict on ``s`` (read from the API) with the bindings ``seen`` (``observe``)."""
    if s.state is MrState.CLOSED:
        return GateVerdict(closed=True)
    counted: list[str] = []
    refused: list[tuple[str, str]] = []
    for a in s.approvals:
        why = refusal(a, s, seen)
        if why is None:
            counted.append(a.by)
        else:
            refused.append((a.by, why))
    passed = s.state is MrState.MERGED and bool(s.merge_sha) and bool(counted)
    return GateVerdict(passed=passed, counted=sorted(set(counted)), refused=refused)


class UserFacts(BaseModel):
    """A GitLab user as read from the API (``GET /users?username=``, ``GET /users/:id``): None ``user_id`` when there
    is no such user; ``state`` (``active``, ``blocked``, ``deactivated``, ...); ``bot`` (GitLab's flag, or the token's
    own user); ``allowed`` as in ``Approval``; and the worker's policy."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=255)
    user_id: int | None = None
    state: str | None = None
    bot: bool = False
    allowed: bool | None = None
    policy: ApproverPolicy = Field(default_factory=ApproverPolicy)


def decider_refusal(u: UserFacts) -> str | None:
    """Why the human a ``decide`` update names may not decide, or None: a real, active, allowed human, not the bot."""
    if u.user_id is None:
        return f"GitLab has no user {u.username!r}"
    if u.state != "active":
        return f"GitLab user {u.username!r} is {u.state or 'not active'}"
    if u.bot or u.username == u.policy.bot_username:
        return f"{u.username!r} is a bot"
    if u.policy.restricted and u.allowed is not True:
        return f"{u.username!r} is not an allowed approver"
    return None
