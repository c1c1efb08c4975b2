"""Repository files and the tree: ``GET|POST|PUT|DELETE /projects/:id/repository/files/:file_path``,
``.../files/:file_path/raw`` and ``GET /projects/:id/repository/tree``."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import ApiError, paginate, require, truthy
from fixloop.sandbox.repos import Action, as_dict

router = APIRouter()


def file_data(gl: GitLab, p: dict[str, Any], file_path: str, ref: str) -> tuple[str, bytes]:
    sha = gl.repos.resolve(p["path_with_namespace"], ref)
    data = gl.repos.read(p["path_with_namespace"], sha, file_path) if sha else None
    if sha is None or data is None:
        raise ApiError(404, "404 File Not Found")
    return sha, data


def file_info(gl: GitLab, p: dict[str, Any], file_path: str, ref: str) -> dict[str, Any]:
    path = p["path_with_namespace"]
    sha, data = file_data(gl, p, file_path, ref)
    return {
        "file_name": file_path.rsplit("/", 1)[-1],
        "file_path": file_path,
        "size": len(data),
        "encoding": "base64",
        "content": base64.b64encode(data).decode(),
        "content_sha256": hashlib.sha256(data).hexdigest(),
        "ref": ref,
        "blob_id": gl.repos.blob_id(path, sha, file_path),
        "commit_id": sha,
        "last_commit_id": gl.last_commit_id(path, sha, file_path),
        "execute_filemode": False,
    }


@router.get(P + "/repository/files/{fp}/raw")
def file_raw(pid: str, fp: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> Response:
    p = gl.project(pid)
    _, data = file_data(gl, p, unquote(fp), str(params.get("ref") or gl.repos.default_branch(p["path_with_namespace"])))
    return Response(data, media_type="text/plain; charset=utf-8")


@router.get(P + "/repository/files/{fp}")
def file_get(pid: str, fp: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    require(params, "ref")
    return file_info(gl, gl.project(pid), unquote(fp), str(params["ref"]))


def file_write(
    gl: GitLab, pid: str, fp: str, params: dict[str, Any], user: dict[str, Any], action: str
) -> dict[str, Any]:
    require(params, "branch", "commit_message", *(("content",) if action != "delete" else ()))
    p = gl.project(pid)
    file_path = unquote(fp)
    last = params.get("last_commit_id")
    if last and action != "create":
        branch = str(params["branch"])
        if gl.repos.resolve(p["path_with_namespace"], branch) and gl.last_commit_id(
            p["path_with_namespace"], branch, file_path
        ) != str(last):
            raise ApiError(400, "You are attempting to update a file that has changed since you started editing it")
    act = Action(
        action=action,
        file_path=file_path,
        content=params.get("content"),
        encoding="base64" if params.get("encoding") == "base64" else "text",
    )
    with gl.store.lock:
        gl.commit(p, user, params, [act])
    return {"file_path": file_path, "branch": params["branch"]}


@router.post(P + "/repository/files/{fp}", status_code=201)
def file_create(pid: str, fp: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    return file_write(gl, pid, fp, params, user, "create")


@router.put(P + "/repository/files/{fp}")
def file_update(pid: str, fp: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    return file_write(gl, pid, fp, params, user, "update")


@router.delete(P + "/repository/files/{fp}", status_code=204)
def file_delete(pid: str, fp: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> Response:
    file_write(gl, pid, fp, params, user, "delete")
    return Response(status_code=204)


@router.get(P + "/repository/tree")
def tree(request: Request, pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> JSONResponse:
    p = gl.project(pid)
    path = p["path_with_namespace"]
    ref = str(params.get("ref") or gl.repos.default_branch(path))
    if gl.repos.resolve(path, ref) is None:
        raise ApiError(404, "404 Tree Not Found")
    entries = gl.repos.tree(path, ref, str(params.get("path") or "").strip("/"), truthy(params.get("recursive")))
    return paginate(request, [as_dict(e) for e in entries], params)
