"""Instance and people: ``GET /version``, ``/user``, ``/users`` (``username``), ``/users/:id``, and
``GET /groups/:id/members/all/:user_id`` (``GROUPS`` in ``service``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fixloop.sandbox.gitlab.service import GL, GitLab, Params, User
from fixloop.sandbox.gitlab.wire import API, VERSION, ApiError, as_int, paginate

router = APIRouter()


@router.get(f"{API}/version")
def version(user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    return {"version": VERSION, "revision": "sandbox", "kas": {"enabled": False}, "enterprise": True}


@router.get(f"{API}/user")
def current_user(user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    return gl.user_full(user["id"])


@router.get(f"{API}/users")
def users(request: Request, params: dict = Params, user: dict = User, gl: GitLab = GL) -> JSONResponse:
    found = [gl.user_basic(u) for u in gl.users if params.get("username") in (None, gl.users[u]["username"])]
    return paginate(request, found, params)


@router.get(f"{API}/users/{{uid}}")
def one_user(uid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    u = as_int(uid, "id", 0)
    if u not in gl.users:
        raise ApiError(404, "404 User Not Found")
    return gl.user_public(u)


@router.get(f"{API}/groups/{{gid}}/members/all/{{uid}}")
def group_member(gid: str, uid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    return gl.group_member(gid, uid)
