"""The GitLab stand-in against the real ``python-gitlab`` library, the system ``git`` and fixloop's GitLabClient, over
HTTP; its responses and webhook compared with recorded real ones (``tests/fixtures/recorded/gitlab``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gitlab
import httpx
import pytest
from gitlab.exceptions import GitlabAuthenticationError, GitlabError

from fixloop.integrations.errors import AuthError, Conflict, NotFound, TransportError
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from tests.sandbox.fidelity import assert_same_shape, recorded

PROJECT = "platform/gitops"
FILE = "apps/staging/kustomization.yaml"


def api(run: Any, who: str = "bot") -> gitlab.Gitlab:
    token = getattr(run.sb.credentials, f"gitlab_{who}_token").get_secret_value()
    return gitlab.Gitlab(url=run.service("/gitlab"), private_token=token, timeout=10)


def client(run: Any, token: str | None = None, project: str = PROJECT, url: str | None = None) -> GitLabClient:
    token = token or run.sb.credentials.gitlab_bot_token.get_secret_value()
    return GitLabClient(GitLabSettings(url=url or run.service("/gitlab"), token=token, project=project, timeout=10))


def change(project: Any, branch: str, path: str = FILE, suffix: str = "# fixloop\n", start: str = "main") -> str:
    """Commit ``path`` + ``suffix`` on ``branch`` (created from ``start``); returns the commit sha."""
    ref = branch if any(b.name == branch for b in project.branches.list(get_all=True)) else start
    text = project.files.raw(file_path=path, ref=ref).decode()
    data = {
        "branch": branch,
        "commit_message": f"edit {path}",
        "actions": [{"action": "update", "file_path": path, "content": text + suffix}],
    }
    if ref != branch:
        data["start_branch"] = start
    return project.commits.create(data).id


def open_mr(project: Any, branch: str, **extra: Any) -> Any:
    change(project, branch, suffix=f"# fixloop {branch}\n")
    return project.mergerequests.create(
        {"source_branch": branch, "target_branch": "main", "title": f"Fix {branch}", **extra}
    )


@pytest.fixture
def run(start_sandbox: Any) -> Any:
    return start_sandbox("/gitlab")


class Receiver:
    """A webhook endpoint in a thread, recording (headers, JSON body) of every POST."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.events.append((dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/gitlab"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, action: str, timeout: float = 5.0) -> tuple[dict[str, str], dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in list(self.events):
                if body["object_attributes"]["action"] == action:
                    return headers, body
            time.sleep(0.02)
        raise AssertionError(f"no {action!r} hook; got {[b['object_attributes']['action'] for _, b in self.events]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


# -- the contract path ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_branch_commit_mr_approve_merge_then_clone(run: Any, tmp_path: Path) -> None:
    pushes: list[dict[str, Any]] = []
    run.sb.bus.subscribe("git.push", pushes.append)
    bot, reviewer = api(run), api(run, "reviewer")
    bot.auth()
    assert bot.user.username == run.sb.credentials.gitlab_bot_username
    project = bot.projects.get(PROJECT)
    assert project.id == 1 and project.default_branch == "main"

    branch = project.branches.create({"branch": "fixloop/bump", "ref": "main"})
    assert branch.commit["id"] == project.branches.get("main").commit["id"]
    text = project.files.get(file_path=FILE, ref="main").decode().decode()
    commit = project.commits.create(
        {
            "branch": "fixloop/bump",
            "commit_message": "Bump catalog",
            "author_name": "fixloop",
            "author_email": "fixloop@example.com",
            "actions": [{"action": "update", "file_path": FILE, "content": text + "# bumped\n"}],
        }
    )
    assert commit.author_name == "fixloop" and commit.stats["additions"] == 1
    mr = project.mergerequests.create(
        {
            "source_branch": "fixloop/bump",
            "target_branch": "main",
            "title": "Bump catalog",
            "description": "why",
            "labels": "fixloop,security",
        }
    )
    assert (mr.iid, mr.state, mr.sha, mr.author["username"]) == (1, "opened", commit.id, "fixloop-bot")
    assert mr.detailed_merge_status == "not_approved" and mr.labels == ["fixloop", "security"]
    assert mr.diff_refs["head_sha"] == commit.id and mr.references["full"] == f"{PROJECT}!1"
    assert mr.web_url == run.service(f"/gitlab/{PROJECT}/-/merge_requests/1")
    changes = mr.changes()["changes"]
    assert [c["new_path"] for c in changes] == [FILE] and "+# bumped" in changes[0]["diff"]

    rmr = reviewer.projects.get(PROJECT, lazy=True).mergerequests.get(1)
    approval = rmr.approve(sha=commit.id)
    assert approval["approvals_left"] == 0 and approval["approved_by"][0]["user"]["username"] == "reviewer"
    rmr = reviewer.projects.get(PROJECT, lazy=True).mergerequests.get(1)
    assert rmr.detailed_merge_status == "mergeable"
    rmr.merge(sha=commit.id, should_remove_source_branch=True)
    assert rmr.state == "merged" and rmr.merged_by["username"] == "reviewer" and rmr.merged_at
    merge_sha = rmr.merge_commit_sha
    assert "fixloop/bump" not in [b.name for b in project.branches.list(get_all=True)]
    merged = {"project": PROJECT, "branch": "main", "before": branch.commit["id"], "after": merge_sha, "user_id": 3}
    assert merged in pushes  # pushed by the reviewer, who merged

    out = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", run.service(f"/gitlab/{PROJECT}.git"), str(out)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    head = subprocess.run(
        ["git", "-C", str(out), "log", "-1", "--format=%H %P"], check=True, capture_output=True, text=True
    ).stdout.split()
    assert head == [merge_sha, branch.commit["id"], commit.id]
    assert (out / FILE).read_text().endswith("# bumped\n")
    push = subprocess.run(
        ["git", "-C", str(out), "push", "origin", "HEAD:refs/heads/evil"], capture_output=True, timeout=30
    )
    assert push.returncode != 0  # read-only: no receive-pack


def test_duplicate_merge_request_is_409(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    open_mr(project, "fix/dup")
    with pytest.raises(GitlabError) as e:
        project.mergerequests.create({"source_branch": "fix/dup", "target_branch": "main", "title": "again"})
    assert e.value.response_code == 409
    assert json.loads(e.value.response_body) == {
        "message": ["Another open merge request already exists for this source branch: !1"]
    }


def test_author_cannot_approve_and_approval_is_once(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/self")
    with pytest.raises(GitlabAuthenticationError) as e:
        mr.approve()
    assert e.value.response_code == 401
    assert mr.approvals.get().approvals_left == 1
    rmr = api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid)
    rmr.approve()
    with pytest.raises(GitlabAuthenticationError):
        rmr.approve()
    state = rmr.approval_state.get()
    assert state.rules[0]["approved"] and [u["username"] for u in state.rules[0]["approved_by"]] == ["reviewer"]
    rmr.unapprove()
    assert project.mergerequests.get(mr.iid).approvals.get().approvals_left == 1


def test_push_after_approval_resets_approvals(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/push")
    rmr = api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid)
    rmr.approve(sha=mr.sha)
    assert project.mergerequests.get(mr.iid).detailed_merge_status == "mergeable"

    new = change(project, "fix/push", suffix="# second\n")
    after = project.mergerequests.get(mr.iid)
    approvals = after.approvals.get()
    assert after.sha == new and after.detailed_merge_status == "not_approved"
    assert (approvals.approvals_left, approvals.approved_by, approvals.approved) == (1, [], False)
    with pytest.raises(GitlabError) as e:
        after.merge()
    assert e.value.response_code == 405
    with pytest.raises(GitlabError) as e:
        rmr.approve(sha=mr.sha)  # the old head
    assert e.value.response_code == 409 and new in e.value.error_message


def test_merge_with_stale_sha_is_409(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/sha")
    api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid).approve()
    with pytest.raises(GitlabError) as e:
        mr.merge(sha="0" * 40)
    assert e.value.response_code == 409
    assert e.value.error_message == f"SHA does not match HEAD of source branch: {mr.sha}"
    assert project.mergerequests.get(mr.iid).state == "opened"
    mr.merge(sha=mr.sha)
    assert mr.state == "merged"


def test_conflicting_merge_requests(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    reviewer = api(run, "reviewer").projects.get(PROJECT, lazy=True)
    first, second = open_mr(project, "fix/a"), open_mr(project, "fix/b")  # both append a line to the same file
    for mr in (first, second):
        reviewer.mergerequests.get(mr.iid).approve()
    assert project.mergerequests.get(second.iid).has_conflicts is False
    first.merge()
    second = project.mergerequests.get(second.iid)
    assert (second.has_conflicts, second.merge_status, second.detailed_merge_status) == (
        True,
        "cannot_be_merged",
        "conflict",
    )
    with pytest.raises(GitlabError) as e:
        second.merge()
    assert (e.value.response_code, e.value.error_message) == (422, "Branch cannot be merged")


def test_mr_list_filters_update_notes_and_close(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/list", labels=["fixloop"])
    open_mr(project, "fix/other")
    assert [m.iid for m in project.mergerequests.list(state="opened", source_branch="fix/list")] == [mr.iid]
    assert [m.iid for m in project.mergerequests.list(labels=["fixloop"])] == [mr.iid]
    assert [m.iid for m in project.mergerequests.list(author_username="reviewer")] == []
    page = project.mergerequests.list(per_page=1, page=1, get_all=False, iterator=False)
    assert len(page) == 1
    everything = project.mergerequests.list(per_page=1, get_all=True)
    assert sorted(m.iid for m in everything) == [1, 2]

    edit = {"title": "Draft: new", "add_labels": "x", "remove_labels": "fixloop"}
    updated = project.mergerequests.update(mr.iid, edit)
    assert updated["draft"] and updated["detailed_merge_status"] == "draft_status" and updated["labels"] == ["x"]
    note = project.mergerequests.get(mr.iid, lazy=True).notes.create({"body": "hello"})
    assert note.body == "hello" and note.author["username"] == "fixloop-bot"
    assert [n.body for n in project.mergerequests.get(mr.iid, lazy=True).notes.list()] == ["hello"]
    closed = project.mergerequests.update(mr.iid, {"state_event": "close"})
    assert closed["state"] == "closed" and closed["detailed_merge_status"] == "not_open"
    assert project.mergerequests.update(mr.iid, {"state_event": "reopen"})["state"] == "opened"


def test_files_tree_compare_and_revert(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    f = project.files.create(
        {"file_path": "docs/new file.md", "branch": "main", "content": "one\n", "commit_message": "add"}
    )
    assert f.file_path == "docs/new file.md"
    got = project.files.get(file_path="docs/new file.md", ref="main")
    assert got.decode() == b"one\n" and got.last_commit_id == project.commits.list(ref_name="main")[0].id
    project.files.update("docs/new file.md", {"branch": "main", "content": "two\n", "commit_message": "edit"})
    tree = project.repository_tree(path="docs", ref="main", get_all=True)
    assert [(t["path"], t["type"]) for t in tree] == [("docs/new file.md", "blob")]
    assert any(t["path"] == "docs/new file.md" for t in project.repository_tree(recursive=True, get_all=True))
    commits = project.commits.list(ref_name="main", get_all=False)
    cmp = project.repository_compare(commits[2].id, commits[0].id)
    assert [c["title"] for c in cmp["commits"]] == ["add", "edit"] and cmp["diffs"][0]["new_file"]
    reverted = project.commits.get(commits[0].id, lazy=True).revert(branch="main")
    assert reverted["title"] == 'Revert "edit"'
    assert project.files.raw(file_path="docs/new file.md", ref="main") == b"one\n"
    project.files.delete(file_path="docs/new file.md", branch="main", commit_message="rm")
    with pytest.raises(gitlab.GitlabGetError) as e:
        project.files.get(file_path="docs/new file.md", ref="main")
    assert e.value.response_code == 404


# -- errors --------------------------------------------------------------------------------------------------------
def test_errors_have_gitlab_shape(run: Any) -> None:
    base = run.service("/gitlab/api/v4")
    token = {"PRIVATE-TOKEN": run.sb.credentials.gitlab_bot_token.get_secret_value()}
    no_auth = httpx.get(f"{base}/projects/1")
    assert (no_auth.status_code, no_auth.json()) == (401, {"message": "401 Unauthorized"})
    wrong = httpx.get(f"{base}/user", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()) == (401, {"message": "401 Unauthorized"})
    bearer = httpx.get(f"{base}/user", headers={"Authorization": f"Bearer {token['PRIVATE-TOKEN']}"})
    assert bearer.json()["username"] == "fixloop-bot"
    missing = httpx.post(f"{base}/projects/1/repository/branches", headers=token, json={"ref": "main"})
    assert (missing.status_code, missing.json()) == (400, {"error": "branch is missing"})
    unknown = httpx.get(f"{base}/projects/platform%2Fnope", headers=token)
    assert (unknown.status_code, unknown.json()) == (404, {"message": "404 Project Not Found"})
    route = httpx.get(f"{base}/nothing/here", headers=token)
    assert (route.status_code, route.json()) == (404, {"error": "404 Not Found"})
    evil = httpx.get(f"{base}/projects/1/repository/files/..%2F..%2Fetc%2Fpasswd?ref=main", headers=token)
    assert evil.status_code == 400 and "message" in evil.json()
    dup = httpx.post(f"{base}/projects/1/repository/branches", headers=token, json={"branch": "main", "ref": "main"})
    assert (dup.status_code, dup.json()) == (400, {"message": "Branch already exists"})


def test_restart_keeps_merge_requests(start_sandbox: Any, tmp_path: Path) -> None:
    first = start_sandbox("/gitlab", state_dir=tmp_path / "state")
    project = api(first).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/keep")
    api(first, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid).approve()
    second = start_sandbox("/gitlab", state_dir=tmp_path / "state")
    again = api(second).projects.get(PROJECT, lazy=True)
    kept = again.mergerequests.get(mr.iid)
    assert (kept.title, kept.sha, kept.detailed_merge_status) == ("Fix fix/keep", mr.sha, "mergeable")
    assert open_mr(again, "fix/next").iid == 2


# -- the client ----------------------------------------------------------------------------------------------------
def test_client_is_idempotent(run: Any) -> None:
    c = client(run)
    assert c.check().username == "fixloop-bot"
    main = c.branch_head("main")
    assert c.ensure_branch("fixloop/x", "main").created
    again = c.ensure_branch("fixloop/x", "main")
    assert (again.created, again.sha) == (False, main)

    old = c.read_file(FILE, "main")
    assert old is not None and c.read_file("no/such.yaml", "main") is None
    files = {FILE: old + "# pinned\n", "docs/why.md": "because\n"}
    first = c.commit_files("fixloop/x", files, "Pin", expected={FILE: old, "docs/why.md": None})
    second = c.commit_files("fixloop/x", files, "Pin", expected={FILE: old, "docs/why.md": None})
    assert first.created and not second.created and second.sha == first.sha == c.branch_head("fixloop/x")
    with pytest.raises(Conflict):
        c.commit_files("fixloop/x", {FILE: "other\n"}, "Pin", expected={FILE: old})
    fresh = c.commit_files("fixloop/y", {"docs/y.md": "y\n"}, "New branch")  # created from main by the commit
    assert fresh.created and c.read_file("docs/y.md", "fixloop/y") == "y\n"
    assert [t.path for t in c.tree("docs", "fixloop/x")] == ["docs/why.md"] and c.tree("nope", "main") == []

    mr = c.find_or_create_merge_request("fixloop/x", "main", "Pin", "body", ["fixloop", "security"])
    same = c.find_or_create_merge_request("fixloop/x", "main", "Pin", "body", ["security", "fixloop"])
    assert mr.created and not same.created and same.iid == mr.iid and same.sha == first.sha
    edited = c.find_or_create_merge_request("fixloop/x", "main", "Pin v2", "body 2", ["fixloop"])
    assert (edited.iid, edited.title, edited.description, edited.labels) == (mr.iid, "Pin v2", "body 2", ["fixloop"])
    assert len(api(run).projects.get(PROJECT, lazy=True).mergerequests.list(state="opened")) == 1

    n1, n2 = c.add_note(mr.iid, "Plan: pin", dedup_key="plan-1"), c.add_note(mr.iid, "Plan: pin", dedup_key="plan-1")
    assert n1.created and not n2.created and n1.id == n2.id

    assert c.approvals(mr.iid).approved_by == []
    api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid).approve(sha=first.sha)
    approvals = c.approvals(mr.iid)
    assert (approvals.sha, approvals.approved_by, approvals.approvals_left) == (first.sha, ["reviewer"], 0)
    assert approvals.human_approvers("fixloop-bot") == ["reviewer"]

    info = c.get_merge_request(mr.iid)
    assert (info.state, info.detailed_merge_status, info.author_username) == ("opened", "mergeable", "fixloop-bot")
    api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid).merge(sha=first.sha)
    merged = c.get_merge_request(mr.iid)
    assert merged.state == "merged" and merged.merged_commit_sha == c.branch_head("main")

    r1 = c.revert_commit(merged.merged_commit_sha, "main")
    r2 = c.revert_commit(merged.merged_commit_sha, "main")
    assert r1.created and not r2.created and r1.sha == r2.sha
    assert c.read_file(FILE, "main") == old and c.read_file("docs/why.md", "main") is None


def test_client_errors(run: Any) -> None:
    with pytest.raises(AuthError) as e:
        client(run, token="glpat-wrong").check()
    assert e.value.status == 401 and "glpat-wrong" not in str(e.value)
    with pytest.raises(NotFound) as e:
        client(run, project="platform/nope").get_merge_request(1)
    assert e.value.status == 404
    with pytest.raises(NotFound):
        client(run, project="platform/nope").read_file(FILE, "main")
    with pytest.raises(NotFound):
        client(run).get_merge_request(99)
    sock_url = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(TransportError) as t:
        client(run, url=sock_url).check()
    assert t.value.retryable


# -- webhooks ------------------------------------------------------------------------------------------------------
def test_merge_request_webhooks(start_sandbox: Any, receiver: Receiver) -> None:
    run = start_sandbox("/gitlab", gitlab_webhook_url=receiver.url)
    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/hook", labels="fixloop")
    headers, opened = receiver.wait_for("open")
    assert headers["X-Gitlab-Event"] == "Merge Request Hook" and headers["Content-Type"] == "application/json"
    assert headers["X-Gitlab-Token"] == run.sb.credentials.gitlab_webhook_token.get_secret_value()
    assert headers["X-Gitlab-Event-UUID"] and headers["X-Gitlab-Webhook-UUID"]
    assert opened["object_attributes"]["last_commit"]["id"] == mr.sha
    assert [label["title"] for label in opened["labels"]] == ["fixloop"]

    api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid).approve()
    headers, approved = receiver.wait_for("approved")
    assert approved["user"]["username"] == "reviewer" and approved["object_attributes"]["iid"] == mr.iid
    assert headers["X-Gitlab-Token"] == run.sb.credentials.gitlab_webhook_token.get_secret_value()

    new = change(project, "fix/hook", suffix="# again\n")
    _, pushed = receiver.wait_for("update")
    assert pushed["object_attributes"]["oldrev"] == mr.sha and pushed["object_attributes"]["last_commit"]["id"] == new
    project.mergerequests.update(mr.iid, {"state_event": "close"})
    _, closed = receiver.wait_for("close")
    assert closed["changes"]["state_id"] == {"previous": 1, "current": 2}
    deliveries = run.sb.store("gitlab").data["hook_deliveries"]
    deadline = time.monotonic() + 5
    while any(d["status"] is None for d in deliveries) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(d["action"], d["status"]) for d in deliveries] == [
        ("open", 200),
        ("approved", 200),
        ("update", 200),
        ("close", 200),
    ]


def test_webhook_failure_never_fails_the_api(start_sandbox: Any) -> None:
    run = start_sandbox("/gitlab", gitlab_webhook_url="http://127.0.0.1:9/hooks")
    mr = open_mr(api(run).projects.get(PROJECT, lazy=True), "fix/nohook")
    assert mr.state == "opened"
    deliveries = run.sb.store("gitlab").data["hook_deliveries"]
    deadline = time.monotonic() + 5
    while deliveries[-1]["error"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert deliveries[-1]["status"] is None and deliveries[-1]["error"] == "ConnectError"


# -- fidelity ------------------------------------------------------------------------------------------------------
NO_CI = {"milestone", "pipeline", "head_pipeline", "latest_build_started_at", "latest_build_finished_at"}


def test_fidelity_rest(run: Any) -> None:
    base = run.service("/gitlab/api/v4/projects/1")
    h = {"PRIVATE-TOKEN": run.sb.credentials.gitlab_bot_token.get_secret_value()}
    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/shape", assignee_ids=[3], reviewer_ids=[3], labels="fixloop")

    real = recorded("gitlab", "go-gitlab_get_merge_request.json")
    ours = httpx.get(f"{base}/merge_requests/{mr.iid}", headers=h).json()
    assert_same_shape(real, ours, only=[k for k in real if k not in NO_CI])
    for key in ("author", "assignee", "diff_refs", "time_stats", "user"):
        assert_same_shape(real[key], ours[key])
    assert set(ours["references"]) == {"short", "relative", "full"}

    reals = recorded("gitlab", "go-gitlab_get_merge_requests.json")
    ours_list = httpx.get(f"{base}/merge_requests", headers=h).json()
    assert_same_shape(reals[0], ours_list[0], only=[k for k in reals[0] if k not in NO_CI])

    assert_same_shape(
        recorded("gitlab", "go-gitlab_list_merge_request_diff.json"),
        httpx.get(f"{base}/merge_requests/{mr.iid}/diffs", headers=h).json(),
    )
    assert_same_shape(
        recorded("gitlab", "go-gitlab_get_branch.json"), httpx.get(f"{base}/repository/branches/main", headers=h).json()
    )
    real_commit = recorded("gitlab", "go-gitlab_get_commit.json")
    ours_commit = httpx.get(f"{base}/repository/commits/{mr.sha}", headers=h).json()
    assert_same_shape(real_commit, ours_commit, only=[k for k in real_commit if k not in ("last_pipeline", "status")])

    api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid).approve()
    assert_same_shape(
        recorded("gitlab", "gitlab-docs_get_mr_approvals.json"),
        httpx.get(f"{base}/merge_requests/{mr.iid}/approvals", headers=h).json(),
    )
    draft = recorded("gitlab", "go-gitlab_create_draft_note.json")  # a draft note: only the keys a note shares
    note = httpx.post(f"{base}/merge_requests/{mr.iid}/notes", headers=h, json={"body": "hi"}).json()
    assert_same_shape(draft, note, only=[k for k in draft if k in note])


def test_fidelity_webhook(start_sandbox: Any, receiver: Receiver) -> None:
    run = start_sandbox("/gitlab", gitlab_webhook_url=receiver.url)
    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/hookshape", assignee_ids=[3], reviewer_ids=[3], labels="fixloop")
    project.mergerequests.update(mr.iid, {"title": "Edited", "labels": "fixloop,platform"})
    _, ours = receiver.wait_for("update")
    real = recorded("gitlab", "go-gitlab_webhook_merge_request.json")
    label_keys = [k for k in real["labels"][0] if k not in ("group_id", "description")]  # null: project label, empty
    assert_same_shape(real, ours, only=["object_kind", "event_type", "user", "project", "repository"])
    attrs = real["object_attributes"]
    human = {"human_total_time_spent", "human_time_change", "human_time_estimate"}  # null when no time is tracked
    assert_same_shape(attrs, ours["object_attributes"], only=[k for k in attrs if k not in human | {"labels"}])
    assert_same_shape(real["labels"][0], ours["labels"][0], only=label_keys)
    assert_same_shape(real["assignees"][0], ours["assignees"][0])
    assert ours["changes"]["title"] == {"previous": "Fix fix/hookshape", "current": "Edited"}
    assert [label["title"] for label in ours["changes"]["labels"]["current"]] == ["fixloop", "platform"]


# -- merge base (appended for the deploy stage's "applied a descendant" check) --------------------------------------
def test_merge_base_and_is_ancestor(run: Any) -> None:
    project = api(run).projects.get(PROJECT, lazy=True)
    first = change(project, "main", suffix="# one\n")
    project.branches.create({"branch": "fix/side", "ref": first})
    second = change(project, "main", suffix="# two\n")
    side = change(project, "fix/side", suffix="# side\n")
    # python-gitlab sends refs[]=a&refs[]=b; Grape also takes refs=a,b
    assert project.repository_merge_base([first, second])["id"] == first
    assert project.repository_merge_base([second, side])["id"] == first
    assert project.repository_merge_base(["main", "fix/side"])["id"] == first
    h = {"PRIVATE-TOKEN": run.sb.credentials.gitlab_bot_token.get_secret_value()}
    base = run.service("/gitlab/api/v4/projects/platform%2Fgitops/repository/merge_base")
    assert httpx.get(base, params={"refs": f"{second},{first}"}, headers=h).json()["id"] == first
    one = httpx.get(base, params={"refs[]": first}, headers=h)
    assert one.status_code == 400 and one.json() == {"message": "Provide at least 2 refs"}
    unknown = httpx.get(base, params={"refs[]": [first, "f" * 40, "nope"]}, headers=h)
    assert unknown.status_code == 400 and unknown.json() == {"message": f"Could not find refs: {'f' * 40}, nope"}

    gl = client(run)
    assert gl.is_ancestor(first, second) and gl.is_ancestor(first[:12], second) and gl.is_ancestor(second, second)
    assert not gl.is_ancestor(second, first), "a descendant is not an ancestor"
    assert not gl.is_ancestor(second, side), "a commit on another line of history"
    assert gl.is_ancestor(first, "fix/side") and not gl.is_ancestor(side, "main")
    assert not gl.is_ancestor("f" * 40, second), "a commit GitLab does not know"
    with pytest.raises(NotFound):
        client(run, project="nobody/nothing").is_ancestor(first, second)
    from fixloop.integrations.errors import IntegrationError

    with pytest.raises(IntegrationError, match="not a commit sha"):
        gl.is_ancestor("main", second)


# -- the gate's reads: approvals with user ids, the approval configuration, users, group members ---------------------
@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_the_gates_reads_through_the_client_in_gitlabs_shapes(run: Any) -> None:
    """What ``gitlab.merge_request_state`` and ``gitlab.check_user`` read (python-gitlab's own calls), answered in
    GitLab's documented shapes: the project's approval configuration, a single user (with ``bot``), a member of a
    group including inherited ones (404 for a non-member), and approvals with the approver's user id."""
    base = run.service("/gitlab/api/v4")
    h = {"PRIVATE-TOKEN": run.sb.credentials.gitlab_bot_token.get_secret_value()}
    assert_same_shape(
        recorded("gitlab", "gitlab-docs_get_project_approvals.json"),
        httpx.get(f"{base}/projects/{PROJECT.replace('/', '%2F')}/approvals", headers=h).json(),
    )
    user = httpx.get(f"{base}/users/3", headers=h).json()
    real_user = recorded("gitlab", "gitlab-docs_get_single_user.json")  # optional profile texts are null in ours
    unset = ("public_email", "pronouns", "local_time")
    assert_same_shape(real_user, user, only=[k for k in real_user if k not in unset])
    assert_same_shape(
        recorded("gitlab", "gitlab-docs_get_group_member_all.json"),
        httpx.get(f"{base}/groups/platform%2Freviewers/members/all/3", headers=h).json(),
    )

    gl = client(run)
    settings = gl.approval_settings()
    assert (settings.available, settings.reset_approvals_on_push, settings.merge_requests_author_approval) == (
        True,
        True,
        False,
    )
    reviewer = run.sb.credentials.gitlab_reviewer_username
    assert gl.is_group_member("platform/reviewers", 3) and gl.is_group_member("platform", 1)
    assert not gl.is_group_member("platform/reviewers", 1)  # root is no reviewer
    found = gl.find_user(reviewer)
    assert found is not None and (found.id, found.state, found.bot) == (3, "active", False)
    bot = gl.find_user(run.sb.credentials.gitlab_bot_username)
    assert bot is not None and bot.bot
    assert gl.find_user("nobody-here") is None

    project = api(run).projects.get(PROJECT, lazy=True)
    mr = open_mr(project, "fix/gate-reads")
    api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid).approve(sha=mr.sha)
    approvals = gl.approvals(mr.iid)
    assert [(a.id, a.username) for a in approvals.approvers] == [(3, reviewer)] and approvals.sha == mr.sha
    assert gl.get_merge_request(mr.iid).author_id == 2  # the bot opened it


