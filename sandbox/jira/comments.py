"""Issue comments: list, add, get one (plain text in v2, ADF in v3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import API, JiraError

router = APIRouter()


@router.get(API + "/issue/{key}/comment")
def list_comments(ver: str, key: str, startAt: int = 0, maxResults: int = 5000, jira: Jira = J) -> dict[str, Any]:
    with jira.store.lock:
        issue = jira.find(key)
        comments = [jira.comment_json(jira.version(ver), issue, c) for c in issue["comments"]]
    return {"startAt": startAt, "maxResults": maxResults, "total": len(comments),
            "comments": comments[startAt : startAt + maxResults]}


@router.post(API + "/issue/{key}/comment", status_code=201)
def create_comment(ver: str, key: str, body: Annotated[dict[str, Any], Body()], jira: Jira = J) -> dict[str, Any]:
    with jira.store.lock:
        issue = jira.find(key)
        c = jira.add_comment(jira.version(ver), issue, body.get("body"))
        jira.store.save()
        return jira.comment_json(ver, issue, c)


@router.get(API + "/issue/{key}/comment/{cid}")
def get_comment(ver: str, key: str, cid: str, jira: Jira = J) -> dict[str, Any]:
    with jira.store.lock:
        issue = jira.find(key)
        for c in issue["comments"]:
            if c["id"] == cid:
                return jira.comment_json(jira.version(ver), issue, c)
    raise JiraError(404, "Can not find a comment for the id: " + cid + ".")
