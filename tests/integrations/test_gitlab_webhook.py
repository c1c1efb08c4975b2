"""GitLab merge request webhooks (``integrations/gitlab/webhook.py``): recorded real deliveries
(``tests/fixtures/recorded/gitlab``), malformed and hostile bodies, the token check, and every action the sandbox
GitLab delivers along a merge request's life (open, approval, push, merge, close), as the gateway would receive them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from fixloop.app.ingest import decode
from fixloop.core.gate import Approval
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.gitlab.webhook import (
    MAX_HOOK_BYTES,
    HookApproval,
    MergeRequestHook,
    MergeRequestHookError,
    WebhookSettings,
    parse_merge_request_hook,
    verify_token,
)
from tests.receiver import Receiver
from tests.sandbox.conftest import Running, start_sandbox  # noqa: F401  (the fixture)
from tests.sandbox.fidelity import RECORDED

GITLAB_DIR = RECORDED / "gitlab"
REAL = GITLAB_DIR / "go-gitlab_webhook_merge_request.json"
HEAD = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
PROJECT = "platform/gitops"


def real(**attrs: Any) -> dict[str, Any]:
    """The recorded delivery with ``object_attributes`` changed (``None`` removes a key)."""
    doc = json.loads(REAL.read_text())
    for key, value in attrs.items():
        if value is None:
            doc["object_attributes"].pop(key, None)
        else:
            doc["object_attributes"][key] = value
    return doc


def parse(doc: dict[str, Any]) -> MergeRequestHook:
    return parse_merge_request_hook(doc, "Merge Request Hook")


def decoded(raw: bytes | str) -> object:
    """A body decoded as the gateway decodes it once (``fixloop.app.ingest.decode``: orjson, nesting bounded)."""
    return decode(raw.encode() if isinstance(raw, str) else raw, "body")


# -- recorded deliveries ---------------------------------------------------------------------------------------------
def test_recorded_merge_request_hook() -> None:
    hook = parse_merge_request_hook(decoded(REAL.read_bytes()), "Merge Request Hook")
    assert (hook.action, hook.iid, hook.state, hook.project_path) == ("open", 1, "opened", "gitlabhq/gitlab-test")
    assert hook.user.username == "user1" and hook.project.id == 1 and hook.object_attributes.id == 99
    assert hook.head_sha == HEAD and hook.merge_sha is None and hook.labels == ["API"]
    assert (hook.object_attributes.source_branch, hook.object_attributes.target_branch) == ("ms-viewport", "master")
    assert hook.object_attributes.title == "MS-Viewport" and hook.object_attributes.detailed_merge_status == "mergeable"
    assert not (hook.pushed or hook.merged or hook.closed)
    assert hook.approval("fixloop-bot") is None, "an open is not an approval"
    assert parse_merge_request_hook(decoded(REAL.read_text()), "System Hook") == hook


def test_approval_actions_bind_the_approver_to_the_head() -> None:
    for action in ("approved", "approval"):
        hook = parse(real(action=action))
        approval = hook.approval("fixloop-bot")
        assert approval == HookApproval(by="user1", sha=HEAD, bot=False)
        # the mapping to the activities' model: same field names
        assert Approval(**approval.model_dump()) == Approval(by="user1", sha=HEAD, bot=False)
        assert hook.approval("User1") == HookApproval(by="user1", sha=HEAD, bot=True), "usernames ignore case"
    for action in ("unapproved", "unapproval", "update", "merge", "close", "reopen", "some_future_action"):
        assert parse(real(action=action)).approval("fixloop-bot") is None, action
    with pytest.raises(MergeRequestHookError, match="last_commit"):
        parse(real(action="approved", last_commit=None)).approval("fixloop-bot")


def test_push_merge_and_close() -> None:
    new = "a" * 40
    pushed = parse(real(action="update", oldrev=HEAD, last_commit={"id": new.upper()}))
    assert pushed.pushed and pushed.head_sha == new and pushed.object_attributes.oldrev == HEAD
    assert not parse(real(action="update")).pushed, "an update without oldrev (title, labels) moves no head"
    merged = parse(real(action="merge", state="merged", merge_commit_sha="b" * 40))
    assert merged.merged and merged.merge_sha == "b" * 40 and merged.state == "merged"
    assert parse(real(action="close", state="closed")).closed
    sha256 = "c" * 64  # a repository in the SHA-256 object format
    assert parse(real(last_commit={"id": sha256})).head_sha == sha256


def test_other_events_and_malformed_bodies_name_the_field() -> None:
    note = (GITLAB_DIR / "go-gitlab_webhook_note_merge_request.json").read_bytes()
    with pytest.raises(MergeRequestHookError, match="object_kind: 'note' is not 'merge_request'"):
        parse_merge_request_hook(decoded(note))
    with pytest.raises(MergeRequestHookError, match="X-Gitlab-Event: 'Note Hook'"):
        parse_merge_request_hook(decoded(REAL.read_bytes()), "Note Hook")

    def error(doc: object) -> str:
        with pytest.raises(MergeRequestHookError) as e:
            parse_merge_request_hook(doc)
        assert isinstance(e.value, ValueError)
        return str(e.value)

    for not_object in ([], "x", 7, None, b"{}"):
        assert error(not_object) == "body: not a JSON object"
    assert error(real(iid=None)) == "invalid or missing: object_attributes.iid"
    assert error(real(iid=0)) == "invalid or missing: object_attributes.iid"
    hostile = "x'; rm -rf / #"
    message = error(real(last_commit={"id": hostile}, merge_commit_sha="nope", source_branch="a b"))
    assert message == (
        "invalid or missing: object_attributes.last_commit.id, object_attributes.merge_commit_sha, "
        "object_attributes.source_branch"
    )
    assert hostile not in message
    doc = real()
    doc["user"]["username"] = "../../etc"
    doc["project"]["path_with_namespace"] = "x" * 2_000
    assert error(doc) == "invalid or missing: project.path_with_namespace, user.username"
    doc = real()
    del doc["user"]
    assert error(doc) == "invalid or missing: user"

    # display text is folded and cut, not refused
    long = real(title="T\x00" * 1_000)
    long["labels"] = [{"title": f"label-{i}"} for i in range(500)]
    hook = parse(long)
    assert len(hook.object_attributes.title) <= 255 and "\x00" not in hook.object_attributes.title
    assert len(hook.labels) == 100 and hook.labels[0] == "label-0"


def test_verify_token() -> None:
    secret = "whsec-" + "k" * 24
    assert verify_token(secret, secret) and verify_token(secret, SecretStr(secret))
    for header in (None, "", secret[:-1], secret + "x", secret.upper(), "x" * 5_000):
        assert not verify_token(header, secret), header
    for unset in (None, "", SecretStr("")):
        assert not verify_token("", unset) and not verify_token("anything", unset), "no secret accepts nothing"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIXLOOP_GITLAB_WEBHOOK_TOKEN", "whsec-abc")
    settings = WebhookSettings(_env_file=None)
    assert settings.token is not None and settings.token.get_secret_value() == "whsec-abc"
    assert "whsec-abc" not in repr(settings)


# -- what the sandbox GitLab delivers ----------------------------------------------------------------------------------
class GitLabReceiver(Receiver):
    """The gateway's stand-in: records (headers, raw body) of each delivery."""

    def __init__(self) -> None:
        super().__init__("/hooks/gitlab")

    def hooks(self, secret: SecretStr) -> list[MergeRequestHook]:
        """Every delivery as the gateway takes it: token checked, body parsed."""
        out = []
        for headers, body in list(self.requests):
            assert verify_token(headers.get("x-gitlab-token"), secret)
            assert not verify_token(headers.get("x-gitlab-token"), "another secret")
            assert len(body) <= MAX_HOOK_BYTES
            out.append(parse_merge_request_hook(decoded(body), headers.get("x-gitlab-event")))
        return out

    def wait_for(self, secret: SecretStr, match: Callable[[MergeRequestHook], bool]) -> MergeRequestHook:
        def found() -> list[MergeRequestHook]:
            return [h for h in self.hooks(secret) if match(h)]

        with self.cond:
            assert self.cond.wait_for(found, 5.0), [h.action for h in self.hooks(secret)]
        return found()[-1]


