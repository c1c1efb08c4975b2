"""Merge request notes (comments): ``GET|POST /projects/:id/merge_requests/:iid/notes``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import ApiError, paginate, require, ts

router = APIRouter()


def note_json(gl: GitLab, p: dict[str, Any], mr: dict[str, Any], n: dict[str, Any]) -> dict[str, Any]:
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


@router.get(P + "/merge_requests/{iid}/notes")
def notes(
    request: Request, pid: str, iid: str, params: dict = Params, user: dict = User, gl: GitLab = GL
) -> JSONResponse:
    p = gl.project(pid)
    with gl.store.lock:
        mr = gl.mr(p, iid)
        found = [note_json(gl, p, mr, n) for n in gl.store.data["notes"].get(f"{p['id']}/{mr['iid']}", [])]
    found.sort(key=lambda n: (n["created_at"], n["id"]), reverse=params.get("sort", "desc") != "asc")
    return paginate(request, found, params)


@router.post(P + "/merge_requests/{iid}/notes", status_code=201)
def note_create(pid: str, iid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    require(params, "body")
    body = str(params["body"])
    if len(body) > 1_000_000:
        raise ApiError(400, {"note": ["is too long (maximum is 1000000 characters)"]})
    p = gl.project(pid)
    with gl.store.lock:
        mr = gl.mr(p, iid)
        gl.store.data["counters"]["note"] += 1
        n = {"id": gl.store.data["counters"]["note"], "body": body, "author_id": user["id"],
             "created_at": ts(gl.sb.clock()), "system": False}
        gl.store.data["notes"].setdefault(f"{p['id']}/{mr['iid']}", []).append(n)
        gl.store.save()
        return note_json(gl, p, mr, n)
