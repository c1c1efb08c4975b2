"""A GitLab stand-in on real git repositories: the REST API v4 subset fixloop and ``python-gitlab`` use, merge request
webhooks, and read-only ``git clone`` over smart HTTP, under ``/gitlab``.

``gitlab.Gitlab(url=f"{base}/gitlab", private_token=token)`` works unmodified (API at ``/gitlab/api/v4``), and
``git clone {base}/gitlab/<namespace>/<name>.git`` serves the bare repositories of ``sb.repos`` (upload-pack only:
nothing can be pushed over HTTP; every write goes through the API).

Served (GitLab REST v4 docs, docs.gitlab.com/api/): ``GET /version``, ``GET /user``, ``GET /users`` (``username``),
``GET /users/:id`` (with ``bot``); ``GET /groups/:id/members/all/:user_id`` (``GROUPS``: ``platform`` with every user,
``platform/reviewers`` with the reviewer only); ``GET /projects``, ``GET /projects/:id`` (numeric id or URL-encoded
``namespace%2Fname``), ``GET /projects/:id/approvals`` (the approval configuration: reset on push, no author
approval);
repository files (``GET|POST|PUT|DELETE .../repository/files/:file_path``, ``.../raw``), ``.../repository/tree``,
branches (list/get/create/delete), commits (create with ``actions``, list with ``path``/``since``/``until``,
get, ``diff``, ``merge_requests``, ``revert``),
``.../repository/compare``, ``.../repository/merge_base``; merge requests (create/list/get/update, ``changes``,
``diffs``, ``commits``, notes, ``approvals``, ``approval_state``, ``approve``, ``unapprove``, ``merge``); CI
pipelines of pushes to the default branch and their jobs (``fixloop.sandbox.gitlab.ci``: ``GET .../pipelines``
with ``sha``, ``.../pipelines/:id``, ``.../pipelines/:id/jobs``; a build pushes the next tag to the registry). Lists
page as GitLab does (``page``, ``per_page`` up to 100; ``X-Total``, ``X-Total-Pages``, ``X-Page``, ``X-Per-Page``,
``X-Next-Page``, ``X-Prev-Page`` and a ``Link`` header). Parameters are read from the query string and from a JSON or
form body.

Users: root (id 1, no token), the bot (id 2, ``sb.credentials.gitlab_bot_*``) and a reviewer (id 3,
``gitlab_reviewer_*``); ``PRIVATE-TOKEN`` or ``Authorization: Bearer``, else 401 ``{"message": "401 Unauthorized"}``.

Merge requests follow GitLab (Premium) defaults: one approval required, the author may not approve (401 as the
approval service refuses), approvals reset on push (an approval counts only for the head SHA it was given at), merge
method "merge commit". ``merge`` answers 405 when the MR is not open, a draft or not approved, 422 "Branch cannot be
merged" on a conflict, 409 when ``sha`` is not the head. Creating a second open MR for a source branch answers 409
``{"message": ["Another open merge request already exists for this source branch: !N"]}``.

Every ref update publishes ``"git.push"`` on ``sb.bus``. With ``sb.config.gitlab_webhook_url`` set, merge request
events (``open``, ``update`` incl. pushes with ``oldrev``, ``approval``/``approved``, ``unapproval``/``unapproved``,
``merge``, ``close``, ``reopen``) are POSTed as GitLab's "Merge Request Hook" from a background thread; each delivery
is recorded under ``hook_deliveries`` in ``sb.store("gitlab")`` (state of projects, MRs, notes and approvals too).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fixloop.sandbox.app import Sandbox
from fixloop.sandbox.gitlab import (
    approvals,
    branches,
    commits,
    files,
    merge_requests,
    notes,
    pipelines,
    projects,
    users,
    web,
)
from fixloop.sandbox.gitlab.git import RawPath, git_route
from fixloop.sandbox.gitlab.service import GitLab
from fixloop.sandbox.gitlab.wire import ApiError
from fixloop.sandbox.repos import RepoError
from fixloop.sandbox.routes import stand_in

ROUTERS = (users, projects, files, branches, commits, merge_requests, notes, approvals, pipelines, web)


def error(status: int, message: object, key: str = "message") -> JSONResponse:
    """GitLab's error answer: ``{"message": ...}``, or ``{"error": ...}`` for parameter errors."""
    return JSONResponse({key: message}, status_code=status)


def _invalid(exc: RequestValidationError) -> JSONResponse:
    names = [str(e.get("loc", ["", "?"])[-1]) for e in exc.errors()]
    return error(400, ", ".join(f"{n} is invalid" for n in names), key="error")


ERRORS = {
    ApiError: lambda exc: error(exc.status, exc.message, exc.key),
    RepoError: lambda exc: error(exc.status, exc.message),
    StarletteHTTPException: lambda exc: error(
        exc.status_code,
        {404: "404 Not Found", 405: "405 Method Not Allowed"}.get(exc.status_code, str(exc.detail)),
        key="error",
    ),
    RequestValidationError: _invalid,
    Exception: lambda exc: error(500, "500 Internal Server Error"),
}


def build(sb: Sandbox) -> FastAPI:
    """The GitLab stand-in (see the module docstring); mounted at ``/gitlab`` by ``fixloop.sandbox.app``."""
    gl = GitLab(sb)
    app = stand_in("sandbox GitLab", gl, ERRORS, [m.router for m in ROUTERS])
    app.add_middleware(RawPath)
    app.router.routes.append(git_route(str(gl.repos.root)))  # after every API route
    return app
