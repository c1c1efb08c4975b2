"""Merge requests: create (409 for a second open one per source branch), list, get, update (``state_event``
close/reopen), ``changes``, ``diffs``, ``commits`` and ``merge`` (405 / 422 / 409 as GitLab answers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import DRAFT_RE, ApiError, as_int, as_list, hook_ts, paginate, require, truthy, ts
from fixloop.sandbox.repos import Person, RepoError, as_dict

router = APIRouter()


@router.post(P + "/merge_requests", status_code=201)
def mr_create(pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    require(params, "source_branch", "target_branch", "title")
    p = gl.project(pid)
    path = p["path_with_namespace"]
    src, dst = str(params["source_branch"]), str(params["target_branch"])
    if src == dst:
        raise ApiError(422, ["You can't use same project/branch for source and target"])
    heads = gl.repos.branches(path)
    with gl.store.lock:
        for other in gl.mrs(p).values():
            if other["state"] == "opened" and other["source_branch"] == src and other["target_branch"] == dst:
                raise ApiError(
                    409, [f"Another open merge request already exists for this source branch: !{other['iid']}"]
                )
        missing = [f'{kind} branch "{b}" does not exist' for kind, b in (("Source", src), ("Target", dst))
                   if b not in heads]
        if missing:
            raise ApiError(409, missing)
        c = gl.store.data["counters"]
        c["mr"] += 1
        iid = p["next_iid"]
        p["next_iid"] += 1
        now = ts(gl.sb.clock())
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
        gl.store.save()
        return gl.mr_json(p, mr, user["id"])


@router.get(P + "/merge_requests")
def mr_list(request: Request, pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> JSONResponse:
    p = gl.project(pid)
    state = str(params.get("state") or "all")
    labels = as_list(params.get("labels"))
    iids = {str(i) for i in as_list(params.get("iids"))}
    author = params.get("author_username")
    author_id = params.get("author_id")
    search = str(params.get("search") or "").lower()
    with gl.store.lock:
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


@router.get(P + "/merge_requests/{iid}")
def mr_get(pid: str, iid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    with gl.store.lock:
        return gl.mr_json(p, gl.mr(p, iid), user["id"])


@router.put(P + "/merge_requests/{iid}")
def mr_update(pid: str, iid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    with gl.store.lock:
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
        now = ts(gl.sb.clock())
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
        gl.store.save()
        return gl.mr_json(p, mr, user["id"])


@router.get(P + "/merge_requests/{iid}/changes")
def mr_changes(pid: str, iid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    with gl.store.lock:
        mr = gl.mr(p, iid)
        out = gl.mr_json(p, mr, user["id"])
        out["changes"] = [as_dict(d) for d in gl.diffs(p, mr)]
        out["overflow"] = False
        return out


@router.get(P + "/merge_requests/{iid}/diffs")
def mr_diffs(
    request: Request, pid: str, iid: str, params: dict = Params, user: dict = User, gl: GitLab = GL
) -> JSONResponse:
    p = gl.project(pid)
    with gl.store.lock:
        diffs = [as_dict(d) | {"generated_file": False} for d in gl.diffs(p, gl.mr(p, iid))]
    return paginate(request, diffs, params)


@router.get(P + "/merge_requests/{iid}/commits")
def mr_commits(
    request: Request, pid: str, iid: str, params: dict = Params, user: dict = User, gl: GitLab = GL
) -> JSONResponse:
    p = gl.project(pid)
    with gl.store.lock:
        refs = gl.status(p, gl.mr(p, iid))["diff_refs"]
    return paginate(request, [gl.commit_json(p, c) for c in gl.mr_commits(p, refs)], params)


@router.put(P + "/merge_requests/{iid}/merge")
def merge(pid: str, iid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    path = p["path_with_namespace"]
    with gl.store.lock:
        mr = gl.mr(p, iid)
        st = gl.status(p, mr)
        if mr["state"] != "opened" or st["detailed_merge_status"] in ("draft_status", "not_approved",
                                                                        "broken_status"):
            raise ApiError(405, "405 Method Not Allowed")
        if st["has_conflicts"]:
            raise ApiError(422, "Branch cannot be merged")
        gl.check_sha(p, mr, params)
        head = gl.head(p, mr)
        dst_before = gl.repos.branches(path)[mr["target_branch"]]
        squash = truthy(params.get("squash")) if params.get("squash") is not None else mr["squash"]
        message = str(
            params.get("merge_commit_message")
            or f"Merge branch '{mr['source_branch']}' into '{mr['target_branch']}'\n\n{mr['title']}\n\n"
            f"See merge request {path}!{mr['iid']}"
        )
        try:
            sha = gl.repos.merge(path, mr["source_branch"], mr["target_branch"], message,
                              Person(name=user["name"], email=user["email"]), gl.sb.clock(), expected_sha=head,
                              squash=squash)
        except RepoError as e:
            raise ApiError(422 if e.status == 406 else e.status, "Branch cannot be merged"
                           if e.status == 406 else e.message) from None
        now = ts(gl.sb.clock())
        remove = params.get("should_remove_source_branch")
        mr.update(
            state="merged", merged_at=now, updated_at=now, merged_by_id=user["id"], merge_commit_sha=sha,
            squash_commit_sha=sha if squash else None, sha=head, diff_refs=st["diff_refs"],
            should_remove_source_branch=truthy(remove) if remove is not None else None,
            merge_status="can_be_merged",
        )
        gl.pushed(p, mr["target_branch"], dst_before, sha, user["id"])
        if truthy(remove) or (remove is None and mr["force_remove_source_branch"]):
            src_before = gl.repos.branches(path).get(mr["source_branch"])
            if src_before:
                gl.repos.delete_branch(path, mr["source_branch"])
                gl.pushed(p, mr["source_branch"], src_before, None, user["id"])
        gl.emit(p, mr, "merge", user["id"])
        gl.store.save()
        return gl.mr_json(p, mr, user["id"])
