"""``GET /browse/:key``: an issue's page (the ``url`` fixloop records for it), for a person: key, summary, type,
status, resolution, labels, dates, the description and comments, issue links and remote links (the merge requests
fixloop links). Anonymous, as Jira Cloud's guard lets ``/browse/`` through to its login page (here: to the issue).

Wiki text (the description and comments as the v2 API stores them) is shown as Jira shows its escapes, not its
markup: ``\\X`` reads as X, anything else as written, in preformatted text, HTML-escaped. A remote link's URL is a
link only when ``fixloop.sandbox.pages.safe_url`` allows it (relative or http/https/mailto), else text. An unknown
key is Jira's 404 as a page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import ISSUE_TYPES, LINK_TYPES, STATUSES, WIKI_ESCAPE, JiraError
from fixloop.sandbox.pages import page, safe_url

router = APIRouter()


def shown(text: str | None) -> str:
    """Wiki text as Jira shows it, as far as escapes go (``\\X`` is X): markup is not rendered, so fixloop's
    escaped text reads as the text it escapes, and anything else shows its raw markup. Not HTML-escaped: the
    template escapes it."""
    return WIKI_ESCAPE.sub(r"\1", text or "")


def _links(jira: Jira, issue: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for lid in issue["links"]:
        link = jira.store.data["links"][lid]
        outward = link["inward"] == issue["id"]  # this issue is the subject: "<this> blocks <other>"
        other = jira.store.data["issues"][link["outward" if outward else "inward"]]
        kind = LINK_TYPES[link["type"]]
        out.append({"verb": kind["outward" if outward else "inward"], "key": other["key"],
                    "url": jira.url(f"/browse/{other['key']}"), "summary": other["summary"],
                    "status": STATUSES[other["status"]][0]})
    return out


def _remote(link: dict[str, Any]) -> dict[str, Any]:
    obj = link.get("object") or {}
    url = str(obj.get("url") or "")
    return {"title": str(obj.get("title") or url), "url": url, "linked": safe_url(url),
            "summary": str(obj.get("summary") or ""), "relationship": str(link.get("relationship") or "")}


@router.get("/browse/{key}", response_class=HTMLResponse)
def browse(key: str, jira: Jira = J) -> HTMLResponse:
    """The issue's page (see the module docstring); 404 as a page for an unknown key."""
    with jira.store.lock:
        try:
            issue = jira.find(key)
        except JiraError as e:
            return page("error.html", e.status, site="Jira", home=None, message="; ".join(e.messages))
        view = {
            "key": issue["key"], "summary": issue["summary"], "type": ISSUE_TYPES[issue["issuetype"]]["name"],
            "status": STATUSES[issue["status"]][0], "resolution": issue.get("resolution"), "labels": issue["labels"],
            "created": issue["created"], "updated": issue["updated"], "description": shown(issue["description"]),
            "comments": [{"created": c["created"], "text": shown(c["text"])} for c in issue["comments"]],
            "links": _links(jira, issue), "remote": [_remote(r) for r in issue["remotelinks"]],
        }
    return page("jira_issue.html", site="Jira", home=None, issue=view)
