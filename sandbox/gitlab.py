"""A GitLab stand-in on real git repositories: the REST API v4 subset fixloop and ``python-gitlab`` use, merge request
webhooks, and read-only ``git clone`` over smart HTTP, under ``/gitlab``.

``gitlab.Gitlab(url=f"{base}/gitlab", private_token=token)`` works unmodified (API at ``/gitlab/api/v4``), and
``git clone {base}/gitlab/<namespace>/<name>.git`` serves the bare repositories of ``sb.repos`` (upload-pack only:
nothing can be pushed over HTTP; every write goes through the API).

Served (GitLab REST v4 docs, docs.gitlab.com/api/): ``GET /version``, ``GET /user``, ``GET /users`` (``username``),
``GET /users/:id`` (with ``bot``); ``GET /groups/:id/members/all/:user_id`` (``GROUPS``: ``platform`` with every user,
``platform/reviewers`` with the reviewer only); ``GET /projects``, ``GET /projects/:id`` (numeric id or URL-encoded
``namespace%2Fname``), ``GET /projects/:id/approvals`` (the approval configuration: reset on push, no author
approval);
repository files (``GET|POST|PUT|DELETE .../repository/files/:file_path``, ``.../raw``), ``.../repository/tree``,
branches (list/get/create/delete), commits (create with ``actions``, list, get, ``diff``, ``revert``),
``.../repository/compare``, ``.../repository/merge_base``; merge requests (create/list/get/update, ``changes``,
``diffs``, ``commits``, notes, ``approvals``, ``approval_state``, ``approve``, ``unapprove``, ``merge``). Lists
page as GitLab does (``page``, ``per_page`` up to 100; ``X-Total``, ``X-Total-Pages``, ``X-Page``, ``X-Per-Page``,
``X-Next-Page``, ``X-Prev-Page`` and a ``Link`` header). Parameters are read from the query string and from a JSON or
form body.

Users: root (id 1, no token), the bot (id 2, ``sb.credentials.gitlab_bot_*``) and a reviewer (id 3,
``gitlab_reviewer_*``); ``PRIVATE-TOKEN`` or ``Authorization: Bearer``, else 401 ``{"message": "401 Unauthorized"}``.

Merge requests follow GitLab (Premium) defaults: one approval required, the author may not approve (401 as the
approval service refuses), approvals reset on push (an approval counts only for the head SHA it was given at), merge
method "merge commit". ``merge`` answers 405 when the MR is not open, a draft or not approved, 422 "Branch cannot be
merged" on a conflict, 409 when ``sha`` is not the head. Creating a second open MR for a source branch answers 409
``{"message": ["Another open merge request already exists for this source branch: !N"]}``.

Every ref update publishes ``"git.push"`` on ``sb.bus``. With ``sb.config.gitlab_webhook_url`` set, merge request
events (``open``, ``update`` incl. pushes with ``oldrev``, ``approval``/``approved``, ``unapproval``/``unapproved``,
``merge``, ``close``, ``reopen``) are POSTed as GitLab's "Merge Request Hook" from a background thread; each delivery
is recorded under ``hook_deliveries`` in ``sb.store("gitlab")`` (state of projects, MRs, notes and approvals too).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import httpx
from a2wsgi import WSGIMiddleware
from dulwich.server import FileSystemBackend
from dulwich.web import GunzipFilter, HTTPGitApplication, LimitedInputFilter
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from fixloop.sandbox.app import Sandbox
from fixloop.sandbox.repos import Action, CommitInfo, FileDiff, Person, RepoError, as_dict

log = logging.getLogger(__name__)

PREFIX = "/gitlab"
API = "/api/v4"
GITOPS = "platform/gitops"
APPROVALS_REQUIRED = 1
VERSION = "17.11.0-ee"
DRAFT_RE = re.compile(r"^\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|draft\s|\[wip\]|wip:|wip\s)", re.I)
MAX_DELIVERIES = 200
# groups and their members (user id -> access level; GitLab's 10 guest .. 50 owner)
GROUPS: dict[str, dict[str, Any]] = {
    "platform": {"id": 101, "members": {1: 50, 2: 30, 3: 40}},
    "platform/reviewers": {"id": 150, "members": {3: 40}},
}


class ApiError(Exception):
    """An error answer in GitLab's shape: ``{"message": ...}`` (or ``{"error": ...}`` for parameter errors)."""

    def __init__(self, status: int, message: Any, key: str = "message") -> None:
        super().__init__(status)
        self.status, self.message, self.key = status, message, key


def ts(dt: datetime) -> str:
    """GitLab's REST timestamp: ``2019-07-11T22:34:43.500Z``."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def hook_ts(iso: str | None) -> str | None:
    """GitLab's webhook timestamp: ``2013-12-03 17:23:34 UTC``."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC") if iso else None


