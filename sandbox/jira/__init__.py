"""A Jira Cloud stand-in: the REST API v2/v3 subset fixloop and the ``jira`` library use, under ``/jira``.

``jira.JIRA(server=f"{base}/jira", basic_auth=(email, api_token))`` works unmodified. The server reports
``deploymentType: Cloud``, so the library searches with the enhanced ``GET|POST /rest/api/2/search/jql``
(``nextPageToken`` pages); the older ``/search`` (``startAt`` pages) is served too. Every path exists under
``/rest/api/2``, ``/rest/api/3`` and ``/rest/api/latest``; v3 differs in rich text only: ``description`` and comment
bodies are Atlassian Document Format (developer.atlassian.com/cloud/jira/platform/apis/document/structure/),
v2 takes and returns plain text. Both forms are stored, so either version reads what the other wrote.

Seeded: project ``OPS`` ("Operations", id 10000) with issue types Task and Bug, the statuses To Do / In Progress /
Done (with their ``statusCategory``), priority Medium, link types Blocks and Relates. Workflow (transition ids as in a
Jira Cloud team-managed project): To Do -> In Progress ("21") or Done ("31"); In Progress -> To Do ("11") or Done
("31"); Done -> To Do ("Reopen", "41"). Done sets ``resolution``; Reopen clears it.

JQL: ``AND``-joined clauses on ``project``, ``key``/``issuekey``, ``labels``, ``status``, ``statusCategory``,
``issuetype``/``type``, ``resolution`` (``=``, ``!=``, ``in``, ``not in``, ``is [not] empty``) and ``summary``/
``text`` (``~``, ``!~``: case-insensitive substring), then ``ORDER BY`` created/updated/key/summary ``ASC|DESC``.
Anything else (``OR``, parentheses, functions, other fields) is a 400 in Jira's shape, naming what is unsupported.

Auth is HTTP basic with ``sb.credentials.jira_email`` and ``jira_api_token``; ``serverInfo`` also answers anonymous
callers (as Jira Cloud does). Errors are ``{"errorMessages": [...], "errors": {field: message}}`` with Jira's
statuses and (where known) its messages. State is ``sb.store("jira")``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fixloop.sandbox.jira import browse, comments, instance, issues, links, properties, search, transitions
from fixloop.sandbox.jira.service import Jira
from fixloop.sandbox.jira.wire import JiraError, error_body
from fixloop.sandbox.routes import stand_in

ROUTERS = (instance, issues, search, comments, transitions, links, properties, browse)


def _invalid(exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    if any(tuple(e.get("loc", ()))[:2] == ("path", "ver") for e in errs):
        return JSONResponse(error_body(["Not Found"]), status_code=404)
    if any(e.get("loc", ("",))[0] == "body" for e in errs):
        return JSONResponse(error_body(["Invalid request payload. Refer to the REST API documentation and try "
                                        "again."]), status_code=400)
    return JSONResponse(error_body([f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs]), 400)


ERRORS = {
    JiraError: lambda exc: JSONResponse(error_body(exc.messages, exc.errors), status_code=exc.status),
    StarletteHTTPException: lambda exc: JSONResponse(error_body([str(exc.detail)]), status_code=exc.status_code),
    RequestValidationError: _invalid,
    Exception: lambda exc: JSONResponse(error_body(["Internal server error"]), status_code=500),
}


def build(sb: object) -> FastAPI:
    """The Jira stand-in (see the module docstring); mounted at ``/jira`` by ``fixloop.sandbox.app``."""
    jira = Jira(sb)
    return stand_in("sandbox jira", jira, ERRORS, [m.router for m in ROUTERS], guard=jira.guard)
