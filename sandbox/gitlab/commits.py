"""Commits: create with ``actions``, list (``path``, ``since``, ``until``), get, ``diff``, ``merge_requests``,
``revert``; ``.../repository/compare`` and ``.../repository/merge_base``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import PREFIX, ApiError, as_list, paginate, require, truthy
from fixloop.sandbox.repos import Action, Person, as_dict

router = APIRouter()


@router.post(P + "/repository/commits", status_code=201)
def commit_create(pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    require(params, "branch", "commit_message", "actions")
    p = gl.project(pid)
    raw = params["actions"]
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise ApiError(400, "actions is invalid", key="error")
    try:
        actions = [Action.model_validate(a) for a in raw]
    except ValueError:
        raise ApiError(400, "actions[action] does not have a valid value", key="error") from None
    with gl.store.lock:
        info = gl.commit(p, user, params, actions)
    return gl.commit_json(p, info, stats=True)


def _when(params: dict[str, Any], name: str) -> datetime | None:
    """``since``/``until``: an ISO 8601 time (Grape's DateTime; a naive one is UTC), else 400 "<name> is invalid"."""
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} is invalid", key="error") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


@router.get(P + "/repository/commits")
def commits(request: Request, pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> JSONResponse:
    """GitLab's list: ``ref_name`` (default branch), ``path`` (``git log -- <path>``), ``since``/``until``
    (inclusive, on the committer date, as ``git log --since/--until``), newest first."""
    p = gl.project(pid)
    path = p["path_with_namespace"]
    ref = str(params.get("ref_name") or gl.repos.default_branch(path))
    since, until = _when(params, "since"), _when(params, "until")
    if gl.repos.resolve(path, ref) is None:
        raise ApiError(404, "404 Commit Not Found")
    found = [
        c
        for c in gl.repos.log(path, ref, limit=1000, path=str(params.get("path") or "") or None)
        if (since is None or c.committed_date >= since) and (until is None or c.committed_date <= until)
    ]
    return paginate(request, [gl.commit_json(p, c) for c in found], params)


@router.get(P + "/repository/commits/{sha}/merge_requests")
def commit_merge_requests(
    request: Request, pid: str, sha: str, params: dict = Params, user: dict = User, gl: GitLab = GL
) -> JSONResponse:
    """The merge requests holding commit ``sha`` (GitLab's ``MergeRequest.by_commit_sha``: one of its commits, its
    merge commit or its squash commit), as the basic MR entity; 404 "404 Commit Not Found" for an unknown commit."""
    p = gl.project(pid)
    path = p["path_with_namespace"]
    commit = gl.repos.commit_info(path, unquote(sha)).id
    with gl.store.lock:
        found = []
        for mr in gl.mrs(p).values():
            refs = gl.status(p, mr)["diff_refs"]
            own = (
                bool(refs)
                and gl.repos.is_ancestor(path, commit, refs["head_sha"])
                and not gl.repos.is_ancestor(path, commit, refs["base_sha"])
            )
            if own or commit in (mr.get("merge_commit_sha"), mr.get("squash_commit_sha")):
                found.append(gl.mr_json(p, mr, user["id"]))
    found.sort(key=lambda m: m["iid"], reverse=True)
    return paginate(request, found, params)


@router.get(P + "/repository/commits/{sha}")
def commit_get(pid: str, sha: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    return gl.commit_json(p, gl.repos.commit_info(p["path_with_namespace"], unquote(sha)), stats=True)


@router.get(P + "/repository/commits/{sha}/diff")
def commit_diff(
    request: Request, pid: str, sha: str, params: dict = Params, user: dict = User, gl: GitLab = GL
) -> JSONResponse:
    p = gl.project(pid)
    c = gl.repos.commit_info(p["path_with_namespace"], unquote(sha))
    # against the first parent; a root commit against the empty tree (every file new), as GitLab shows it
    diffs = gl.repos.diff(p["path_with_namespace"], c.parent_ids[0] if c.parent_ids else None, c.id)
    return paginate(request, [as_dict(d) for d in diffs], params)


@router.post(P + "/repository/commits/{sha}/revert", status_code=201)
def commit_revert(pid: str, sha: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    require(params, "branch")
    p = gl.project(pid)
    path, branch = p["path_with_namespace"], str(params["branch"])
    with gl.store.lock:
        before = gl.repos.branches(path).get(branch)
        info = gl.repos.revert(path, unquote(sha), branch, Person(name=user["name"], email=user["email"]),
                            gl.sb.clock())
        gl.pushed(p, branch, before, info.id, user["id"])
    return gl.commit_json(p, info, stats=True)


@router.get(P + "/repository/compare")
def compare(pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    require(params, "from", "to")
    p = gl.project(pid)
    path = p["path_with_namespace"]
    a, b = gl.repos.resolve(path, str(params["from"])), gl.repos.resolve(path, str(params["to"]))
    if a is None or b is None:
        raise ApiError(404, "404 Ref Not Found")
    base = a if truthy(params.get("straight")) else (gl.repos.merge_base(path, a, b) or a)
    between = [c for c in gl.repos.log(path, b, limit=500) if not gl.repos.is_ancestor(path, c.id, base)]
    return {
        "commit": gl.commit_json(p, gl.repos.commit_info(path, b)) if between else None,
        "commits": [gl.commit_json(p, c) for c in reversed(between)],
        "diffs": [as_dict(d) for d in gl.repos.diff(path, base, b)],
        "compare_timeout": False,
        "compare_same_ref": a == b,
        "web_url": gl.sb.url(PREFIX, f"/{path}/-/compare/{a}...{b}"),
    }


@router.get(P + "/repository/merge_base")
def merge_base(pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    """The common ancestor of ``refs`` (``refs[]=a&refs[]=b`` or Grape's comma-separated ``refs=a,b``), as
    GitLab's ``lib/api/repositories.rb``: 400 "Provide at least 2 refs", 400 "Could not find ref(s): ..." for
    refs the repository does not have, 404 "Merge Base Not Found" for unrelated histories, else the commit."""
    require(params, "refs")
    refs = as_list(params["refs"])
    if len(refs) < 2:
        raise ApiError(400, "Provide at least 2 refs")
    p = gl.project(pid)
    path = p["path_with_namespace"]
    shas = {r: gl.repos.resolve(path, r) for r in refs}
    unknown = [r for r, sha in shas.items() if sha is None]
    if unknown:
        raise ApiError(400, f"Could not find {'ref' if len(unknown) == 1 else 'refs'}: {', '.join(unknown)}")
    base: str | None = shas[refs[0]]
    for r in refs[1:]:
        base = gl.repos.merge_base(path, base, str(shas[r])) if base else None
    if base is None:
        raise ApiError(404, "404 Merge Base Not Found")
    return gl.commit_json(p, gl.repos.commit_info(path, base))
