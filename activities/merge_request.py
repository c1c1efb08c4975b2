"""Merge-request activities (on GitLab): open (or update) the merge request of a planned change, read its state
(the only source of the approval gate's facts: a webhook only wakes the loop, which then reads), comment on it, delete
the branch of a closed one, open the revert merge request of a failed deploy, and check the GitLab user a ``decide``
names: ``MergeRequestActivities`` on ``fixloop.integrations.gitlab.api.GitLabClient``; the inputs and outputs are
``fixloop.workflows.contracts.merge_request``'s.

Every write is idempotent: ``gitlab.open_merge_request`` uses the branch ``fixloop/<work-item-id>`` and reuses its
open MR, or the MR it opened itself whatever its state: the description begins with the loop's hidden marker
``<!-- fixloop:loop=<workflow id> run=<run id> -->`` (``fixloop.integrations.gitlab.api.loop_marker``), so a retry
after the worker died with the MR opened, and a person merged or closed it meanwhile, returns that MR instead of
opening a second one (GitLab removed the merged branch: the retry must not make it again); ``gitlab.note`` carries a
dedup key; ``gitlab.delete_branch`` of a deleted branch is a no-op;
``gitlab.open_revert_merge_request`` uses the branch ``fixloop/revert/<work-item-id>/<merge-sha[:12]>`` and finds
its own revert commit there. ``gitlab.merge_request_state`` and ``gitlab.check_user`` only read.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from fixloop.activities.errors import as_application_errors
from fixloop.core.change.edit import apply
from fixloop.core.change.mr import advisory, code, read_back, text, title_line
from fixloop.core.change.ops import PolicyViolation, RevertCommit
from fixloop.core.change.overlap import FileLines, Touched, diff_lines, edit_lines, overlap
from fixloop.core.change.policy import POLICY_FILE, load_policy, validate
from fixloop.core.change.remedy import remedy_change, revert_change
from fixloop.core.gate import MAX_APPROVALS, Approval, ApproverPolicy, MergeRequestState, MrState, UserFacts
from fixloop.core.incidents import onset_of
from fixloop.core.markup import markdown_link
from fixloop.core.models import WorkItem, WorkItemKind
from fixloop.core.parsing import clean
from fixloop.integrations.errors import Conflict
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings, MergeRequestInfo, loop_marker
from fixloop.workflows.contracts.merge_request import (
    CheckUserInput,
    DeleteBranchInput,
    MergeRequestRef,
    MergeRequestStateInput,
    NoteInput,
    OpenMergeRequestInput,
    OpenRevertInput,
)

# Temporal activity names, unchanged since activities/gitlab.py (running histories and the worker's metrics name them):
OPEN_MERGE_REQUEST = "gitlab.open_merge_request"
MERGE_REQUEST_STATE = "gitlab.merge_request_state"
NOTE = "gitlab.note"
DELETE_BRANCH = "gitlab.delete_branch"
OPEN_REVERT_MERGE_REQUEST = "gitlab.open_revert_merge_request"
CHECK_USER = "gitlab.check_user"
BRANCH_PREFIX = "fixloop/"
REVERT_PREFIX = "fixloop/revert/"
OPEN_MRS_MAX = 100  # open fixloop MRs compared with a new plan (oldest first)
_JIRA_LINE = re.compile(r"^Jira: \[?([A-Z][A-Z0-9_]{0,30}-\d{1,9})\b", re.MULTILINE)


# --- the implementation ----------------------------------------------------------------------------------------


def commit_message(inp: OpenMergeRequestInput) -> str:
    """The commit message: the MR title, then the work item and the Jira key (trailers a reviewer can grep)."""
    title = clean(inp.change.title or f"fixloop: fix {inp.work_item.id}", 255)
    lines = [title, "", f"Fixloop-Work-Item: {inp.work_item.id}"]
    if inp.jira_key:
        lines.append(f"Refs: {clean(inp.jira_key, 40)}")
    return "\n".join(lines) + "\n"


def _merged_at(info: MergeRequestInfo) -> datetime | None:
    if not info.merged_at:
        return None
    try:
        return datetime.fromisoformat(info.merged_at.replace("Z", "+00:00"))
    except ValueError:
        return None


class MergeRequestActivities:
    """The merge request activities on the GitLab project of ``settings`` (the GitOps repository: the project is
    ``settings.project``, the input's ``scope`` does not choose it; ``merge_request_state`` reads the project its
    ``MergeRequestRef`` names); approvals by ``settings.bot_username`` or the token's own user are flagged ``bot`` (the
    gate never counts them)."""

    def __init__(self, settings: GitLabSettings) -> None:
        self.settings = settings
        self.client = GitLabClient(settings)
        self._clients: dict[str, GitLabClient] = {settings.project: self.client}
        self._bot: int | None = None

    def _client(self, project: str) -> GitLabClient:
        if project not in self._clients:
            self._clients[project] = GitLabClient(self.settings.model_copy(update={"project": project}))
        return self._clients[project]

    @activity.defn(name=OPEN_MERGE_REQUEST)
    async def open_merge_request(self, inp: OpenMergeRequestInput) -> MergeRequestRef:
        """Apply ``inp.change`` again at its ``base_sha`` (re-read, re-validated against the policy at that commit),
        commit it on the change's branch (created at ``base_sha``) and open or update the MR into the default branch.

        Idempotent: a second run finds the branch holding the contents (no commit) and the open MR (updated only
        where title, description or labels differ); a retry of the same loop (same workflow run) whose MR was merged
        or closed meanwhile returns that MR as it is, before touching the branch (the MR is found by its source
        branch in any state and the loop's marker at the start of its description). The change always applies at
        ``base_sha``: when the default branch changed the same lines since, the MR shows the conflict to the
        reviewer (GitLab's merge status), it is not rebased silently. Errors: a change that no longer validates, or
        a branch holding other contents than the planned base (an older plan's commit), -> non-retryable
        ``ApplicationError`` (``PolicyViolation``, ``Conflict``); integration errors -> ``ApplicationError``
        (non-retryable unless retryable).

        One MR per line: two open fixloop MRs never edit the same line (``fixloop.core.change.overlap``: a common path
        with a common touched line or removed line text, or a file whose diff GitLab does not show). Rules, which
        the oldest MR always survives:

        - joins: before anything is written, when this work item has no open MR yet and an open fixloop MR of
          another work item (branch ``fixloop/...``, not a revert; the ``OPEN_MRS_MAX`` oldest compared) changes
          a line this plan changes, nothing is committed or opened (a branch left by an earlier attempt is
          deleted) and the answer is that MR with ``joined`` True (the oldest such MR). A second report of the same
          finding (e.g. with a spoofed target and another fixed version) therefore never opens a competing MR.
        - yields: after opening, when an open fixloop MR with a lower ``iid`` changes one of its lines (two plans
          raced past the first check), this MR is closed, its branch deleted, and the answer is the older MR with
          ``joined`` True. The MR with the lower ``iid`` stays, so of two racing loops exactly one MR survives.
        - an MR of this work item that already exists is kept against younger ones (they yield to it).

        Superseding (closing an older MR for a newer plan) is never done: the older MR may already be approved."""
        change = inp.change
        if not change.located or not change.branch or not change.base_sha or not (change.changes or change.remedies):
            raise ApplicationError(
                "the planned change has no branch, base commit or operations", type="InvalidChange", non_retryable=True
            )
        with as_application_errors():
            return await asyncio.to_thread(self._open, inp, _marker())

    def _remedy_edits(self, inp: OpenMergeRequestInput, read: Callable[[str], str | None]) -> dict[str, str]:
        """An incident's typed operation applied again at the base commit (``fixloop.core.change.remedy``: checked
        against the policy there, the file values re-read; a revert recomputed from the commit, its parent and the
        base). A revert that would delete files is refused (not supported)."""
        (op,) = inp.change.remedies
        policy = load_policy(read(POLICY_FILE))
        onset = onset_of(inp.work_item)
        if isinstance(op, RevertCommit):
            if onset is None:
                raise PolicyViolation("a revert needs the incident's onset")
            parent = op.parents[(op.mainline or 1) - 1]
            remedy = revert_change(
                op,
                before=lambda p: self.client.read_file(p, parent),
                after=lambda p: self.client.read_file(p, op.sha),
                head=read,
                policy=policy,
                onset=onset,
            )
            if remedy.deleted:
                raise PolicyViolation(f"the revert deletes {', '.join(remedy.deleted[:5])}: not supported")
        else:
            remedy = remedy_change(op, read, policy, onset=onset)
        return remedy.edits

    def _open(self, inp: OpenMergeRequestInput, marker: str | None = None) -> MergeRequestRef:
        change = inp.change
        assert change.branch and change.base_sha
        gl = self.client
        mine = gl.find_marked_merge_request(change.branch, marker) if marker else None
        if mine is not None and mine.state != MrState.OPENED.value:  # this loop's, merged or closed since: kept
            return self._ref(mine, self.settings.project)
        cache: dict[str, str | None] = {}

        def read(path: str) -> str | None:
            if path not in cache:
                cache[path] = gl.read_file(path, change.base_sha or "")
            return cache[path]

        if change.remedies:
            edits = self._remedy_edits(inp, read)
        else:
            edits, _ = apply(change.changes, read)
            if not edits:
                raise PolicyViolation("the operations change no file at the base commit")
            validate(edits, read, load_policy(read(POLICY_FILE)))
        before = {path: read(path) for path in edits}
        touched = {path: edit_lines(before[path], content) for path, content in edits.items()}
        if gl.find_merge_request(change.branch) is None:
            older = self._overlapping(touched, change.branch)
            if older is not None:  # joins: no commit, no MR, no branch of this work item left
                gl.delete_branch(change.branch)
                return older
        gl.ensure_branch(change.branch, change.base_sha)
        commit = gl.commit_files(change.branch, dict(sorted(edits.items())), commit_message(inp), expected=before)
        default = gl.default_branch()
        title = clean(change.title or f"fixloop: fix {inp.work_item.id}", 255)
        mr = gl.find_or_create_merge_request(
            change.branch, default, title, change.description or "", change.labels or ["fixloop"], marker=marker
        )
        if mr.state != MrState.OPENED.value:  # merged or closed between the two reads above: kept as it is
            gl.delete_branch(change.branch)  # the branch ensured again above is not the merge request's any more
            return self._ref(mr, self.settings.project)
        older = self._overlapping(touched, change.branch, below_iid=mr.iid)
        if older is not None:  # yields: a racing loop opened an MR for the same lines first
            gl.close_merge_request(mr.iid)
            gl.delete_branch(change.branch)
            return older
        return MergeRequestRef(
            project=self.settings.project,
            iid=mr.iid,
            url=mr.web_url,
            branch=change.branch,
            head_sha=commit.sha,
            title=clean(mr.title, 255),
        )

    @activity.defn(name=MERGE_REQUEST_STATE)
    async def merge_request_state(self, inp: MergeRequestStateInput) -> MergeRequestState:
        """The MR's state, head, author and approvals (user ids and usernames), each approval bound to the head SHA
        read together with it (see ``GitLabClient.approvals``); ``merge_sha`` once merged (merge commit, else squash
        commit, else the head: fast-forward); the project's ``reset_approvals_on_push`` (None when GitLab does not
        say) and the worker's approver policy, with each approver's ``allowed`` (allow list, group membership).
        The gate decides from this (``fixloop.core.gate.gate``). A head that moves while reading is a retryable
        ``ApplicationError`` (``HeadMoved``)."""
        with as_application_errors():
            return await asyncio.to_thread(self._state, inp)

    def _state(self, inp: MergeRequestStateInput) -> MergeRequestState:
        gl = self._client(inp.project)
        try:
            approvals = gl.approvals(inp.iid)
        except Conflict as e:
            raise ApplicationError(clean(e.message, 300), type="HeadMoved") from e
        info = gl.get_merge_request(inp.iid)
        if info.sha != approvals.sha or not info.sha:
            raise ApplicationError(f"!{inp.iid}: the head moved while reading; read again", type="HeadMoved")
        try:
            state = MrState(info.state)
        except ValueError:
            raise ApplicationError(
                f"!{inp.iid}: unknown merge request state {clean(info.state, 40)!r}", type="Invalid", non_retryable=True
            ) from None
        merge_sha = (info.merged_commit_sha or info.sha) if state is MrState.MERGED else None
        config = gl.approval_settings()
        bot_id = self._bot_id()
        return MergeRequestState(
            state=state,
            head_sha=info.sha,
            merge_sha=merge_sha,
            merged_at=_merged_at(info),
            approvals=[
                Approval(
                    by=a.username,
                    sha=info.sha,
                    user_id=a.id,
                    bot=a.username == self.settings.bot_username or a.id == bot_id,
                    allowed=self._allowed(gl, a.id, a.username),
                )
                for a in approvals.approvers[:MAX_APPROVALS]
            ],
            author_id=info.author_id,
            author=info.author_username or None,
            reset_approvals_on_push=config.reset_approvals_on_push,
            policy=self.policy(),
        )

    def policy(self) -> ApproverPolicy:
        """The approval policy of this worker's settings (``fixloop.core.gate``)."""
        s = self.settings
        return ApproverPolicy(
            bot_username=s.bot_username,
            author_approvals_count=s.author_approvals_count,
            restricted=bool(s.approvers or s.approver_group),
        )

    def _bot_id(self) -> int | None:
        """The token's own user id (``GET /user``, once): its approvals are the bot's whatever its username."""
        if self._bot is None:
            self._bot = self.client.check().id
        return self._bot

    def _allowed(self, gl: GitLabClient, user_id: int, username: str) -> bool | None:
        """Whether the policy allows ``username`` to approve: in ``approvers``, or a member of ``approver_group``;
        None when the policy restricts nobody."""
        s = self.settings
        if not s.approvers and not s.approver_group:
            return None
        if username in s.approvers:
            return True
        return bool(s.approver_group) and gl.is_group_member(s.approver_group or "", user_id)

    @activity.defn(name=CHECK_USER)
    async def check_user(self, inp: CheckUserInput) -> UserFacts:
        """The GitLab user ``inp.username`` as GitLab knows it (exists, state, bot flag, allowed by the policy), for
        the gate's check of a ``decide`` update (``fixloop.core.gate.decider_refusal``)."""
        with as_application_errors():
            return await asyncio.to_thread(self._user, inp.username)

    def _user(self, username: str) -> UserFacts:
        user = self.client.find_user(username)
        if user is None:
            return UserFacts(username=username, policy=self.policy())
        return UserFacts(
            username=user.username,
            user_id=user.id,
            state=user.state,
            bot=user.bot or user.id == self._bot_id(),
            allowed=self._allowed(self.client, user.id, user.username),
            policy=self.policy(),
        )

    @activity.defn(name=NOTE)
    async def note(self, inp: NoteInput) -> None:
        """Comment ``inp.body`` on the merge request, once per ``inp.dedup_key``."""
        with as_application_errors():
            await asyncio.to_thread(self._client(inp.project).add_note, inp.iid, inp.body, inp.dedup_key)

    @activity.defn(name=DELETE_BRANCH)
    async def delete_branch(self, inp: DeleteBranchInput) -> bool:
        """Delete the branch of a merge request closed without merging (no orphan branch); False when it was
        already gone. Merged branches are removed by GitLab itself (fixloop opens MRs with
        ``remove_source_branch``)."""
        with as_application_errors():
            return await asyncio.to_thread(self._client(inp.project).delete_branch, inp.branch)

    @activity.defn(name=OPEN_REVERT_MERGE_REQUEST)
    async def open_revert_merge_request(self, inp: OpenRevertInput) -> MergeRequestRef:
        """Commit the revert of exactly ``inp.merge_sha`` (against its first parent), then of each of ``inp.also``, on
        ``fixloop/revert/<work-item-id>/<sha[:12]>``, branched from the head of the default branch, and open (or
        find) its merge request, titled as a rollback (``revert_title``: ``Revert "<original title>" — <why>``, the
        original's title read from GitLab when ``inp.original`` has none) with ``revert_description``; it goes
        through the same approval gate as any fixloop MR. Idempotent: the revert commit on the branch and the open MR
        are found again, and the loop's own revert MR (its marker) merged or closed meanwhile is returned as it is.
        A revert GitLab cannot apply (a later commit changed the same lines) is a non-retryable ``ApplicationError``
        naming the commit."""
        with as_application_errors():
            return await asyncio.to_thread(self._revert, inp, _marker())

    def _revert(self, inp: OpenRevertInput, marker: str | None = None) -> MergeRequestRef:
        gl = self._client(inp.original.project)
        branch = revert_branch(inp.work_item.id, inp.merge_sha)
        mine = gl.find_marked_merge_request(branch, marker) if marker else None
        if mine is not None and mine.state != MrState.OPENED.value:  # this loop's revert, merged or closed since
            return self._ref(mine, inp.original.project)
        default = gl.default_branch()
        gl.ensure_branch(branch, default)
        commit = gl.revert_commit(inp.merge_sha, branch)
        for sha in inp.also:  # newest first: each revert applies on top of the previous one
            commit = gl.revert_commit(sha, branch)
        original = inp.original.title or gl.get_merge_request(inp.original.iid).title
        title = revert_title(original, inp.original.iid, inp.why)
        mr = gl.find_or_create_merge_request(
            branch, default, title, revert_description(inp), REVERT_LABELS, marker=marker
        )
        return MergeRequestRef(
            project=inp.original.project,
            iid=mr.iid,
            url=mr.web_url,
            branch=branch,
            head_sha=mr.sha or commit.sha,
            title=clean(mr.title, 255),
        )

    @staticmethod
    def _ref(mr: MergeRequestInfo, project: str) -> MergeRequestRef:
        """The ref of an MR found as it is (its head as GitLab last had it: at the merge, for a merged one)."""
        return MergeRequestRef(
            project=project,
            iid=mr.iid,
            url=mr.web_url,
            branch=mr.source_branch,
            head_sha=mr.sha or "",
            title=clean(mr.title, 255),
        )

    def _overlapping(self, touched: Touched, own_branch: str, below_iid: int | None = None) -> MergeRequestRef | None:
        """The oldest open fixloop MR (not ``own_branch``, not a revert; ``iid`` below ``below_iid`` when given)
        that changes a line ``touched`` changes, as a ``joined`` ref; None when there is none."""
        gl = self.client
        for mr in gl.open_merge_requests(BRANCH_PREFIX, OPEN_MRS_MAX):
            if mr.source_branch == own_branch or mr.source_branch.startswith(REVERT_PREFIX):
                continue
            if below_iid is not None and mr.iid >= below_iid:
                continue
            theirs: Touched = {}
            for d in gl.merge_request_diffs(mr.iid):
                lines = diff_lines(d.diff) if d.complete else FileLines(whole=True)
                for path in {d.old_path, d.new_path}:
                    theirs[path] = lines
            paths = overlap(touched, theirs)
            if not paths:
                continue
            block = read_back(mr.description) if mr.description else None
            work_item = block.get("work_item") if block else None
            key = _JIRA_LINE.search(mr.description or "")
            return MergeRequestRef(
                project=self.settings.project,
                iid=mr.iid,
                url=mr.web_url,
                branch=mr.source_branch,
                head_sha=mr.sha or "",
                joined=True,
                work_item_id=clean(work_item, 200) if isinstance(work_item, str) else None,
                jira_key=key.group(1) if key else None,
                overlap=paths[:20],
            )
        return None


REVERT_LABELS = ["fixloop", "fixloop::revert"]


def _marker() -> str | None:
    """The marker of the loop this activity runs for (``loop_marker`` of its workflow id and run), which the MR's
    description begins with; None outside an activity (no marker: only open MRs are found again)."""
    if not activity.in_activity():
        return None
    info = activity.info()
    return loop_marker(info.workflow_id, info.workflow_run_id)


def revert_branch(work_item_id: str, merge_sha: str) -> str:
    """``fixloop/revert/<work-item-id>/<merge-sha[:12]>``: one revert branch per work item and merge commit."""
    return f"{BRANCH_PREFIX}revert/{work_item_id}/{merge_sha[:12]}"


REVERT_TITLE_MAX = 120  # characters of a revert's title (GitLab allows 255: this one stays readable in a list)
REVERT_WHY_MAX = 70  # characters of the why at its end


def revert_title(original: str | None, iid: int, why: str) -> str:
    """The revert MR's title, a rollback as GitLab's own revert names it: ``Revert "<original title>" — <why>``
    (``why`` one short line, at most ``REVERT_WHY_MAX`` characters), at most ``REVERT_TITLE_MAX`` characters: the
    original title is cut (with an ellipsis) to fit; ``Revert !<iid> — <why>`` without one. Both parts escaped as
    an MR title (``fixloop.core.change.mr.title_line``)."""
    tail = f" \u2014 {title_line(why, REVERT_WHY_MAX)}" if why.strip() else ""
    if not original or not original.strip():
        return f"Revert !{iid}{tail}"
    room = REVERT_TITLE_MAX - len('Revert ""') - len(tail) - 1
    name = title_line(original, room)
    if name[-1:] in ("@", "#", "!", "~", "%", "$", "&"):  # before the closing quote it would start a reference
        name += "\u200b"
    return f'Revert "{name}"{tail}'


def _reopens(item: WorkItem) -> list[str]:
    """What a revert of the work item's fix re-opens: its advisories (linked when well-formed) and package bumps."""
    lines = [
        f"- {code(p.package, 100)} back from {code(p.fixed_version, 64)} to {code(p.installed_version or '?', 64)}"
        + (f" ({', '.join(advisory(a) for a in p.advisories[:10])})" if p.advisories else "")
        for p in item.packages[:30]
    ]
    shown = {a for p in item.packages[:30] for a in p.advisories[:10]}
    rest = [a for a in item.advisories if a not in shown]
    if rest:
        more = f" and {len(rest) - 40} more" if len(rest) > 40 else ""
        lines.append(f"- advisories: {', '.join(advisory(a) for a in rest[:40])}{more}")
    return lines


def revert_description(inp: OpenRevertInput) -> str:
    """The revert MR's description: a rollback of the original (linked) and why, the failed verdict (each metric
    before -> after with its unit, the evidence), what the revert re-opens (the work item's advisories and package
    bumps come back; an incident: the remediation is undone), what it undoes, the Jira key; every external value
    escaped (``fixloop.core.change.mr``)."""
    original = markdown_link(f"!{inp.original.iid}", inp.original.url)
    item = inp.work_item
    lines = [
        f"**Rollback** of {original}: {text(inp.why, 200)}.",
        "",
        f"fixloop reverts merge commit {code(inp.merge_sha)} of {original} (work item {code(item.id)}, "
        f"{text(item.title, 200)}): {text(inp.reason)}",
        "",
        *(
            [f"It also reverts {', '.join(code(sha) for sha in inp.also)}: the source change behind that tag.", ""]
            if inp.also
            else []
        ),
        "### Failed verdict",
        *[f"- {text(m, 300)}" for m in inp.metrics[:20]],
        *([""] if inp.metrics else []),
        "#### Evidence",
        *[f"- {text(e)}" for e in inp.evidence[:50]],
        "",
        "### What the revert re-opens",
    ]
    reopened = _reopens(item)
    if reopened:
        lines += [f"Merging this brings back what {original} fixed:", *reopened]
    elif item.kind is WorkItemKind.INCIDENT:
        lines.append(f"The remediation of the incident ({text(item.title, 200)}) is undone: its alerts may fire again.")
    else:
        lines.append(f"The change {original} made for {text(item.title, 200)} is undone.")
    lines.append("")
    if inp.undoes:
        lines += ["### What it undoes", *[f"- {text(op, 300)}" for op in inp.undoes[:20]], ""]
    if inp.jira_key:
        lines += [f"Jira: {code(inp.jira_key, 40)}", ""]
    lines.append("_Approve and merge to roll back; fixloop then waits for Flux to apply the revert._")
    return "\n".join(lines) + "\n"
