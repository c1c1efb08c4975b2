"""Branches: ``GET|POST /projects/:id/repository/branches``, ``GET|DELETE .../branches/:name`` (the default
branch is protected: 405)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import ApiError, paginate, require

router = APIRouter()


@router.get(P + "/repository/branches")
def branches(request: Request, pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> JSONResponse:
    p = gl.project(pid)
    search = str(params.get("search") or "")
    heads = gl.repos.branches(p["path_with_namespace"])
    found = [gl.branch_json(p, n, s) for n, s in sorted(heads.items()) if search in n]
    return paginate(request, found, params)


@router.get(P + "/repository/branches/{name}")
def branch(pid: str, name: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    name = unquote(name)
    sha = gl.repos.branches(p["path_with_namespace"]).get(name)
    if sha is None:
        raise ApiError(404, "404 Branch Not Found")
    return gl.branch_json(p, name, sha)


@router.post(P + "/repository/branches", status_code=201)
def branch_create(pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    require(params, "branch", "ref")
    p = gl.project(pid)
    name = str(params["branch"])
    path = p["path_with_namespace"]
    if gl.repos.resolve(path, str(params["ref"])) is None:
        raise ApiError(400, "Invalid reference name: " + str(params["ref"]))
    with gl.store.lock:
        sha = gl.repos.create_branch(path, name, str(params["ref"]))
        gl.pushed(p, name, None, sha, user["id"])
    return gl.branch_json(p, name, sha)


@router.delete(P + "/repository/branches/{name}", status_code=204)
def branch_delete(pid: str, name: str, user: dict = User, gl: GitLab = GL) -> Response:
    p = gl.project(pid)
    path, name = p["path_with_namespace"], unquote(name)
    if name == gl.repos.default_branch(path):
        raise ApiError(405, "405 Method Not Allowed")  # protected default branch
    with gl.store.lock:
        before = gl.repos.branches(path).get(name)
        gl.repos.delete_branch(path, name)
        gl.pushed(p, name, before, None, user["id"])
    return Response(status_code=204)
