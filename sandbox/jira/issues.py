"""Issues: create (``POST /issue``), get (``fields``), edit (``PUT``: ``fields`` and ``update`` operations)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import API, ISSUE_TYPES, PROJECTS, JiraError, jira_time

router = APIRouter()


@router.post(API + "/issue", status_code=201)
def create_issue(ver: str, body: Annotated[dict[str, Any], Body()], jira: Jira = J) -> dict[str, Any]:
    jira.version(ver)
    fields = body.get("fields") or {}
    errors: dict[str, str] = {}
    p = fields.get("project") or {}
    pkey = next((k for k, v in PROJECTS.items() if isinstance(p, dict) and
                 (str(p.get("key", "")).upper() == k or str(p.get("id", "")) == v["id"])), None)
    if pkey is None:
        errors["project"] = "Specify a valid project ID or key"
    t = fields.get("issuetype") or {}
    tid = next((k for k, v in ISSUE_TYPES.items() if isinstance(t, dict) and
                (str(t.get("id", "")) == k or str(t.get("name", "")).casefold() == v["name"].casefold())), None)
    if tid is None:
        errors["issuetype"] = "Specify an issue type" if not t else "Specify a valid issue type"
    if not fields.get("summary"):
        errors["summary"] = "You must specify a summary of the issue."
    now = jira_time(jira.sb.clock())
    issue: dict[str, Any] = {"project": pkey, "issuetype": tid, "status": "10000", "summary": "",
                             "description": None, "description_adf": None, "labels": [], "comments": [],
                             "links": [], "remotelinks": [], "properties": {}, "created": now, "updated": now,
                             "status_changed": now, "resolution": None, "resolutiondate": None}
    with jira.store.lock:
        jira.set_fields(ver, issue, fields, errors)
        jira.apply_update(ver, issue, body.get("update") or {}, errors)
        if errors:
            raise JiraError(400, errors=errors)
        issue["id"] = str(jira.next_id("issue"))
        issue["key"] = f"{pkey}-{jira.next_id('key:' + str(pkey), 1)}"
        jira.store.data["issues"][issue["id"]] = issue
        jira.store.data["keys"][issue["key"]] = jira.store.data["keys"][issue["id"]] = issue["id"]
        jira.store.save()
    return {"id": issue["id"], "key": issue["key"], "self": jira.api(ver, f"/issue/{issue['id']}")}


@router.get(API + "/issue/{key}")
def get_issue(ver: str, key: str, request: Request, jira: Jira = J) -> dict[str, Any]:
    with jira.store.lock:
        return jira.issue_json(jira.version(ver), jira.find(key), jira.wanted_fields(request))


@router.put(API + "/issue/{key}", status_code=204)
def edit_issue(ver: str, key: str, body: Annotated[dict[str, Any], Body()], jira: Jira = J) -> Response:
    jira.version(ver)
    with jira.store.lock:
        issue = jira.find(key)
        draft = {**issue, "labels": list(issue["labels"]), "comments": list(issue["comments"])}
        errors: dict[str, str] = {}
        jira.set_fields(ver, draft, body.get("fields") or {}, errors)
        jira.apply_update(ver, draft, body.get("update") or {}, errors)
        if errors:
            raise JiraError(400, errors=errors)
        draft["updated"] = jira_time(jira.sb.clock())
        issue.update(draft)
        jira.store.save()
    return Response(status_code=204)
