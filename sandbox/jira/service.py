"""The Jira stand-in's state and rules: the issues in ``sb.store("jira")``, their JSON representations (per API
version), field edits and updates, comments, JQL search, and basic auth; its routers take it as ``J``."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from fixloop.sandbox.jira.adf import rich_text
from fixloop.sandbox.jira.jql import check_values, matches, parse_jql
from fixloop.sandbox.jira.wire import (
    BOT_ACCOUNT,
    EDITABLE,
    ISSUE_TYPES,
    LINK_TYPES,
    PREFIX,
    PROJECTS,
    STATUSES,
    VERSIONS,
    JiraError,
    error_body,
    jira_time,
)
from fixloop.sandbox.routes import service


class Jira:
    """One Jira site: project ``OPS``, its issues, links and counters."""

    def __init__(self, sb: Any) -> None:  # sb: fixloop.sandbox.app.Sandbox
        self.sb = sb
        self.store = sb.store("jira")
        with self.store.lock:
            for key, default in (("issues", {}), ("links", {}), ("counters", {}), ("keys", {})):
                self.store.data.setdefault(key, default)

    def guard(self, request: Request) -> Response | None:
        """Basic auth with ``jira_email`` / ``jira_api_token`` before routing; ``serverInfo`` and ``/browse/``
        answer anonymous callers (as Jira Cloud does). A refusal is Jira's 401."""
        header = request.headers.get("authorization", "")
        ok = False
        if header[:6].lower() == "basic ":
            try:
                email, _, token = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                email = token = ""
            creds = self.sb.credentials
            ok = secrets.compare_digest(email.encode(), creds.jira_email.encode()) & secrets.compare_digest(
                token.encode(), creds.jira_api_token.get_secret_value().encode()
            )
        anonymous_ok = not header and (request.url.path.endswith("/serverInfo") or "/browse/" in request.url.path)
        if not ok and not anonymous_ok:
            return JSONResponse(
                error_body(["Client must be authenticated to access this resource."]),
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="protected-area"',
                         "X-Seraph-LoginReason": "AUTHENTICATED_FAILED"},
            )
        return None

    def next_id(self, kind: str, start: int = 10000) -> int:
        n = self.store.data["counters"].get(kind, start - 1) + 1
        self.store.data["counters"][kind] = n
        return n

    def url(self, path: str) -> str:
        return self.sb.url(PREFIX, path)

    def api(self, ver: str, path: str) -> str:
        return self.url(f"/rest/api/{'2' if ver == 'latest' else ver}{path}")

    def version(self, ver: str) -> str:
        if ver not in VERSIONS:
            raise JiraError(404, "Not Found")
        return ver

    def find(self, key: str) -> dict[str, Any]:
        issues = self.store.data["issues"]
        k = self.store.data["keys"].get(key) or self.store.data["keys"].get(key.upper())
        if k is None or k not in issues:
            raise JiraError(404, "Issue does not exist or you do not have permission to see it.")
        return issues[k]

    def avatars(self, kind: str) -> dict[str, str]:
        return {f"{n}x{n}": self.url(f"/images/avatars/{kind}-{n}.png") for n in (48, 24, 16, 32)}

    def user(self) -> dict[str, Any]:
        return {
            "self": self.url(f"/rest/api/2/user?accountId={BOT_ACCOUNT}"), "accountId": BOT_ACCOUNT,
            "emailAddress": self.sb.credentials.jira_email, "avatarUrls": self.avatars("user"),
            "displayName": "fixloop bot", "active": True, "timeZone": "Etc/UTC", "accountType": "atlassian",
        }

    def project_json(self, ver: str, key: str, full: bool = False) -> dict[str, Any]:
        p = PROJECTS[key]
        out = {"self": self.api(ver, f"/project/{p['id']}"), "id": p["id"], "key": key, "name": p["name"],
               "projectTypeKey": "software", "simplified": True, "avatarUrls": self.avatars("project")}
        if full:
            out |= {"description": "", "lead": self.user(), "style": "next-gen", "isPrivate": False,
                    "issueTypes": [self.issue_type_json(ver, t) for t in ISSUE_TYPES]}
        return out

    def issue_type_json(self, ver: str, tid: str) -> dict[str, Any]:
        t = ISSUE_TYPES[tid]
        return {"self": self.api(ver, f"/issuetype/{tid}"), "id": tid, "description": t["description"],
                "iconUrl": self.url(f"/images/icons/issuetypes/{t['name'].lower()}.svg"), "name": t["name"],
                "subtask": False, "avatarId": int(tid), "hierarchyLevel": t["hierarchyLevel"]}

    def status_json(self, ver: str, sid: str) -> dict[str, Any]:
        name, cid, ckey, color, cname = STATUSES[sid]
        return {"self": self.api(ver, f"/status/{sid}"), "description": "",
                "iconUrl": self.url("/images/icons/status.png"), "name": name, "id": sid,
                "statusCategory": {"self": self.api(ver, f"/statuscategory/{cid}"), "id": cid, "key": ckey,
                                   "colorName": color, "name": cname}}

    def link_type_json(self, ver: str, tid: str) -> dict[str, Any]:
        return {"id": tid, **LINK_TYPES[tid], "self": self.api(ver, f"/issueLinkType/{tid}")}

    def comment_json(self, ver: str, issue: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
        return {"self": self.api(ver, f"/issue/{issue['id']}/comment/{c['id']}"), "id": c["id"], "author": self.user(),
                "body": c["adf"] if ver == "3" else c["text"], "updateAuthor": self.user(), "created": c["created"],
                "updated": c["updated"], "jsdPublic": True}

    def linked_issue_json(self, ver: str, other: dict[str, Any]) -> dict[str, Any]:
        return {"id": other["id"], "key": other["key"], "self": self.api(ver, f"/issue/{other['id']}"),
                "fields": {"summary": other["summary"], "status": self.status_json(ver, other["status"]),
                           "priority": self.priority_json(ver),
                           "issuetype": self.issue_type_json(ver, other["issuetype"])}}

    def priority_json(self, ver: str) -> dict[str, Any]:
        return {"self": self.api(ver, "/priority/3"), "iconUrl": self.url("/images/icons/priorities/medium.svg"),
                "name": "Medium", "id": "3"}

    def issue_json(self, ver: str, issue: dict[str, Any], wanted: set[str] | None = None) -> dict[str, Any]:
        links = []
        for lid in issue["links"]:
            link = self.store.data["links"][lid]
            outward = link["inward"] == issue["id"]  # this issue is the subject: "<this> blocks <other>"
            other = self.store.data["issues"][link["outward" if outward else "inward"]]
            links.append({"id": lid, "self": self.api(ver, f"/issueLink/{lid}"),
                          "type": self.link_type_json(ver, link["type"]),
                          ("outwardIssue" if outward else "inwardIssue"): self.linked_issue_json(ver, other)})
        comments = [self.comment_json(ver, issue, c) for c in issue["comments"]]
        resolution = issue.get("resolution")
        desc = issue.get("description")
        fields = {
            "summary": issue["summary"],
            "description": (issue["description_adf"] if ver == "3" else desc) if desc is not None else None,
            "labels": list(issue["labels"]),
            "status": self.status_json(ver, issue["status"]),
            "statuscategorychangedate": issue["status_changed"],
            "issuetype": self.issue_type_json(ver, issue["issuetype"]),
            "project": self.project_json(ver, issue["project"]),
            "priority": self.priority_json(ver),
            "resolution": {"self": self.api(ver, "/resolution/10000"), "id": "10000", "description": "Work has been "
                           "completed on this issue.", "name": resolution} if resolution else None,
            "resolutiondate": issue.get("resolutiondate"),
            "created": issue["created"],
            "updated": issue["updated"],
            "assignee": None, "reporter": self.user(), "creator": self.user(),
            "issuelinks": links,
            "comment": {"comments": comments, "self": self.api(ver, f"/issue/{issue['id']}/comment"),
                        "maxResults": len(comments), "total": len(comments), "startAt": 0},
            "watches": {"self": self.api(ver, f"/issue/{issue['key']}/watchers"), "watchCount": 1, "isWatching": True},
            "votes": {"self": self.api(ver, f"/issue/{issue['key']}/votes"), "votes": 0, "hasVoted": False},
            "lastViewed": None, "environment": None, "duedate": None,
            "components": [], "fixVersions": [], "versions": [], "subtasks": [], "attachment": [],
        }
        if wanted is not None and not wanted & {"*all", "*navigable"}:
            fields = {k: v for k, v in fields.items() if k in wanted}
        return {"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
                "id": issue["id"], "self": self.api(ver, f"/issue/{issue['id']}"), "key": issue["key"],
                "fields": fields}

    def wanted_fields(self, request: Request, body: dict[str, Any] | None = None) -> set[str] | None:
        raw = (body or {}).get("fields") if body is not None else request.query_params.getlist("fields")
        names = {f.strip() for item in (raw or []) for f in str(item).split(",") if f.strip()}
        return {n for n in names if not n.startswith("-")} or None

    def set_fields(self, ver: str, issue: dict[str, Any], fields: dict[str, Any], errors: dict[str, str]) -> None:
        for name, value in fields.items():
            if name in ("project", "issuetype"):
                continue
            if name not in EDITABLE:
                errors[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
            elif name == "summary":
                if not isinstance(value, str) or not value.strip():
                    errors["summary"] = "You must specify a summary of the issue."
                elif "\n" in value or len(value) > 255:
                    errors["summary"] = "Summary must be less than 255 characters and on one line."
                else:
                    issue["summary"] = value
            elif name == "description":
                try:
                    pair = rich_text(value, ver, "description")
                except JiraError as e:
                    errors |= e.errors
                    continue
                issue["description"], issue["description_adf"] = pair if pair else (None, None)
            elif name == "labels":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    errors["labels"] = "Operation value must be a list of strings"
                else:
                    issue["labels"] = []
                    self.add_labels(issue, value, errors)

    def add_labels(self, issue: dict[str, Any], labels: list[str], errors: dict[str, str]) -> None:
        for label in labels:
            if not label or re.search(r"\s", label) or len(label) > 255:
                errors["labels"] = f"The label '{label}' contains spaces which is invalid."
            elif label not in issue["labels"]:
                issue["labels"].append(label)

    def apply_update(self, ver: str, issue: dict[str, Any], update: dict[str, Any], errors: dict[str, str]) -> None:
        for name, ops in update.items():
            if name not in EDITABLE and name != "comment":
                errors[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                continue
            for op in ops if isinstance(ops, list) else []:
                for verb, arg in op.items():
                    if name == "labels" and verb == "add":
                        self.add_labels(issue, [arg], errors)
                    elif name == "labels" and verb == "remove":
                        issue["labels"] = [label for label in issue["labels"] if label != arg]
                    elif name == "comment" and verb == "add":
                        self.add_comment(ver, issue, (arg or {}).get("body"))
                    elif verb == "set":
                        self.set_fields(ver, issue, {name: arg}, errors)
                    else:
                        errors[name] = f"Operation '{verb}' is not supported for field '{name}'."

    def add_comment(self, ver: str, issue: dict[str, Any], body: Any) -> dict[str, Any]:
        pair = rich_text(body, ver, "comment")
        if pair is None or not pair[0].strip():
            raise JiraError(400, errors={"comment": "Comment body can not be empty!"})
        now = jira_time(self.sb.clock())
        c = {"id": str(self.next_id("comment")), "text": pair[0], "adf": pair[1], "created": now, "updated": now}
        issue["comments"].append(c)
        issue["updated"] = now
        return c

    def search(self, jql: str) -> list[dict[str, Any]]:
        """The stored issues matching ``jql``, in its order (default: newest first). Hold ``self.store.lock``."""
        clauses, order = parse_jql(jql or "")
        check_values(clauses)
        found = [i for i in self.store.data["issues"].values() if matches(i, clauses)]
        for field, desc in reversed(order or [("created", True)]):
            sort_key = {"created": lambda i: int(i["id"]), "updated": lambda i: (i["updated"], int(i["id"])),
                        "summary": lambda i: i["summary"].casefold()}.get(
                field, lambda i: (i["project"], int(i["key"].rsplit("-", 1)[1])))
            found.sort(key=sort_key, reverse=desc)
        return found


J = Depends(service)