def commit_ts(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def as_list(value: Any) -> list[str]:
    """Labels and similar: a JSON list or GitLab's comma-separated string."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def require(params: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if params.get(n) in (None, "")]
    if missing:
        raise ApiError(400, ", ".join(f"{n} is missing" for n in missing), key="error")


def as_int(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} is invalid", key="error") from None


def paginate(request: Request, items: list[Any], params: dict[str, Any]) -> JSONResponse:
    """One page of ``items`` with GitLab's pagination headers."""
    per_page = min(max(as_int(params.get("per_page"), "per_page", 20), 1), 100)
    page = max(as_int(params.get("page"), "page", 1), 1)
    total = len(items)
    pages = max((total + per_page - 1) // per_page, 1)
    body = items[(page - 1) * per_page : page * per_page]
    headers = {
        "X-Total": str(total),
        "X-Total-Pages": str(pages),
        "X-Per-Page": str(per_page),
        "X-Page": str(page),
        "X-Next-Page": str(page + 1) if page < pages else "",
        "X-Prev-Page": str(page - 1) if page > 1 else "",
    }

    def link(p: int, rel: str) -> str:
        return f'<{request.url.include_query_params(page=p, per_page=per_page)}>; rel="{rel}"'

    links = [link(page + 1, "next")] if page < pages else []
    links += [link(page - 1, "prev")] if page > 1 else []
    links += [link(1, "first"), link(pages, "last")]
    headers["Link"] = ", ".join(links)
    return JSONResponse(body, headers=headers)


async def read_params(request: Request) -> dict[str, Any]:
    """The request's parameters as Grape merges them: the query string, then a JSON or form body."""
    out: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        out[key.removesuffix("[]")] = values if key.endswith("[]") else values[-1]
    body = await request.body()
    if body:
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                data = json.loads(body)
            except ValueError:
                raise ApiError(400, "400 Bad request - body is not valid JSON", key="error") from None
            if not isinstance(data, dict):
                raise ApiError(400, "400 Bad request - body must be a JSON object", key="error")
            out.update(data)
        elif "x-www-form-urlencoded" in ctype:
            for key, value in parse_qsl(body.decode(errors="replace"), keep_blank_values=True):
                if key.endswith("[]"):
                    out.setdefault(key[:-2], []).append(value)
                else:
                    out[key] = value
    return out


class GitLab:
    """The stand-in's state and rules; the routes in ``build`` only parse, call and render."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.repos = sb.repos
        self.store = sb.store("gitlab")
        creds = sb.credentials
        self.users: dict[int, dict[str, Any]] = {
            1: {"id": 1, "username": "root", "name": "Administrator", "email": "admin@example.com", "token": None},
            2: {
                "id": 2,
                "username": creds.gitlab_bot_username,
                "name": "fixloop bot",
                "email": f"{creds.gitlab_bot_username}@example.com",
                "token": creds.gitlab_bot_token.get_secret_value(),
                "bot": True,
            },
            3: {
                "id": 3,
                "username": creds.gitlab_reviewer_username,
                "name": "Riley Reviewer",
                "email": f"{creds.gitlab_reviewer_username}@example.com",
                "token": creds.gitlab_reviewer_token.get_secret_value(),
            },
        }
        self._hooks: queue.Queue[tuple[dict[str, Any], dict[str, Any]]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        with self.store.lock:
            d = self.store.data
            d.setdefault("projects", {})
            d.setdefault("mrs", {})
            d.setdefault("notes", {})
            d.setdefault("labels", {})
            d.setdefault("counters", {"project": 0, "mr": 0, "note": 0, "label": 0})
            d.setdefault("hook_deliveries", [])
            d.setdefault("webhook_uuid", str(uuid.uuid4()))
            if not self.repos.exists(GITOPS):
                from fixloop.sandbox.seed import seed_gitops

                try:
                    seed_gitops(self.repos, sb.clock())
                except NotImplementedError:
                    self.repos.create(GITOPS)
            if not any(p["path_with_namespace"] == GITOPS for p in d["projects"].values()):
                self.add_project(GITOPS, "GitOps repository of the sandbox cluster (Flux, Kustomize).")
            self.store.save()

    # -- users --------------------------------------------------------------------------------------------------
    def authenticate(self, request: Request) -> dict[str, Any]:
        token = request.headers.get("private-token")
        auth = request.headers.get("authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        for user in self.users.values():
            if token and user["token"] and secrets_equal(token, user["token"]):
                return user
        raise ApiError(401, "401 Unauthorized")

    def user_basic(self, uid: int | None) -> dict[str, Any] | None:
        if uid is None or uid not in self.users:
            return None
        u = self.users[uid]
        return {
            "id": u["id"],
            "username": u["username"],
            "name": u["name"],
            "state": "active",
            "locked": False,
            "avatar_url": avatar(u["email"]),
            "web_url": self.sb.url(PREFIX, f"/{u['username']}"),
        }

    def user_full(self, uid: int) -> dict[str, Any]:
        u = self.users[uid]
        return self.user_basic(uid) | {
            "created_at": "2024-01-01T00:00:00.000Z",
            "bio": "",
            "bot": bool(u.get("bot")),
            "public_email": None,
            "email": u["email"],
            "is_admin": uid == 1,
            "two_factor_enabled": False,
            "can_create_project": True,
        }

    def user_public(self, uid: int) -> dict[str, Any]:
        """``GET /users/:id`` as a regular user sees it (no email, with ``bot``)."""
        u = self.users[uid]
        return self.user_basic(uid) | {
            "created_at": "2024-01-01T00:00:00.000Z",
            "bio": "",
            "bot": bool(u.get("bot")),
            "location": None,
            "public_email": None,
            "linkedin": "",
            "twitter": "",
            "discord": "",
            "github": "",
            "website_url": "",
            "organization": "",
            "job_title": "",
            "pronouns": None,
            "work_information": None,
            "followers": 0,
            "following": 0,
            "local_time": None,
            "is_followed": False,
        }

    def group_member(self, ref: str, uid: str) -> dict[str, Any]:
        """``GET /groups/:id/members/all/:user_id``: the member with ``access_level``, else 404."""
        ref = unquote(ref)
        group = next((g for path, g in GROUPS.items() if ref in (path, str(g["id"]))), None)
        if group is None:
            raise ApiError(404, "404 Group Not Found")
        member = as_int(uid, "user_id", 0)
        if member not in group["members"] or member not in self.users:
            raise ApiError(404, "404 Member Not Found")
        return self.user_basic(member) | {
            "access_level": group["members"][member],
            "created_at": "2024-01-01T00:00:00.000Z",
            "expires_at": None,
            "email": self.users[member]["email"],
            "group_saml_identity": None,
        }

    def hook_user(self, uid: int) -> dict[str, Any]:
        u = self.users[uid]
        return {
            "id": uid,
            "name": u["name"],
            "username": u["username"],
            "avatar_url": avatar(u["email"]),
            "email": "[REDACTED]",
        }

    # -- projects -----------------------------------------------------------------------------------------------
    def add_project(self, path: str, description: str = "") -> dict[str, Any]:
        """Register the existing repository ``path`` as a project (tests add more repositories this way)."""
        with self.store.lock:
            c = self.store.data["counters"]
            c["project"] += 1
            p = {
                "id": c["project"],
                "path_with_namespace": path,
                "description": description,
                "created_at": ts(self.sb.clock()),
                "next_iid": 1,
            }
            self.store.data["projects"][str(p["id"])] = p
            self.store.data["mrs"][str(p["id"])] = {}
            self.store.save()
            return p

    def project(self, ref: str) -> dict[str, Any]:
        ref = unquote(ref)
        for p in self.store.data["projects"].values():
            if str(p["id"]) == ref or p["path_with_namespace"] == ref:
                return p
        raise ApiError(404, "404 Project Not Found")

    def project_json(self, p: dict[str, Any]) -> dict[str, Any]:
        path = p["path_with_namespace"]
        ns, name = path.rsplit("/", 1)
        web = self.sb.url(PREFIX, f"/{path}")
        branches = self.repos.branches(path)
        return {
            "id": p["id"],
            "description": p["description"],
            "name": name,
            "name_with_namespace": f"{ns} / {name}",
            "path": name,
            "path_with_namespace": path,
            "created_at": p["created_at"],
            "default_branch": self.repos.default_branch(path),
            "tag_list": [],
            "topics": [],
            "ssh_url_to_repo": f"git@sandbox.local:{path}.git",
            "http_url_to_repo": f"{web}.git",
            "web_url": web,
            "readme_url": None,
            "avatar_url": None,
            "forks_count": 0,
            "star_count": 0,
            "last_activity_at": p["created_at"],
            "namespace": {
                "id": 100 + p["id"],
                "name": ns,
                "path": ns,
                "kind": "group",
                "full_path": ns,
                "parent_id": None,
                "avatar_url": None,
                "web_url": self.sb.url(PREFIX, f"/groups/{ns}"),
            },
            "visibility": "public",
            "empty_repo": not branches,
            "archived": False,
            "merge_method": "merge",
            "squash_option": "default_off",
            "only_allow_merge_if_pipeline_succeeds": False,
            "remove_source_branch_after_merge": True,
            "merge_requests_enabled": True,
            "approvals_before_merge": APPROVALS_REQUIRED,
            "_links": {
                "self": self.sb.url(PREFIX, f"{API}/projects/{p['id']}"),
                "merge_requests": self.sb.url(PREFIX, f"{API}/projects/{p['id']}/merge_requests"),
                "repo_branches": self.sb.url(PREFIX, f"{API}/projects/{p['id']}/repository/branches"),
            },
        }

    def hook_project(self, p: dict[str, Any]) -> dict[str, Any]:
        path = p["path_with_namespace"]
        ns, name = path.rsplit("/", 1)
        web = self.sb.url(PREFIX, f"/{path}")
        return {
            "id": p["id"],
            "name": name,
            "description": p["description"],
            "web_url": web,
            "avatar_url": None,
            "git_ssh_url": f"git@sandbox.local:{path}.git",
            "git_http_url": f"{web}.git",
            "namespace": ns,
            "visibility_level": 20,
            "path_with_namespace": path,
            "default_branch": self.repos.default_branch(path),
            "ci_config_path": None,
            "homepage": web,
            "url": f"{web}.git",
            "ssh_url": f"git@sandbox.local:{path}.git",
            "http_url": f"{web}.git",
        }

    # -- commits and branches -----------------------------------------------------------------------------------
    def commit_json(self, p: dict[str, Any], c: CommitInfo, stats: bool = False) -> dict[str, Any]:
        out = as_dict(c)
        out["authored_date"] = commit_ts(c.authored_date)
        out["committed_date"] = commit_ts(c.committed_date)
        out["created_at"] = out["committed_date"]
        out["trailers"] = {}
        out["extended_trailers"] = {}
        out["web_url"] = self.sb.url(PREFIX, f"/{p['path_with_namespace']}/-/commit/{c.id}")
        if stats:
            path = p["path_with_namespace"]
            diffs = self.repos.diff(path, c.parent_ids[0], c.id) if c.parent_ids else []
            add = sum(d.diff.count("\n+") + d.diff.startswith("+") for d in diffs)
            rem = sum(d.diff.count("\n-") + d.diff.startswith("-") for d in diffs)
            out |= {
                "stats": {"additions": add, "deletions": rem, "total": add + rem},
                "status": None,
                "project_id": p["id"],
                "last_pipeline": None,
            }
        return out

    def branch_json(self, p: dict[str, Any], name: str, sha: str) -> dict[str, Any]:
        path = p["path_with_namespace"]
        default = self.repos.default_branch(path)
        heads = self.repos.branches(path)
        merged = name != default and default in heads and self.repos.is_ancestor(path, sha, heads[default])
        return {
            "name": name,
            "merged": merged,
            "protected": name == default,
            "default": name == default,
            "developers_can_push": name != default,
            "developers_can_merge": True,
            "can_push": name != default,
            "web_url": self.sb.url(PREFIX, f"/{path}/-/tree/{quote(name)}"),
            "commit": self.commit_json(p, self.repos.commit_info(path, sha)),
        }

    def pushed(self, p: dict[str, Any], branch: str, before: str | None, after: str | None, uid: int) -> None:
        """After every ref update: tell the bus, and reset approvals of open MRs whose source branch moved
        ("reset approvals on push"), each with an ``update`` hook carrying ``oldrev``."""
        path = p["path_with_namespace"]
        self.sb.bus.publish(
            "git.push", {"project": path, "branch": branch, "before": before, "after": after or "0" * 40}
        )
        if after is None:
            return
        with self.store.lock:
            for mr in self.store.data["mrs"][str(p["id"])].values():
                if mr["state"] == "opened" and mr["source_branch"] == branch and mr["sha"] != after:
                    old = mr["sha"]
                    mr["sha"] = after
                    mr["approvals"] = []
                    mr["updated_at"] = ts(self.sb.clock())
                    self.emit(p, mr, "update", uid, oldrev=old)
            self.store.save()

    def commit(
        self, p: dict[str, Any], user: dict[str, Any], params: dict[str, Any], actions: list[Action]
    ) -> CommitInfo:
        path = p["path_with_namespace"]
        branch = str(params["branch"])
        before = self.repos.branches(path).get(branch)
        author = Person(
            name=str(params.get("author_name") or user["name"]), email=str(params.get("author_email") or user["email"])
        )
        info = self.repos.commit(
            path,
            branch,
            actions,
            str(params.get("commit_message") or ""),
            author,
            self.sb.clock(),
            start_branch=params.get("start_branch") or None,
            start_sha=params.get("start_sha") or None,
        )
        self.pushed(p, branch, before, info.id, user["id"])
        return info

    def last_commit_id(self, path: str, ref: str, file_path: str) -> str:
        """The newest commit reachable from ``ref`` that changed ``file_path`` (bounded walk)."""
        blob = self.repos.blob_id(path, ref, file_path)
        commits = self.repos.log(path, ref, limit=500)
        for c in commits:
            parent = c.parent_ids[0] if c.parent_ids else None
            if parent is None or self.repos.blob_id(path, parent, file_path) != blob:
                return c.id
        return commits[-1].id

    # -- merge requests -----------------------------------------------------------------------------------------
    def mrs(self, p: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return self.store.data["mrs"][str(p["id"])]

    def mr(self, p: dict[str, Any], iid: str) -> dict[str, Any]:
        mr = self.mrs(p).get(str(as_int(iid, "merge_request_iid", 0)))
        if mr is None:
            raise ApiError(404, "404 Not found")
        return mr

    def head(self, p: dict[str, Any], mr: dict[str, Any]) -> str:
        if mr["state"] == "opened":
            return self.repos.branches(p["path_with_namespace"]).get(mr["source_branch"], mr["sha"])
        return mr["sha"]

    def approvers(self, p: dict[str, Any], mr: dict[str, Any]) -> list[int]:
        """Who approved the current head (an approval given at an older head does not count)."""
        head = self.head(p, mr)
        return [a["user_id"] for a in mr["approvals"] if a["sha"] == head]

    def status(self, p: dict[str, Any], mr: dict[str, Any]) -> dict[str, Any]:
        """``has_conflicts``, ``merge_status``, ``detailed_merge_status``, ``approvals_left``, ``diff_refs``."""
        path = p["path_with_namespace"]
        left = max(APPROVALS_REQUIRED - len(self.approvers(p, mr)), 0)
        if mr["state"] != "opened":
            return {
                "has_conflicts": False,
                "merge_status": "can_be_merged" if mr["state"] == "merged" else mr.get("merge_status", "unchecked"),
                "detailed_merge_status": "not_open",
                "approvals_left": left,
                "diff_refs": mr.get("diff_refs"),
            }
        heads = self.repos.branches(path)
        src, dst = mr["source_branch"], mr["target_branch"]
        if src not in heads or dst not in heads:
            conflicts, merge_status, detailed, refs = False, "cannot_be_merged", "broken_status", None
        else:
            conflicts = not self.repos.can_merge(path, src, dst)
            merge_status = "cannot_be_merged" if conflicts else "can_be_merged"
            if mr["draft"]:
                detailed = "draft_status"
            elif conflicts:
                detailed = "conflict"
            elif left:
                detailed = "not_approved"
            else:
                detailed = "mergeable"
            base = self.repos.merge_base(path, heads[dst], heads[src]) or heads[dst]
            refs = {"base_sha": base, "head_sha": heads[src], "start_sha": heads[dst]}
        mr["merge_status"] = merge_status
        return {
            "has_conflicts": conflicts,
            "merge_status": merge_status,
            "detailed_merge_status": detailed,
            "approvals_left": left,
            "diff_refs": refs,
        }

    def diffs(self, p: dict[str, Any], mr: dict[str, Any], refs: dict[str, str] | None = None) -> list[FileDiff]:
        refs = refs or self.status(p, mr)["diff_refs"]
        if not refs:
            return []
        return self.repos.diff(p["path_with_namespace"], refs["base_sha"], refs["head_sha"])

    @staticmethod
    def mr_head(p: dict[str, Any], mr: dict[str, Any]) -> dict[str, Any]:
        """The fields every merge request representation starts with (the MR object, its approvals)."""
        return {
            "id": mr["id"],
            "iid": mr["iid"],
            "project_id": p["id"],
            "title": mr["title"],
            "description": mr["description"],
            "state": mr["state"],
            "created_at": mr["created_at"],
            "updated_at": mr["updated_at"],
        }

    def mr_json(self, p: dict[str, Any], mr: dict[str, Any], viewer: int | None = None) -> dict[str, Any]:
        st = self.status(p, mr)
        path = p["path_with_namespace"]
        assignees = [self.user_basic(u) for u in mr["assignee_ids"]]
        notes = [n for n in self.store.data["notes"].get(f"{p['id']}/{mr['iid']}", []) if not n["system"]]
        merged_by = self.user_basic(mr.get("merged_by_id"))
        return {
            **self.mr_head(p, mr),
            "merged_by": merged_by,
            "merge_user": merged_by,
            "merged_at": mr.get("merged_at"),
            "closed_by": self.user_basic(mr.get("closed_by_id")),
            "closed_at": mr.get("closed_at"),
            "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"],
            "user_notes_count": len(notes),
            "upvotes": 0,
            "downvotes": 0,
            "author": self.user_basic(mr["author_id"]),
            "assignee": assignees[0] if assignees else None,
            "assignees": assignees,
            "reviewers": [self.user_basic(u) for u in mr["reviewer_ids"]],
            "source_project_id": p["id"],
            "target_project_id": p["id"],
            "labels": list(mr["labels"]),
            "draft": mr["draft"],
            "work_in_progress": mr["draft"],
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "merge_status": st["merge_status"],
            "detailed_merge_status": st["detailed_merge_status"],
            "merge_after": None,
            "sha": self.head(p, mr),
            "merge_commit_sha": mr.get("merge_commit_sha"),
            "squash_commit_sha": mr.get("squash_commit_sha"),
            "discussion_locked": None,
            "should_remove_source_branch": mr.get("should_remove_source_branch"),
            "force_remove_source_branch": mr["force_remove_source_branch"],
            "prepared_at": mr["created_at"],
            "reference": f"!{mr['iid']}",
            "references": {"short": f"!{mr['iid']}", "relative": f"!{mr['iid']}", "full": f"{path}!{mr['iid']}"},
            "web_url": self.sb.url(PREFIX, f"/{path}/-/merge_requests/{mr['iid']}"),
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": None,
                "human_total_time_spent": None,
            },
            "squash": mr["squash"],
            "squash_on_merge": mr["squash"],
            "task_completion_status": {"count": 0, "completed_count": 0},
            "has_conflicts": st["has_conflicts"],
            "blocking_discussions_resolved": True,
            "approvals_before_merge": APPROVALS_REQUIRED,
            "subscribed": False,
            "changes_count": str(len(self.diffs(p, mr, st["diff_refs"]))) if st["diff_refs"] else None,
            "latest_build_started_at": None,
            "latest_build_finished_at": None,
            "first_deployed_to_production_at": None,
            "pipeline": None,
            "head_pipeline": None,
            "diff_refs": st["diff_refs"],
            "merge_error": None,
            "user": {"can_merge": viewer is not None and mr["state"] == "opened"},
            "first_contribution": False,
            "imported": False,
            "imported_from": "none",
        }

    def approvals_json(self, p: dict[str, Any], mr: dict[str, Any], viewer: int) -> dict[str, Any]:
        approved = self.approvers(p, mr)
        left = max(APPROVALS_REQUIRED - len(approved), 0)
        rule = {"id": 1, "name": "All Members", "rule_type": "any_approver"}
        return {
            **self.mr_head(p, mr),
            "merge_status": self.status(p, mr)["merge_status"],
            "approved": left == 0,
            "approvals_required": APPROVALS_REQUIRED,
            "approvals_left": left,
            "require_password_to_approve": False,
            "approved_by": [{"user": self.user_basic(u)} for u in approved],
            "suggested_approvers": [],
            "approvers": [],
            "approver_groups": [],
            "user_has_approved": viewer in approved,
            "user_can_approve": mr["state"] == "opened" and viewer != mr["author_id"] and viewer not in approved,
            "approval_rules_left": [] if left == 0 else [rule],
            "has_approval_rules": True,
            "merge_request_approvers_available": True,
            "multiple_approval_rules_available": True,
            "invalid_approvers_rules": [],
        }

    def approval_state_json(self, p: dict[str, Any], mr: dict[str, Any]) -> dict[str, Any]:
        approved = self.approvers(p, mr)
        eligible = [self.user_basic(u) for u in (2, 3) if u != mr["author_id"]]
        return {
            "approval_rules_overwritten": False,
            "rules": [
                {
                    "id": 1,
                    "name": "All Members",
                    "rule_type": "any_approver",
                    "eligible_approvers": eligible,
                    "approvals_required": APPROVALS_REQUIRED,
                    "users": [],
                    "groups": [],
                    "contains_hidden_groups": False,
                    "approved_by": [self.user_basic(u) for u in approved],
                    "source_rule": None,
                    "approved": len(approved) >= APPROVALS_REQUIRED,
                    "overridden": False,
                }
            ],
        }

    def label(self, p: dict[str, Any], title: str) -> dict[str, Any]:
        labels = self.store.data["labels"]
        if title not in labels:
            self.store.data["counters"]["label"] += 1
            labels[title] = {"id": self.store.data["counters"]["label"], "created_at": ts(self.sb.clock())}
        entry = labels[title]
        return {
            "id": entry["id"],
            "title": title,
            "color": "#6699cc",
            "project_id": p["id"],
            "created_at": hook_ts(entry["created_at"]),
            "updated_at": hook_ts(entry["created_at"]),
            "template": False,
            "description": None,
            "type": "ProjectLabel",
            "group_id": None,
        }

    # -- webhooks -----------------------------------------------------------------------------------------------
    def emit(
        self,
        p: dict[str, Any],
        mr: dict[str, Any],
        action: str,
        uid: int,
        changes: dict[str, Any] | None = None,
        oldrev: str | None = None,
    ) -> None:
        """Queue a "Merge Request Hook" for ``action`` (recorded even when no webhook URL is configured)."""
        url = self.sb.config.gitlab_webhook_url
        st = self.status(p, mr)
        path = p["path_with_namespace"]
        head = self.head(p, mr)
        last = self.repos.commit_info(path, head) if self.repos.resolve(path, head) else None
        web = self.sb.url(PREFIX, f"/{path}")
        labels = [self.label(p, t) for t in mr["labels"]]
        attrs: dict[str, Any] = {
            "id": mr["id"],
            "iid": mr["iid"],
            "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"],
            "source_project_id": p["id"],
            "target_project_id": p["id"],
            "author_id": mr["author_id"],
            "assignee_ids": list(mr["assignee_ids"]),
            "assignee_id": mr["assignee_ids"][0] if mr["assignee_ids"] else None,
            "reviewer_ids": list(mr["reviewer_ids"]),
            "title": mr["title"],
            "created_at": hook_ts(mr["created_at"]),
            "updated_at": hook_ts(mr["updated_at"]),
            "last_edited_at": hook_ts(mr.get("last_edited_at")),
            "last_edited_by_id": mr.get("last_edited_by_id"),
            "milestone_id": None,
            "state_id": {"opened": 1, "closed": 2, "merged": 3}[mr["state"]],
            "state": mr["state"],
            "blocking_discussions_resolved": True,
            "work_in_progress": mr["draft"],
            "draft": mr["draft"],
            "first_contribution": False,
            "merge_status": st["merge_status"],
            "detailed_merge_status": st["detailed_merge_status"],
            "merge_commit_sha": mr.get("merge_commit_sha"),
            "merge_user_id": mr.get("merged_by_id"),
            "head_pipeline_id": None,
            "description": mr["description"],
            "url": self.sb.url(PREFIX, f"/{path}/-/merge_requests/{mr['iid']}"),
            "source": self.hook_project(p),
            "target": self.hook_project(p),
            "last_commit": {
                "id": last.id,
                "message": last.message,
                "title": last.title,
                "timestamp": last.committed_date.isoformat(),
                "url": f"{web}/-/commit/{last.id}",
                "author": {"name": last.author_name, "email": last.author_email},
            }
            if last
            else None,
            "total_time_spent": 0,
            "time_change": 0,
            "time_estimate": 0,
            "human_total_time_spent": None,
            "human_time_change": None,
            "human_time_estimate": None,
            "labels": labels,
            "action": action,
        }
        if oldrev:
            attrs["oldrev"] = oldrev
        payload = {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": self.hook_user(uid),
            "project": self.hook_project(p),
            "object_attributes": attrs,
            "labels": labels,
            "changes": changes or {},
            "repository": {"name": path.rsplit("/", 1)[1], "url": f"{web}.git", "description": p["description"],
                           "homepage": web},
            "assignees": [self.hook_user(u) for u in mr["assignee_ids"]],
            "reviewers": [self.hook_user(u) for u in mr["reviewer_ids"]],
        }
        delivery = {
            "uuid": str(uuid.uuid4()),
            "iid": mr["iid"],
            "action": action,
            "at": ts(self.sb.clock()),
            "url": url,
            "status": None,
            "error": None if url else "no webhook url configured",
        }
        with self.store.lock:
            deliveries = self.store.data["hook_deliveries"]
            deliveries.append(delivery)
            del deliveries[:-MAX_DELIVERIES]
            self.store.save()
        if url:
            self._hooks.put((payload, delivery))
            with self._worker_lock:
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(target=self._deliver, name="gitlab-webhooks", daemon=True)
                    self._worker.start()

    def _deliver(self) -> None:
        """Deliver queued hooks in order; the thread ends when the queue stays empty for a second."""
        with httpx.Client(timeout=5.0) as client:
            while True:
                try:
                    payload, delivery = self._hooks.get(timeout=1.0)
                except queue.Empty:
                    with self._worker_lock:
                        if self._hooks.empty():
                            self._worker = None
                            return
                    continue
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": f"GitLab/{VERSION}",
                    "X-Gitlab-Event": "Merge Request Hook",
                    "X-Gitlab-Token": self.sb.credentials.gitlab_webhook_token.get_secret_value(),
                    "X-Gitlab-Event-UUID": delivery["uuid"],
                    "X-Gitlab-Webhook-UUID": self.store.data["webhook_uuid"],
                    "X-Gitlab-Instance": self.sb.url(PREFIX),
                }
                status, error = None, None
                try:
                    resp = client.post(delivery["url"], content=json.dumps(payload), headers=headers)
                    status = resp.status_code
                except httpx.HTTPError as e:
                    error = type(e).__name__
                with self.store.lock:
                    for d in self.store.data["hook_deliveries"]:
                        if d["uuid"] == delivery["uuid"]:
                            d["status"], d["error"] = status, error
                    self.store.save()


def avatar(email: str) -> str:
    """GitLab's default avatar: a Gravatar identicon URL."""
    import hashlib

    return f"https://www.gravatar.com/avatar/{hashlib.md5(email.encode()).hexdigest()}?s=80&d=identicon"


def secrets_equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


class RawPath:
    """ASGI middleware: route on the raw (still percent-encoded) path, so ``platform%2Fgitops`` and encoded file
    paths stay one path segment, as GitLab's router treats them. Handlers ``unquote`` their path parameters."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = dict(scope, path=scope["raw_path"].decode("latin-1"))
        await self.app(scope, receive, send)


class ReposBackend(FileSystemBackend):
    """dulwich's file system backend with URL paths taken relative to the root (``/platform/gitops.git``)."""

    def open_repository(self, path: str):  # noqa: ANN201 - dulwich's BackendRepo
        text = path.decode() if isinstance(path, bytes) else str(path)
        return super().open_repository(text.lstrip("/"))


def git_app(root: str) -> WSGIMiddleware:
    """Smart-HTTP ``git clone``/``fetch`` of the bare repositories under ``root``; upload-pack only."""
    app = HTTPGitApplication(ReposBackend(root))
    app.handlers.pop(b"git-receive-pack", None)
    return WSGIMiddleware(LimitedInputFilter(GunzipFilter(app)))


def build(sb: Sandbox) -> FastAPI:
    """The GitLab stand-in (see the module docstring); mounted at ``/gitlab`` by ``fixloop.sandbox.app``."""
    gl = GitLab(sb)
    app = FastAPI(title="sandbox GitLab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gitlab = gl
    app.add_middleware(RawPath)
    store, repos = gl.store, gl.repos

    def error(status: int, message: Any, key: str = "message") -> JSONResponse:
        return JSONResponse({key: message}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, exc.key)

    @app.exception_handler(RepoError)
    async def repo_error(request: Request, exc: RepoError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        text = {404: "404 Not Found", 405: "405 Method Not Allowed"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, text, key="error")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        names = [str(e.get("loc", ["", "?"])[-1]) for e in exc.errors()]
        return error(400, ", ".join(f"{n} is invalid" for n in names), key="error")

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("sandbox gitlab: %s %s failed", request.method, request.url.path)
        return error(500, "500 Internal Server Error")

    Params = Depends(read_params)
    User = Depends(gl.authenticate)
    P = f"{API}/projects/{{pid}}"

    # -- instance, users, projects ------------------------------------------------------------------------------
    @app.get(f"{API}/version")
    def version(user: dict = User) -> dict[str, Any]:
        return {"version": VERSION, "revision": "sandbox", "kas": {"enabled": False}, "enterprise": True}

    @app.get(f"{API}/user")
    def current_user(user: dict = User) -> dict[str, Any]:
        return gl.user_full(user["id"])

    @app.get(f"{API}/users")
    def users(request: Request, params: dict = Params, user: dict = User) -> JSONResponse:
        found = [gl.user_basic(u) for u in gl.users if params.get("username") in (None, gl.users[u]["username"])]
        return paginate(request, found, params)

    @app.get(f"{API}/users/{{uid}}")
    def one_user(uid: str, user: dict = User) -> dict[str, Any]:
        u = as_int(uid, "id", 0)
        if u not in gl.users:
            raise ApiError(404, "404 User Not Found")
        return gl.user_public(u)

    @app.get(f"{API}/groups/{{gid}}/members/all/{{uid}}")
    def group_member(gid: str, uid: str, user: dict = User) -> dict[str, Any]:
        return gl.group_member(gid, uid)

    @app.get(f"{API}/projects")
    def projects(request: Request, params: dict = Params, user: dict = User) -> JSONResponse:
        search = str(params.get("search") or "").lower()
        with store.lock:
            found = [gl.project_json(p) for p in store.data["projects"].values()]
        found = [p for p in found if search in p["path_with_namespace"].lower()]
        return paginate(request, found, params)

    @app.get(P)
    def project(pid: str, user: dict = User) -> dict[str, Any]:
        return gl.project_json(gl.project(pid))

    @app.get(P + "/approvals")
    def project_approvals(pid: str, user: dict = User) -> dict[str, Any]:
        gl.project(pid)
        return {
            "approvers": [],
            "approver_groups": [],
            "approvals_before_merge": APPROVALS_REQUIRED,
            "reset_approvals_on_push": True,
            "selective_code_owner_removals": False,
            "disable_overriding_approvers_per_merge_request": False,
            "merge_requests_author_approval": False,
            "merge_requests_disable_committers_approval": False,
            "require_password_to_approve": False,
        }

    # -- repository: files, tree, branches, commits, compare ----------------------------------------------------
    def file_data(p: dict[str, Any], file_path: str, ref: str) -> tuple[str, bytes]:
        sha = repos.resolve(p["path_with_namespace"], ref)
        data = repos.read(p["path_with_namespace"], sha, file_path) if sha else None
        if sha is None or data is None:
            raise ApiError(404, "404 File Not Found")
        return sha, data

    def file_info(p: dict[str, Any], file_path: str, ref: str) -> dict[str, Any]:
        import base64
        import hashlib

        path = p["path_with_namespace"]
        sha, data = file_data(p, file_path, ref)
        return {
            "file_name": file_path.rsplit("/", 1)[-1],
            "file_path": file_path,
            "size": len(data),
            "encoding": "base64",
            "content": base64.b64encode(data).decode(),
            "content_sha256": hashlib.sha256(data).hexdigest(),
            "ref": ref,
            "blob_id": repos.blob_id(path, sha, file_path),
            "commit_id": sha,
            "last_commit_id": gl.last_commit_id(path, sha, file_path),
            "execute_filemode": False,
        }

    @app.get(P + "/repository/files/{fp}/raw")
    def file_raw(pid: str, fp: str, params: dict = Params, user: dict = User) -> Response:
        p = gl.project(pid)
        _, data = file_data(p, unquote(fp), str(params.get("ref") or repos.default_branch(p["path_with_namespace"])))
        return Response(data, media_type="text/plain; charset=utf-8")

    @app.get(P + "/repository/files/{fp}")
    def file_get(pid: str, fp: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        require(params, "ref")
        return file_info(gl.project(pid), unquote(fp), str(params["ref"]))

    def file_write(pid: str, fp: str, params: dict[str, Any], user: dict[str, Any], action: str) -> dict[str, Any]:
        require(params, "branch", "commit_message", *(("content",) if action != "delete" else ()))
        p = gl.project(pid)
        file_path = unquote(fp)
        last = params.get("last_commit_id")
        if last and action != "create":
            branch = str(params["branch"])
            if repos.resolve(p["path_with_namespace"], branch) and gl.last_commit_id(
                p["path_with_namespace"], branch, file_path
            ) != str(last):
                raise ApiError(400, "You are attempting to update a file that has changed since you started editing it")
        act = Action(
            action=action,
            file_path=file_path,
            content=params.get("content"),
            encoding="base64" if params.get("encoding") == "base64" else "text",
        )
        with store.lock:
            gl.commit(p, user, params, [act])
        return {"file_path": file_path, "branch": params["branch"]}

    @app.post(P + "/repository/files/{fp}", status_code=201)
    def file_create(pid: str, fp: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        return file_write(pid, fp, params, user, "create")

    @app.put(P + "/repository/files/{fp}")
    def file_update(pid: str, fp: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        return file_write(pid, fp, params, user, "update")

    @app.delete(P + "/repository/files/{fp}", status_code=204)
    def file_delete(pid: str, fp: str, params: dict = Params, user: dict = User) -> Response:
        file_write(pid, fp, params, user, "delete")
        return Response(status_code=204)

    @app.get(P + "/repository/tree")
    def tree(request: Request, pid: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        path = p["path_with_namespace"]
        ref = str(params.get("ref") or repos.default_branch(path))
        if repos.resolve(path, ref) is None:
            raise ApiError(404, "404 Tree Not Found")
        entries = repos.tree(path, ref, str(params.get("path") or "").strip("/"), truthy(params.get("recursive")))
        return paginate(request, [as_dict(e) for e in entries], params)

    @app.get(P + "/repository/branches")
    def branches(request: Request, pid: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        search = str(params.get("search") or "")
        heads = repos.branches(p["path_with_namespace"])
        found = [gl.branch_json(p, n, s) for n, s in sorted(heads.items()) if search in n]
        return paginate(request, found, params)

    @app.get(P + "/repository/branches/{name}")
    def branch(pid: str, name: str, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        name = unquote(name)
        sha = repos.branches(p["path_with_namespace"]).get(name)
        if sha is None:
            raise ApiError(404, "404 Branch Not Found")
        return gl.branch_json(p, name, sha)

    @app.post(P + "/repository/branches", status_code=201)
    def branch_create(pid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        require(params, "branch", "ref")
        p = gl.project(pid)
        name = str(params["branch"])
        path = p["path_with_namespace"]
        if repos.resolve(path, str(params["ref"])) is None:
            raise ApiError(400, "Invalid reference name: " + str(params["ref"]))
        with store.lock:
            sha = repos.create_branch(path, name, str(params["ref"]))
            gl.pushed(p, name, None, sha, user["id"])
        return gl.branch_json(p, name, sha)

    @app.delete(P + "/repository/branches/{name}", status_code=204)
    def branch_delete(pid: str, name: str, user: dict = User) -> Response:
        p = gl.project(pid)
        path, name = p["path_with_namespace"], unquote(name)
        if name == repos.default_branch(path):
            raise ApiError(405, "405 Method Not Allowed")  # protected default branch
        with store.lock:
            before = repos.branches(path).get(name)
            repos.delete_branch(path, name)
            gl.pushed(p, name, before, None, user["id"])
        return Response(status_code=204)

    @app.post(P + "/repository/commits", status_code=201)
    def commit_create(pid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        require(params, "branch", "commit_message", "actions")
        p = gl.project(pid)
        raw = params["actions"]
        if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
            raise ApiError(400, "actions is invalid", key="error")
        try:
            actions = [Action.model_validate(a) for a in raw]
        except ValueError:
            raise ApiError(400, "actions[action] does not have a valid value", key="error") from None
        with store.lock:
            info = gl.commit(p, user, params, actions)
        return gl.commit_json(p, info, stats=True)

    @app.get(P + "/repository/commits")
    def commits(request: Request, pid: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        path = p["path_with_namespace"]
        ref = str(params.get("ref_name") or repos.default_branch(path))
        if repos.resolve(path, ref) is None:
            raise ApiError(404, "404 Commit Not Found")
        return paginate(request, [gl.commit_json(p, c) for c in repos.log(path, ref, limit=1000)], params)

    @app.get(P + "/repository/commits/{sha}")
    def commit_get(pid: str, sha: str, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        return gl.commit_json(p, repos.commit_info(p["path_with_namespace"], unquote(sha)), stats=True)

    @app.get(P + "/repository/commits/{sha}/diff")
    def commit_diff(request: Request, pid: str, sha: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        c = repos.commit_info(p["path_with_namespace"], unquote(sha))
        diffs = repos.diff(p["path_with_namespace"], c.parent_ids[0], c.id) if c.parent_ids else []
        return paginate(request, [as_dict(d) for d in diffs], params)

    @app.post(P + "/repository/commits/{sha}/revert", status_code=201)
    def commit_revert(pid: str, sha: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        require(params, "branch")
        p = gl.project(pid)
        path, branch = p["path_with_namespace"], str(params["branch"])
        with store.lock:
            before = repos.branches(path).get(branch)
            info = repos.revert(path, unquote(sha), branch, Person(name=user["name"], email=user["email"]),
                                sb.clock())
            gl.pushed(p, branch, before, info.id, user["id"])
        return gl.commit_json(p, info, stats=True)

    @app.get(P + "/repository/compare")
    def compare(pid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        require(params, "from", "to")
        p = gl.project(pid)
        path = p["path_with_namespace"]
        a, b = repos.resolve(path, str(params["from"])), repos.resolve(path, str(params["to"]))
        if a is None or b is None:
            raise ApiError(404, "404 Ref Not Found")
        base = a if truthy(params.get("straight")) else (repos.merge_base(path, a, b) or a)
        between = [c for c in repos.log(path, b, limit=500) if not repos.is_ancestor(path, c.id, base)]
        return {
            "commit": gl.commit_json(p, repos.commit_info(path, b)) if between else None,
            "commits": [gl.commit_json(p, c) for c in reversed(between)],
            "diffs": [as_dict(d) for d in repos.diff(path, base, b)],
            "compare_timeout": False,
            "compare_same_ref": a == b,
            "web_url": sb.url(PREFIX, f"/{path}/-/compare/{a}...{b}"),
        }

    @app.get(P + "/repository/merge_base")
    def merge_base(pid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        """The common ancestor of ``refs`` (``refs[]=a&refs[]=b`` or Grape's comma-separated ``refs=a,b``), as
        GitLab's ``lib/api/repositories.rb``: 400 "Provide at least 2 refs", 400 "Could not find ref(s): ..." for
        refs the repository does not have, 404 "Merge Base Not Found" for unrelated histories, else the commit."""
        require(params, "refs")
        refs = as_list(params["refs"])
        if len(refs) < 2:
            raise ApiError(400, "Provide at least 2 refs")
        p = gl.project(pid)
        path = p["path_with_namespace"]
        shas = {r: repos.resolve(path, r) for r in refs}
        unknown = [r for r, sha in shas.items() if sha is None]
        if unknown:
            raise ApiError(400, f"Could not find {'ref' if len(unknown) == 1 else 'refs'}: {', '.join(unknown)}")
        base: str | None = shas[refs[0]]
        for r in refs[1:]:
            base = repos.merge_base(path, base, str(shas[r])) if base else None
        if base is None:
            raise ApiError(404, "404 Merge Base Not Found")
        return gl.commit_json(p, repos.commit_info(path, base))

    # -- merge requests ------------------------------------------------------------------------------------------
    @app.post(P + "/merge_requests", status_code=201)
    def mr_create(pid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        require(params, "source_branch", "target_branch", "title")
        p = gl.project(pid)
        path = p["path_with_namespace"]
        src, dst = str(params["source_branch"]), str(params["target_branch"])
        if src == dst:
            raise ApiError(422, ["You can't use same project/branch for source and target"])
        heads = repos.branches(path)
        with store.lock:
            for other in gl.mrs(p).values():
                if other["state"] == "opened" and other["source_branch"] == src and other["target_branch"] == dst:
                    raise ApiError(
                        409, [f"Another open merge request already exists for this source branch: !{other['iid']}"]
                    )
            missing = [f'{kind} branch "{b}" does not exist' for kind, b in (("Source", src), ("Target", dst))
                       if b not in heads]
            if missing:
                raise ApiError(409, missing)
            c = store.data["counters"]
            c["mr"] += 1
            iid = p["next_iid"]
            p["next_iid"] += 1
            now = ts(sb.clock())
            title = str(params["title"])
            ids = [as_int(u, "assignee_ids", 0) for u in as_list(params.get("assignee_ids"))]
            if params.get("assignee_id") not in (None, ""):
                ids = [as_int(params["assignee_id"], "assignee_id", 0)]
            remove = params.get("remove_source_branch")
            mr = {
                "id": 1000 + c["mr"],
                "iid": iid,
                "title": title,
                "description": str(params.get("description") or ""),
                "state": "opened",
                "created_at": now,
                "updated_at": now,
                "author_id": user["id"],
                "assignee_ids": [u for u in ids if u in gl.users],
                "reviewer_ids": [u for u in (as_int(x, "reviewer_ids", 0) for x in as_list(params.get("reviewer_ids")))
                                 if u in gl.users],
                "source_branch": src,
                "target_branch": dst,
                "labels": sorted(set(as_list(params.get("labels")))),
                "draft": bool(DRAFT_RE.match(title)),
                "force_remove_source_branch": truthy(remove) if remove is not None else False,
                "should_remove_source_branch": None,
                "squash": truthy(params.get("squash")),
                "sha": heads[src],
                "approvals": [],
            }
            gl.mrs(p)[str(iid)] = mr
            for t in mr["labels"]:
                gl.label(p, t)
            gl.emit(p, mr, "open", user["id"])
            store.save()
            return gl.mr_json(p, mr, user["id"])

    @app.get(P + "/merge_requests")
    def mr_list(request: Request, pid: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        state = str(params.get("state") or "all")
        labels = as_list(params.get("labels"))
        iids = {str(i) for i in as_list(params.get("iids"))}
        author = params.get("author_username")
        author_id = params.get("author_id")
        search = str(params.get("search") or "").lower()
        with store.lock:
            found = [
                mr
                for mr in gl.mrs(p).values()
                if (state == "all" or mr["state"] == state)
                and params.get("source_branch") in (None, mr["source_branch"])
                and params.get("target_branch") in (None, mr["target_branch"])
                and (not iids or str(mr["iid"]) in iids)
                and (author is None or gl.users[mr["author_id"]]["username"] == author)
                and (author_id is None or str(mr["author_id"]) == str(author_id))
                and (search in mr["title"].lower() or search in mr["description"].lower())
                and (
                    not labels
                    or (labels == ["None"] and not mr["labels"])
                    or (labels == ["Any"] and mr["labels"])
                    or (labels not in (["None"], ["Any"]) and set(labels) <= set(mr["labels"]))
                )
            ]
            key = "updated_at" if params.get("order_by") == "updated_at" else "created_at"
            found.sort(key=lambda m: (m[key], m["iid"]), reverse=params.get("sort", "desc") != "asc")
            body = [gl.mr_json(p, mr, user["id"]) for mr in found]
        return paginate(request, body, params)

    @app.get(P + "/merge_requests/{iid}")
    def mr_get(pid: str, iid: str, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        with store.lock:
            return gl.mr_json(p, gl.mr(p, iid), user["id"])

    @app.put(P + "/merge_requests/{iid}")
    def mr_update(pid: str, iid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        with store.lock:
            mr = gl.mr(p, iid)
            before = {k: list(v) if isinstance(v, list) else v for k, v in mr.items()}
            if "title" in params and params["title"] is not None:
                mr["title"] = str(params["title"])
                mr["draft"] = bool(DRAFT_RE.match(mr["title"]))
            if "description" in params and params["description"] is not None:
                mr["description"] = str(params["description"])
            if "target_branch" in params and params["target_branch"]:
                mr["target_branch"] = str(params["target_branch"])
            if "labels" in params:
                mr["labels"] = sorted(set(as_list(params["labels"])))
            if params.get("add_labels"):
                mr["labels"] = sorted(set(mr["labels"]) | set(as_list(params["add_labels"])))
            if params.get("remove_labels"):
                mr["labels"] = sorted(set(mr["labels"]) - set(as_list(params["remove_labels"])))
            if "assignee_ids" in params:
                mr["assignee_ids"] = [u for u in (as_int(x, "assignee_ids", 0) for x in as_list(params["assignee_ids"]))
                                      if u in gl.users]
            if params.get("remove_source_branch") is not None:
                mr["force_remove_source_branch"] = truthy(params["remove_source_branch"])
            if params.get("squash") is not None:
                mr["squash"] = truthy(params["squash"])
            event = params.get("state_event")
            action = "update"
            now = ts(sb.clock())
            if event == "close" and mr["state"] == "opened":
                mr.update(state="closed", closed_at=now, closed_by_id=user["id"], sha=gl.head(p, before))
                action = "close"
            elif event == "reopen" and mr["state"] == "closed":
                mr.update(state="opened", closed_at=None, closed_by_id=None)
                action = "reopen"
            elif event not in (None, "", "close", "reopen"):
                raise ApiError(400, "state_event does not have a valid value", key="error")
            fields = ("title", "description", "target_branch", "labels", "assignee_ids", "state", "draft")
            changed = {k: {"previous": before[k], "current": mr[k]} for k in fields if before[k] != mr[k]}
            if changed:
                mr["updated_at"] = now
                if {"title", "description"} & set(changed):
                    mr["last_edited_at"], mr["last_edited_by_id"] = now, user["id"]
                changes = dict(changed)
                if "labels" in changes:
                    changes["labels"] = {k: [gl.label(p, t) for t in v] for k, v in changes["labels"].items()}
                if "state" in changes:
                    ids = {"opened": 1, "closed": 2, "merged": 3}
                    changes["state_id"] = {k: ids[v] for k, v in changes.pop("state").items()}
                changes["updated_at"] = {"previous": hook_ts(before["updated_at"]), "current": hook_ts(now)}
                gl.emit(p, mr, action, user["id"], changes=changes)
            store.save()
            return gl.mr_json(p, mr, user["id"])

    @app.get(P + "/merge_requests/{iid}/changes")
    def mr_changes(pid: str, iid: str, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        with store.lock:
            mr = gl.mr(p, iid)
            out = gl.mr_json(p, mr, user["id"])
            out["changes"] = [as_dict(d) for d in gl.diffs(p, mr)]
            out["overflow"] = False
            return out

    @app.get(P + "/merge_requests/{iid}/diffs")
    def mr_diffs(request: Request, pid: str, iid: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        with store.lock:
            diffs = [as_dict(d) | {"generated_file": False} for d in gl.diffs(p, gl.mr(p, iid))]
        return paginate(request, diffs, params)

    @app.get(P + "/merge_requests/{iid}/commits")
    def mr_commits(request: Request, pid: str, iid: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        path = p["path_with_namespace"]
        with store.lock:
            refs = gl.status(p, gl.mr(p, iid))["diff_refs"]
        found = []
        if refs:
            found = [
                gl.commit_json(p, c)
                for c in repos.log(path, refs["head_sha"], limit=500)
                if not repos.is_ancestor(path, c.id, refs["base_sha"])
            ]
        return paginate(request, found, params)

    def note_json(p: dict[str, Any], mr: dict[str, Any], n: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": n["id"],
            "type": None,
            "body": n["body"],
            "attachment": None,
            "author": gl.user_basic(n["author_id"]),
            "created_at": n["created_at"],
            "updated_at": n["created_at"],
            "system": n["system"],
            "noteable_id": mr["id"],
            "noteable_type": "MergeRequest",
            "project_id": p["id"],
            "resolvable": False,
            "confidential": False,
            "internal": False,
            "imported": False,
            "imported_from": "none",
            "noteable_iid": mr["iid"],
            "commands_changes": {},
        }

    @app.get(P + "/merge_requests/{iid}/notes")
    def notes(request: Request, pid: str, iid: str, params: dict = Params, user: dict = User) -> JSONResponse:
        p = gl.project(pid)
        with store.lock:
            mr = gl.mr(p, iid)
            found = [note_json(p, mr, n) for n in store.data["notes"].get(f"{p['id']}/{mr['iid']}", [])]
        found.sort(key=lambda n: (n["created_at"], n["id"]), reverse=params.get("sort", "desc") != "asc")
        return paginate(request, found, params)

    @app.post(P + "/merge_requests/{iid}/notes", status_code=201)
    def note_create(pid: str, iid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        require(params, "body")
        body = str(params["body"])
        if len(body) > 1_000_000:
            raise ApiError(400, {"note": ["is too long (maximum is 1000000 characters)"]})
        p = gl.project(pid)
        with store.lock:
            mr = gl.mr(p, iid)
            store.data["counters"]["note"] += 1
            n = {"id": store.data["counters"]["note"], "body": body, "author_id": user["id"],
                 "created_at": ts(sb.clock()), "system": False}
            store.data["notes"].setdefault(f"{p['id']}/{mr['iid']}", []).append(n)
            store.save()
            return note_json(p, mr, n)

    @app.get(P + "/merge_requests/{iid}/approvals")
    def approvals(pid: str, iid: str, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        with store.lock:
            return gl.approvals_json(p, gl.mr(p, iid), user["id"])

    @app.get(P + "/merge_requests/{iid}/approval_state")
    def approval_state(pid: str, iid: str, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        with store.lock:
            return gl.approval_state_json(p, gl.mr(p, iid))

    def check_sha(p: dict[str, Any], mr: dict[str, Any], params: dict[str, Any]) -> None:
        head = gl.head(p, mr)
        if params.get("sha") and str(params["sha"]) != head:
            raise ApiError(409, f"SHA does not match HEAD of source branch: {head}")

    @app.post(P + "/merge_requests/{iid}/approve", status_code=201)
    def approve(pid: str, iid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        with store.lock:
            mr = gl.mr(p, iid)
            check_sha(p, mr, params)
            # GitLab's ApprovalService refuses (the API answers 401): the author (author approval is off by default),
            # a user who already approved, a merge request that is not open.
            if mr["state"] != "opened" or user["id"] == mr["author_id"] or user["id"] in gl.approvers(p, mr):
                raise ApiError(401, "401 Unauthorized")
            head = gl.head(p, mr)
            mr["approvals"] = [a for a in mr["approvals"] if a["sha"] == head]
            mr["approvals"].append({"user_id": user["id"], "sha": head, "at": ts(sb.clock())})
            left = gl.status(p, mr)["approvals_left"]
            gl.emit(p, mr, "approved" if left == 0 else "approval", user["id"])
            store.save()
            return gl.approvals_json(p, mr, user["id"])

    @app.post(P + "/merge_requests/{iid}/unapprove", status_code=201)
    def unapprove(pid: str, iid: str, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        with store.lock:
            mr = gl.mr(p, iid)
            if user["id"] not in gl.approvers(p, mr):
                raise ApiError(404, "404 Not Found")
            was_approved = gl.status(p, mr)["approvals_left"] == 0
            mr["approvals"] = [a for a in mr["approvals"] if a["user_id"] != user["id"]]
            gl.emit(p, mr, "unapproved" if was_approved else "unapproval", user["id"])
            store.save()
            return gl.approvals_json(p, mr, user["id"])

    @app.put(P + "/merge_requests/{iid}/merge")
    def merge(pid: str, iid: str, params: dict = Params, user: dict = User) -> dict[str, Any]:
        p = gl.project(pid)
        path = p["path_with_namespace"]
        with store.lock:
            mr = gl.mr(p, iid)
            st = gl.status(p, mr)
            if mr["state"] != "opened" or st["detailed_merge_status"] in ("draft_status", "not_approved",
                                                                            "broken_status"):
                raise ApiError(405, "405 Method Not Allowed")
            if st["has_conflicts"]:
                raise ApiError(422, "Branch cannot be merged")
            check_sha(p, mr, params)
            head = gl.head(p, mr)
            dst_before = repos.branches(path)[mr["target_branch"]]
            squash = truthy(params.get("squash")) if params.get("squash") is not None else mr["squash"]
            message = str(
                params.get("merge_commit_message")
                or f"Merge branch '{mr['source_branch']}' into '{mr['target_branch']}'\n\n{mr['title']}\n\n"
                f"See merge request {path}!{mr['iid']}"
            )
            try:
                sha = repos.merge(path, mr["source_branch"], mr["target_branch"], message,
                                  Person(name=user["name"], email=user["email"]), sb.clock(), expected_sha=head,
                                  squash=squash)
            except RepoError as e:
                raise ApiError(422 if e.status == 406 else e.status, "Branch cannot be merged"
                               if e.status == 406 else e.message) from None
            now = ts(sb.clock())
            remove = params.get("should_remove_source_branch")
            mr.update(
                state="merged", merged_at=now, updated_at=now, merged_by_id=user["id"], merge_commit_sha=sha,
                squash_commit_sha=sha if squash else None, sha=head, diff_refs=st["diff_refs"],
                should_remove_source_branch=truthy(remove) if remove is not None else None,
                merge_status="can_be_merged",
            )
            gl.pushed(p, mr["target_branch"], dst_before, sha, user["id"])
            if truthy(remove) or (remove is None and mr["force_remove_source_branch"]):
                src_before = repos.branches(path).get(mr["source_branch"])
                if src_before:
                    repos.delete_branch(path, mr["source_branch"])
                    gl.pushed(p, mr["source_branch"], src_before, None, user["id"])
            gl.emit(p, mr, "merge", user["id"])
            store.save()
            return gl.mr_json(p, mr, user["id"])

    # -- git over smart HTTP (read-only), after every API route --------------------------------------------------
    app.router.routes.append(
        Route("/{repo:path}.git/{rest:path}", endpoint=git_app(str(repos.root)), methods=["GET", "POST"])
    )
    return app
