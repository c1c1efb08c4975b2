"""CI pipelines (docs.gitlab.com/api/pipelines/, docs.gitlab.com/api/jobs/): ``GET /projects/:id/pipelines``
(``sha``, ``ref``, ``status``, ``source``, ``order_by``, ``sort``; paginated), ``GET /projects/:id/pipelines/
:pipeline_id`` and ``GET /projects/:id/pipelines/:pipeline_id/jobs``, from the CI stand-in
(``fixloop.sandbox.gitlab.ci``); an unknown pipeline answers 404 ``{"message": "404 Not found"}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fixloop.sandbox.gitlab.service import GL, GitLab, P, Params, User
from fixloop.sandbox.gitlab.wire import paginate

router = APIRouter()


@router.get(P + "/pipelines")
def pipelines(request: Request, pid: str, params: dict = Params, user: dict = User, gl: GitLab = GL) -> JSONResponse:
    p = gl.project(pid)
    gl.ci.advance()
    return paginate(request, gl.ci.listed(p, params), params)


@router.get(P + "/pipelines/{pipeline_id}")
def pipeline(pid: str, pipeline_id: str, user: dict = User, gl: GitLab = GL) -> dict[str, Any]:
    p = gl.project(pid)
    gl.ci.advance()
    with gl.ci.store.lock:
        return gl.ci.pipeline_json(p, gl.ci.find(p, pipeline_id))


@router.get(P + "/pipelines/{pipeline_id}/jobs")
def pipeline_jobs(
    request: Request, pid: str, pipeline_id: str, params: dict = Params, user: dict = User, gl: GitLab = GL
) -> JSONResponse:
    p = gl.project(pid)
    gl.ci.advance()
    with gl.ci.store.lock:
        jobs = gl.ci.jobs_json(p, gl.ci.find(p, pipeline_id))
    scope = params.get("scope")
    if scope:
        wanted = set(scope if isinstance(scope, list) else [scope])
        jobs = [j for j in jobs if j["status"] in wanted]
    return paginate(request, jobs, params)
