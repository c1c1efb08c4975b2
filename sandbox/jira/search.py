"""JQL search: the enhanced ``GET|POST /search/jql`` (``nextPageToken`` pages, no fields unless asked) and the
classic ``GET|POST /search`` (``startAt`` pages)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import API, JiraError

router = APIRouter()


def param(jira: Jira, request: Request, body: dict[str, Any] | None, name: str, default: Any = None) -> Any:
    return (body or {}).get(name, default) if body is not None else request.query_params.get(name, default)


def page_size(jira: Jira, raw: Any, default: int = 50) -> int:
    try:
        return max(0, min(int(raw if raw is not None else default), 5000))
    except (TypeError, ValueError):
        raise JiraError(400, "maxResults must be a number") from None


def enhanced_search(jira: Jira, ver: str, request: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    jira.version(ver)
    token = param(jira, request, body, "nextPageToken")
    start = int(token) if token and str(token).isdigit() else 0
    size = page_size(jira, param(jira, request, body, "maxResults"))
    with jira.store.lock:
        issues = jira.search(param(jira, request, body, "jql", ""))
        # unlike /search, the enhanced search returns no fields unless asked (``fields=*all`` or names)
        wanted = jira.wanted_fields(request, body) or set()
        page = [jira.issue_json(ver, i, wanted) for i in issues[start : start + size]]
    out: dict[str, Any] = {"expand": "schema,names", "issues": page, "isLast": start + size >= len(issues)}
    if not out["isLast"]:
        out["nextPageToken"] = str(start + size)
    return out


@router.get(API + "/search/jql")
def search_jql(ver: str, request: Request, jira: Jira = J) -> dict[str, Any]:
    return enhanced_search(jira, ver, request, None)


@router.post(API + "/search/jql")
def search_jql_post(
    ver: str, request: Request, body: Annotated[dict[str, Any], Body()], jira: Jira = J
) -> dict[str, Any]:
    return enhanced_search(jira, ver, request, body)


def classic_search(jira: Jira, ver: str, request: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    jira.version(ver)
    start = page_size(jira, param(jira, request, body, "startAt", 0))
    size = page_size(jira, param(jira, request, body, "maxResults"))
    with jira.store.lock:
        issues = jira.search(param(jira, request, body, "jql", ""))
        page = [jira.issue_json(ver, i, jira.wanted_fields(request, body)) for i in issues[start : start + size]]
    return {"expand": "schema,names", "startAt": start, "maxResults": size, "total": len(issues), "issues": page}


@router.get(API + "/search")
def search_classic(ver: str, request: Request, jira: Jira = J) -> dict[str, Any]:
    return classic_search(jira, ver, request, None)


@router.post(API + "/search")
def search_classic_post(
    ver: str, request: Request, body: Annotated[dict[str, Any], Body()], jira: Jira = J
) -> dict[str, Any]:
    return classic_search(jira, ver, request, body)
