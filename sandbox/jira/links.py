"""Issue links (``POST /issueLink``) and remote links (``GET|POST /issue/:key/remotelink``, upsert by ``globalId``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse, Response

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import API, LINK_TYPES, JiraError, jira_time

router = APIRouter()


@router.post(API + "/issueLink", status_code=201)
def link_issues(ver: str, body: Annotated[dict[str, Any], Body()], jira: Jira = J) -> Response:
    jira.version(ver)
    t = body.get("type") or {}
    tid = next((k for k, v in LINK_TYPES.items() if str(t.get("id", "")) == k or t.get("name") == v["name"]),
               None)
    if tid is None:
        raise JiraError(404, f"No issue link type with name '{t.get('name')}' found.")
    with jira.store.lock:
        ends = []
        for side in ("inwardIssue", "outwardIssue"):
            ref = body.get(side) or {}
            ends.append(jira.find(str(ref.get("key") or ref.get("id") or "")))
        if body.get("comment"):
            jira.add_comment(ver, ends[0], body["comment"].get("body"))
        lid = str(jira.next_id("link"))
        jira.store.data["links"][lid] = {"type": tid, "inward": ends[0]["id"], "outward": ends[1]["id"]}
        for end in ends:
            end["links"].append(lid)
        jira.store.save()
    return Response(status_code=201)


def remote_json(jira: Jira, ver: str, issue: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
    return {"id": link["id"], "self": jira.api(ver, f"/issue/{issue['key']}/remotelink/{link['id']}"),
            **{k: link[k] for k in ("globalId", "application", "relationship") if link.get(k) is not None},
            "object": link["object"]}


@router.get(API + "/issue/{key}/remotelink")
def list_remote_links(ver: str, key: str, globalId: str | None = None, jira: Jira = J) -> Any:
    with jira.store.lock:
        issue = jira.find(key)
        links = [remote_json(jira, jira.version(ver), issue, r) for r in issue["remotelinks"]]
    if globalId is None:
        return links
    for link in links:
        if link.get("globalId") == globalId:
            return link
    raise JiraError(404, "No remote link with the given globalId was found.")


@router.post(API + "/issue/{key}/remotelink")
def add_remote_link(ver: str, key: str, body: Annotated[dict[str, Any], Body()], jira: Jira = J) -> JSONResponse:
    jira.version(ver)
    obj = body.get("object")
    if not isinstance(obj, dict) or not obj.get("url") or not obj.get("title"):
        missing = {f: f"'{f}' is required." for f in ("url", "title") if not (obj or {}).get(f)}
        raise JiraError(400, errors=missing or {"object": "'object' is required."})
    with jira.store.lock:
        issue = jira.find(key)
        gid = body.get("globalId")
        link = next((r for r in issue["remotelinks"] if gid and r.get("globalId") == gid), None)
        status = 200 if link else 201
        if link is None:
            link = {"id": jira.next_id("remotelink")}
            issue["remotelinks"].append(link)
        link.update(globalId=gid, application=body.get("application"), relationship=body.get("relationship"),
                    object=obj)
        issue["updated"] = jira_time(jira.sb.clock())
        jira.store.save()
        return JSONResponse({"id": link["id"], "self": remote_json(jira, ver, issue, link)["self"]}, status)