# -- the commits that touched a path (an incident's culprit change) -------------------------------------------------
def test_commits_by_path_and_time_their_merge_requests_and_diff(start_sandbox: Any) -> None:
    """``path``/``since``/``until`` are applied on the real git history (``git log -- <path>``: the merge commit,
    which changes nothing against its branch parent, is not listed), and a commit's merge requests are those holding
    it; the answers have the shapes of recorded GitLab responses."""
    now = [datetime(2026, 11, 21, 9, 0, tzinfo=UTC)]
    run = start_sandbox("/gitlab", clock=lambda: now[0])
    bot = api(run).projects.get(PROJECT)  # seeded at 09:00
    now[0] += timedelta(minutes=5)  # the change at 09:05
    reviewer = api(run, "reviewer").projects.get(PROJECT, lazy=True)
    mr = open_mr(bot, "fix/culprit", assignee_ids=[3], reviewer_ids=[3])
    reviewer.mergerequests.get(mr.iid).approve(sha=mr.sha)
    merged = bot.mergerequests.get(mr.iid)
    merged.merge(sha=mr.sha)
    merge_sha = bot.mergerequests.get(mr.iid).merge_commit_sha
    other = change(bot, "other", path="apps/production/kustomization.yaml", suffix="# other\n")  # not merged
    gl = client(run)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)

    listed = gl.commits_touching(FILE, since=epoch)
    shas = [c.id for c in listed]
    assert shas[0] == mr.sha and merge_sha not in shas and other not in shas
    assert all(FILE in {d.new_path for d in gl.commit_diff(s)} for s in shas), "each listed commit changed the path"
    log = subprocess.run(
        ["git", "--git-dir", str(run.sb.repos.path(PROJECT)), "log", "--format=%H", "main", "--", FILE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shas == log, "as git log -- <path>"
    assert [c.id for c in gl.commits_touching("apps/staging/", since=epoch)][0] == mr.sha, "a directory"
    assert gl.commits_touching("apps/nothing-here", since=epoch) == []
    assert gl.commits_touching(FILE, since=listed[0].committed_date + timedelta(seconds=1)) == []
    assert [c.id for c in gl.commits_touching(FILE, since=epoch, until=listed[0].committed_date)] == shas
    assert mr.sha not in [c.id for c in gl.commits_touching(FILE, since=epoch, until=listed[-1].committed_date)]
    assert len(gl.commits_touching(FILE, since=epoch, limit=1)) == 1

    assert [m.iid for m in gl.commit_merge_requests(mr.sha)] == [mr.iid]
    assert [m.iid for m in gl.commit_merge_requests(merge_sha)] == [mr.iid], "its merge commit"
    assert gl.commit_merge_requests(shas[-1]) == [], "the seed commit came without a merge request"
    (diff,) = gl.commit_diff(mr.sha)
    assert diff.new_path == FILE and diff.complete and diff.diff.count("\n+") + diff.diff.startswith("+") == 1
    with pytest.raises(NotFound):
        gl.commit_merge_requests("0" * 40)

    base = run.service("/gitlab/api/v4/projects/1")
    h = {"PRIVATE-TOKEN": run.sb.credentials.gitlab_bot_token.get_secret_value()}
    assert_same_shape(
        recorded("gitlab", "renku-ui_list_repository_commits_path-readme.json"),
        httpx.get(f"{base}/repository/commits", params={"path": FILE, "ref_name": "main"}, headers=h).json(),
    )
    reals = recorded("gitlab", "go-gitlab_get_merge_requests.json")
    ours = httpx.get(f"{base}/repository/commits/{mr.sha}/merge_requests", headers=h).json()
    assert_same_shape(reals[0], ours[0], only=[k for k in reals[0] if k not in NO_CI])
    assert_same_shape(
        recorded("gitlab", "go-gitlab_list_merge_request_diff.json"),
        httpx.get(f"{base}/repository/commits/{mr.sha}/diff", headers=h).json(),
    )
    bad = httpx.get(f"{base}/repository/commits", params={"since": "yesterday"}, headers=h)
    assert (bad.status_code, bad.json()) == (400, {"error": "since is invalid"})
