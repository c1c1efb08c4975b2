"""The instance: ``serverInfo`` (anonymous too), ``myself``, the session, application links, fields, projects,
issue types and issue link types."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import (
    API,
    BOT_ACCOUNT,
    EDITABLE,
    ISSUE_TYPES,
    LINK_TYPES,
    PROJECTS,
    JiraError,
    jira_time,
)

router = APIRouter()


@router.get(API + "/serverInfo")
def server_info(ver: str, jira: Jira = J) -> dict[str, Any]:
    jira.version(ver)
    return {"baseUrl": jira.url(""), "displayUrl": jira.url(""), "version": "1001.0.0-SNAPSHOT",
            "versionNumbers": [1001, 0, 0], "deploymentType": "Cloud", "buildNumber": 100282,
            "buildDate": "2025-01-06T00:00:00.000+0000", "serverTime": jira_time(jira.sb.clock()),
            "scmInfo": "0" * 40, "serverTitle": "Jira (fixloop sandbox)", "defaultLocale": {"locale": "en_US"}}


@router.get(API + "/myself")
def myself(ver: str, jira: Jira = J) -> dict[str, Any]:
    jira.version(ver)
    return jira.user() | {"locale": "en_US", "groups": {"size": 1, "items": []},
                     "applicationRoles": {"size": 1, "items": []}}


@router.get("/rest/auth/1/session")
def session(jira: Jira = J) -> dict[str, Any]:
    return {"self": jira.url("/rest/api/latest/user?accountId=" + BOT_ACCOUNT), "name": jira.sb.credentials.jira_email,
            "loginInfo": {"failedLoginCount": 0, "loginCount": 1}}


@router.get("/rest/applinks/latest/listApplicationlinks")
def application_links(jira: Jira = J) -> dict[str, Any]:
    return {"list": []}


@router.get(API + "/field")
def list_fields(ver: str, jira: Jira = J) -> list[dict[str, Any]]:
    jira.version(ver)
    names = {"summary": "Summary", "description": "Description", "labels": "Labels", "status": "Status",
             "issuetype": "Issue Type", "project": "Project", "priority": "Priority", "resolution": "Resolution",
             "created": "Created", "updated": "Updated", "issuelinks": "Linked Issues", "comment": "Comment",
             "assignee": "Assignee", "reporter": "Reporter", "issuekey": "Key"}
    return [{"id": k, "key": k, "name": n, "custom": False, "orderable": k in EDITABLE, "navigable": True,
             "searchable": True, "clauseNames": [k] + (["type"] if k == "issuetype" else [])}
            for k, n in names.items()]


@router.get(API + "/project")
def projects(ver: str, jira: Jira = J) -> list[dict[str, Any]]:
    return [jira.project_json(jira.version(ver), k) for k in PROJECTS]


@router.get(API + "/project/{key}")
def project(ver: str, key: str, jira: Jira = J) -> dict[str, Any]:
    for k, p in PROJECTS.items():
        if key.upper() == k or key == p["id"]:
            return jira.project_json(jira.version(ver), k, full=True)
    raise JiraError(404, f"No project could be found with key '{key}'.")


@router.get(API + "/issuetype")
def issue_types(ver: str, jira: Jira = J) -> list[dict[str, Any]]:
    return [jira.issue_type_json(jira.version(ver), t) for t in ISSUE_TYPES]


@router.get(API + "/issueLinkType")
def issue_link_types(ver: str, jira: Jira = J) -> dict[str, Any]:
    return {"issueLinkTypes": [jira.link_type_json(jira.version(ver), t) for t in LINK_TYPES]}
