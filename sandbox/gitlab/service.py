"""The GitLab stand-in's state and rules: users, projects, merge requests and their status, approvals, the JSON
representations, and the ``Depends`` its routers take (``GL`` the service, ``User`` the authenticated user,
``Params`` the merged parameters). The routers (one module per resource) only parse, call and render."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Depends, Request

from fixloop.sandbox.app import Sandbox
from fixloop.sandbox.gitlab.ci import CI
from fixloop.sandbox.gitlab.webhooks import MergeRequestHooks
from fixloop.sandbox.gitlab.wire import (
    API,
    APPROVALS_REQUIRED,
    GITOPS,
    GROUPS,
    PREFIX,
    ApiError,
    as_int,
    avatar,
    commit_ts,
    hook_ts,
    read_params,
    secrets_equal,
    ts,
)
from fixloop.sandbox.repos import Action, CommitInfo, FileDiff, Person, as_dict
from fixloop.sandbox.routes import service
from fixloop.sandbox.seed import seed_gitops


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
            4: {
                "id": 4,
                "username": creds.gitlab_developer_username,
                "name": "Dana Developer",
                "email": f"{creds.gitlab_developer_username}@example.com",
                "token": creds.gitlab_developer_token.get_secret_value(),
            },
        }
        self.hooks = MergeRequestHooks(sb, self.store)
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
                try:
                    seed_gitops(self.repos, sb.clock())
                except NotImplementedError:
                    self.repos.create(GITOPS)
            if not any(p["path_with_namespace"] == GITOPS for p in d["projects"].values()):
                self.add_project(GITOPS, "GitOps repository of the sandbox cluster (Flux, Kustomize).")
            self.store.save()
        self.ci = CI(sb, self)  # the pipelines of pushes to a default branch (fixloop.sandbox.gitlab.ci)
        self.ci.seed_registry(GITOPS)

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
            "git.push",
            {"project": path, "branch": branch, "before": before, "after": after or "0" * 40, "user_id": uid},
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

    def mr_commits(self, p: dict[str, Any], refs: dict[str, str] | None) -> list[CommitInfo]:
        """The commits of a merge request with ``diff_refs`` ``refs`` (base..head, newest first; 500 at most)."""
        if not refs:
            return []
        path = p["path_with_namespace"]
        return [c for c in self.repos.log(path, refs["head_sha"], limit=500)
                if not self.repos.is_ancestor(path, c.id, refs["base_sha"])]

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
        self.hooks.send(payload, mr["iid"], action)

    def check_sha(self, p: dict[str, Any], mr: dict[str, Any], params: dict[str, Any]) -> None:
        """409 when the caller's ``sha`` is not the merge request's head (approve, merge)."""
        head = self.head(p, mr)
        if params.get("sha") and str(params["sha"]) != head:
            raise ApiError(409, f"SHA does not match HEAD of source branch: {head}")


def current_user(request: Request, gl: GitLab = Depends(service)) -> dict[str, Any]:
    """The user of the request's ``PRIVATE-TOKEN`` / ``Authorization: Bearer``, else 401."""
    return gl.authenticate(request)


GL = Depends(service)
User = Depends(current_user)
Params = Depends(read_params)
P = f"{API}/projects/{{pid}}"
