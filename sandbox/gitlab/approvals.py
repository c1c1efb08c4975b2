"""Merge request approvals: ``approvals``, ``approval_state``, ``approve`` (401 for the author, a second
approval, a closed MR), ``unapprove``; an approval counts only at the head SHA it was given at."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import ApiError, ts

router = APIRouter()


@router.get(P + "/merge_requests/{iid}/approvals")
def approvals(pid: str, iid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    with gl.store.lock:
        return gl.approvals_json(p, gl.mr(p, iid), user["id"])


@router.get(P + "/merge_requests/{iid}/approval_state")
def approval_state(pid: str, iid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    with gl.store.lock:
        return gl.approval_state_json(p, gl.mr(p, iid))


@router.post(P + "/merge_requests/{iid}/approve", status_code=201)
def approve(pid: str, iid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    with gl.store.lock:
        mr = gl.mr(p, iid)
        gl.check_sha(p, mr, params)
        # GitLab's ApprovalService refuses (the API answers 401): the author (author approval is off by default),
        # a user who already approved, a merge request that is not open.
        if mr["state"] != "opened" or user["id"] == mr["author_id"] or user["id"] in gl.approvers(p, mr):
            raise ApiError(401, "401 Unauthorized")
        head = gl.head(p, mr)
        mr["approvals"] = [a for a in mr["approvals"] if a["sha"] == head]
        mr["approvals"].append({"user_id": user["id"], "sha": head, "at": ts(gl.sb.clock())})
        left = gl.status(p, mr)["approvals_left"]
        gl.emit(p, mr, "approved" if left == 0 else "approval", user["id"])
        gl.store.save()
        return gl.approvals_json(p, mr, user["id"])


@router.post(P + "/merge_requests/{iid}/unapprove", status_code=201)
def unapprove(pid: str, iid: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    with gl.store.lock:
        mr = gl.mr(p, iid)
        if user["id"] not in gl.approvers(p, mr):
            raise ApiError(404, "404 Not Found")
        was_approved = gl.status(p, mr)["approvals_left"] == 0
        mr["approvals"] = [a for a in mr["approvals"] if a["user_id"] != user["id"]]
        gl.emit(p, mr, "unapproved" if was_approved else "unapproval", user["id"])
        gl.store.save()
        return gl.approvals_json(p, mr, user["id"])
