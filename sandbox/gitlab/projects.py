"""Projects: ``GET /projects`` (``search``), ``GET /projects/:id`` (numeric id or URL-encoded
``namespace%2Fname``) and the project's approval configuration ``GET /projects/:id/approvals``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import API, APPROVALS_REQUIRED, paginate

router = APIRouter()


@router.get(f"{API}/projects")
def projects(request: Request, params: dict = Params, user: dict = User, gl: GitLab = GL) -> JSONResponse:
    search = str(params.get("search") or "").lower()
    with gl.store.lock:
        found = [gl.project_json(p) for p in gl.store.data["projects"].values()]
    found = [p for p in found if search in p["path_with_namespace"].lower()]
    return paginate(request, found, params)


@router.get(P)
def project(pid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    return gl.project_json(gl.project(pid))


@router.get(P + "/approvals")
def project_approvals(pid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
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