@pytest.fixture
def receiver() -> Iterator[GitLabReceiver]:
    r = GitLabReceiver()
    yield r
    r.close()


def test_sandbox_deliveries_along_a_merge_request(start_sandbox: Any, receiver: GitLabReceiver) -> None:  # noqa: F811
    run = start_sandbox("/gitlab", gitlab_webhook_url=receiver.url)
    creds = run.sb.credentials
    secret, bot_name = creds.gitlab_webhook_token, creds.gitlab_bot_username

    def client(token: SecretStr) -> GitLabClient:
        url = run.service("/gitlab")
        return GitLabClient(GitLabSettings(url=url, token=token, project=PROJECT, timeout=10))

    bot, reviewer = client(creds.gitlab_bot_token), client(creds.gitlab_reviewer_token)

    def open_mr(who: GitLabClient, branch: str) -> Any:
        who.ensure_branch(branch, "main")
        who.commit_files(branch, {"README.md": f"{branch}\n"}, f"change {branch}")
        return who.find_or_create_merge_request(branch, "main", f"Change {branch}", "test", ["fixloop"])

    mr = open_mr(bot, "fixloop/wi-1")
    opened = receiver.wait_for(secret, lambda h: h.action == "open" and h.iid == mr.iid)
    assert opened.user.username == bot_name and opened.head_sha == mr.sha and opened.project_path == PROJECT
    assert opened.labels == ["fixloop"] and opened.state == "opened" and opened.approval(bot_name) is None

    reviewer.project.mergerequests.get(mr.iid, lazy=True).approve(sha=mr.sha)
    approved = receiver.wait_for(secret, lambda h: h.action == "approved")
    assert approved.approval(bot_name) == HookApproval(by=creds.gitlab_reviewer_username, sha=mr.sha, bot=False)

    pushed_sha = bot.commit_files("fixloop/wi-1", {"README.md": "again\n"}, "push after approval").sha
    pushed = receiver.wait_for(secret, lambda h: h.pushed)
    assert pushed.object_attributes.oldrev == mr.sha and pushed.head_sha == pushed_sha
    assert bot.approvals(mr.iid).approved_by == [], "the push reset the approval the hook reported"

    handle = reviewer.project.mergerequests.get(mr.iid, lazy=True)
    handle.approve(sha=pushed_sha)
    handle.merge(sha=pushed_sha)
    merged = receiver.wait_for(secret, lambda h: h.merged)
    assert merged.merge_sha == bot.get_merge_request(mr.iid).merged_commit_sha and merged.state == "merged"
    assert merged.head_sha == pushed_sha

    # an approval by fixloop's own user (on a merge request a human opened) is flagged, and a close
    other = open_mr(reviewer, "human/change")
    bot.project.mergerequests.get(other.iid, lazy=True).approve(sha=other.sha)
    by_bot = receiver.wait_for(secret, lambda h: h.iid == other.iid and h.action == "approved")
    assert by_bot.approval(bot_name) == HookApproval(by=bot_name, sha=other.sha, bot=True)
    bot.project.mergerequests.get(other.iid, lazy=True).unapprove()
    assert receiver.wait_for(secret, lambda h: h.action == "unapproved").approval(bot_name) is None
    reviewer.project.mergerequests.update(other.iid, {"state_event": "close"})
    assert receiver.wait_for(secret, lambda h: h.closed).iid == other.iid

    # the sandbox's delivery log (recorded when each event is queued) holds exactly what the gateway parsed
    log = [(d["iid"], d["action"]) for d in run.sb.store("gitlab").data["hook_deliveries"]]
    assert log == [(h.iid, h.action) for h in receiver.hooks(secret)]
    assert [a for _, a in log] == ["open", "approved", "update", "approved", "merge", "open", "approved",
                                   "unapproved", "close"]  # fmt: skip
