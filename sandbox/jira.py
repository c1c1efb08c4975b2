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

import base64
import html
import re
import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fixloop.sandbox.app import Sandbox

PREFIX = "/jira"
API = "/rest/api/{ver}"
VERSIONS = ("2", "3", "latest")

PROJECTS = {"OPS": {"id": "10000", "key": "OPS", "name": "Operations"}}
ISSUE_TYPES = {
    "10001": {"name": "Task", "description": "A small, distinct piece of work.", "hierarchyLevel": 0},
    "10002": {"name": "Bug", "description": "A problem or error.", "hierarchyLevel": 0},
}
# status id -> (name, statusCategory id, key, colorName, category name)
STATUSES = {
    "10000": ("To Do", 2, "new", "blue-gray", "To Do"),
    "3": ("In Progress", 4, "indeterminate", "yellow", "In Progress"),
    "10001": ("Done", 3, "done", "green", "Done"),
}
# transition id -> (name, to status id, from status ids)
TRANSITIONS = {
    "11": ("To Do", "10000", {"3"}),
    "21": ("In Progress", "3", {"10000"}),
    "31": ("Done", "10001", {"10000", "3"}),
    "41": ("Reopen", "10000", {"10001"}),
}
LINK_TYPES = {
    "10000": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
    "10003": {"name": "Relates", "inward": "relates to", "outward": "relates to"},
}
BOT_ACCOUNT = "712020:f1c0a1b0-0000-4000-8000-000000000001"  # the API user (Cloud accountId format)
_WIKI_ESCAPE = re.compile(r"\\([!\[\]^~+?%{}()*_|@-])")  # atlassian-renderer's escapable characters
EDITABLE = {"summary", "description", "labels", "priority", "assignee", "environment", "duedate"}


class JiraError(Exception):
    """An error answer in Jira's shape."""

    def __init__(self, status: int, messages: list[str] | str | None = None, errors: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.messages = [messages] if isinstance(messages, str) else list(messages or [])
        self.errors = errors or {}


def error_body(messages: list[str], errors: dict[str, str] | None = None) -> dict[str, Any]:
    return {"errorMessages": messages, "errors": errors or {}}


def jira_time(dt: datetime) -> str:
    """Jira's timestamp format: ``2020-12-03T14:05:20.974+0000``."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}" + dt.strftime("%z")


# ---- Atlassian Document Format <-> plain text ------------------------------------------------------------------


def text_to_adf(text: str) -> dict[str, Any]:
    """Paragraphs (split on blank lines) of text nodes, single newlines as ``hardBreak``."""
    content = []
    for para in (p for p in re.split(r"\n\s*\n", text) if p.strip()):
        nodes: list[dict[str, Any]] = []
        for i, line in enumerate(para.split("\n")):
            if i:
                nodes.append({"type": "hardBreak"})
            if line:
                nodes.append({"type": "text", "text": line})
        content.append({"type": "paragraph", "content": nodes})
    return {"type": "doc", "version": 1, "content": content}


def adf_to_text(node: Any) -> str:
    """The text of an ADF node: blocks separated by blank lines, list items by newlines."""
    if not isinstance(node, dict):
        return ""
    kind, attrs = node.get("type"), node.get("attrs") or {}
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "hardBreak":
        return "\n"
    if kind in ("mention", "emoji", "status"):
        return str(attrs.get("text", ""))
    if kind in ("inlineCard", "blockCard"):
        return str(attrs.get("url", ""))
    children = [adf_to_text(c) for c in node.get("content") or []]
    if kind in ("bulletList", "orderedList"):
        return "\n".join(f"- {c}" for c in children)
    if kind in ("doc", "blockquote", "panel", "listItem", "tableCell", "tableHeader", "expand"):
        return ("\n" if kind == "listItem" else "\n\n").join(c for c in children if c)
    return "".join(children)


def rich_text(value: Any, ver: str, field: str) -> tuple[str, dict[str, Any]] | None:
    """``(text, adf)`` of a description or comment body given in API ``ver``'s form; None for null."""
    if value is None:
        return None
    if ver == "3":
        if not isinstance(value, dict) or value.get("type") != "doc":
            raise JiraError(400, errors={field: "Operation value must be an Atlassian Document (see the Atlassian "
                                                "Document Format)"})
        return adf_to_text(value), value
    if not isinstance(value, str):
        raise JiraError(400, errors={field: "Operation value must be a string"})
    return value, text_to_adf(value)


# ---- JQL ----------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|(!=|!~|>=|<=|=|~|>|<)|([(),])|([^\s"\'(),=!~<>]+))'
)
_FIELDS = {"project", "key", "issuekey", "labels", "status", "statuscategory", "issuetype", "type", "resolution",
           "summary", "text"}
_JIRA_FIELDS = {"assignee", "reporter", "creator", "created", "updated", "resolved", "priority", "component",
                "fixversion", "affectedversion", "sprint", "due", "duedate", "description", "comment", "environment",
                "parent", "id", "watcher", "votes"}  # real JQL fields the sandbox does not search on
_ORDER = {"created", "updated", "key", "issuekey", "summary"}


def _jql_error(message: str) -> JiraError:
    return JiraError(400, f"Error in the JQL Query: {message}")


def tokenize(jql: str) -> list[tuple[str, str]]:
    """``(kind, text)`` pairs: ``str`` (quoted), ``op``, ``punct``, ``word``."""
    tokens, pos = [], 0
    while pos < len(jql):
        if not jql[pos:].strip():
            break
        m = _TOKEN.match(jql, pos)
        if not m:
            raise _jql_error(f"The character '{jql[pos:].strip()[0]}' is a reserved JQL character. (character "
                             f"{pos + 1})")
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        if quoted is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", quoted)))
        elif m.group(3):
            tokens.append(("op", m.group(3)))
        elif m.group(4):
            tokens.append(("punct", m.group(4)))
        else:
            tokens.append(("word", m.group(5)))
        pos = m.end()
    return tokens


def parse_jql(jql: str) -> tuple[list[tuple[str, str, Any]], list[tuple[str, bool]]]:
    """``(clauses, order)``: clauses ``(field, op, value)`` all ANDed; order ``(field, descending)``."""
    toks = tokenize(jql)
    i, clauses, order = 0, [], []

    def peek(k: int = 0) -> tuple[str, str]:
        return toks[i + k] if i + k < len(toks) else ("end", "")

    def kw(tok: tuple[str, str], *words: str) -> bool:
        return tok[0] == "word" and tok[1].upper() in words

    def value() -> str:
        nonlocal i
        kind, text = peek()
        if kind == "word" and peek(1) == ("punct", "("):
            raise _jql_error(f"the sandbox does not support JQL functions ('{text}()')")
        if kind not in ("str", "word") or kw(peek(), "AND", "OR", "ORDER"):
            raise _jql_error(f"Expecting a value but got '{text or '<end>'}'.")
        i += 1
        return text

    while peek()[0] != "end" and not kw(peek(), "ORDER"):
        if clauses:
            if kw(peek(), "OR", "NOT") or peek() == ("punct", "("):
                raise _jql_error(f"the sandbox supports only AND-joined clauses, not '{peek()[1]}'")
            if not kw(peek(), "AND"):
                raise _jql_error(f"Expecting either 'OR' or 'AND' but got '{peek()[1]}'.")
            i += 1
        kind, name = peek()
        if kind == "punct" or kw(peek(), "NOT"):
            raise _jql_error(f"the sandbox does not support '{name}' (no parentheses or NOT)")
        if kind not in ("word", "str"):
            raise _jql_error(f"Expecting a field name but got '{name or '<end>'}'.")
        field = name.lower()
        if field in _JIRA_FIELDS:
            supported = ", ".join(sorted(_FIELDS))
            raise _jql_error(f"the sandbox does not support the field '{name}' (supported: {supported})")
        if field not in _FIELDS:
            raise JiraError(400, f"Field '{name}' does not exist or you do not have permission to view it.")
        i += 1
        if kw(peek(), "IS"):
            i += 1
            negate = kw(peek(), "NOT")
            i += negate
            if not kw(peek(), "EMPTY", "NULL"):
                raise _jql_error(f"Expecting 'EMPTY' but got '{peek()[1]}'.")
            i += 1
            clauses.append((field, "is not empty" if negate else "is empty", None))
            continue
        if kw(peek(), "IN") or (kw(peek(), "NOT") and kw(peek(1), "IN")):
            op = "not in" if kw(peek(), "NOT") else "in"
            i += 2 if op == "not in" else 1
            if peek() != ("punct", "("):
                raise _jql_error(f"Expecting '(' but got '{peek()[1]}'.")
            i += 1
            values = [value()]
            while peek() == ("punct", ","):
                i += 1
                values.append(value())
            if peek() != ("punct", ")"):
                raise _jql_error(f"Expecting ')' but got '{peek()[1] or '<end>'}'.")
            i += 1
            clauses.append((field, op, values))
            continue
        kind, op = peek()
        if kind != "op":
            raise _jql_error(f"Expecting operator but got '{op or '<end>'}'.")
        if op not in ("=", "!=", "~", "!~"):
            raise _jql_error(f"the sandbox does not support the operator '{op}'")
        if (op in ("~", "!~")) != (field in ("summary", "text")):
            raise _jql_error(f"The operator '{op}' is not supported by the '{name}' field.")
        i += 1
        clauses.append((field, op, value()))
    if kw(peek(), "ORDER"):
        i += 1
        if not kw(peek(), "BY"):
            raise _jql_error(f"Expecting 'BY' but got '{peek()[1]}'.")
        i += 1
        while True:
            kind, name = peek()
            if kind not in ("word", "str") or name.lower() not in _ORDER:
                raise _jql_error(f"the sandbox can order only by {', '.join(sorted(_ORDER))}, not '{name}'")
            i += 1
            desc = False
            if kw(peek(), "ASC", "DESC"):
                desc = peek()[1].upper() == "DESC"
                i += 1
            order.append((name.lower(), desc))
            if peek() != ("punct", ","):
                break
            i += 1
    if peek()[0] != "end":
        raise _jql_error(f"Expecting end of query but got '{peek()[1]}'.")
    return clauses, order


def _issue_values(issue: dict[str, Any], field: str) -> list[str]:
    status = STATUSES[issue["status"]]
    return {
        "project": [issue["project"], PROJECTS[issue["project"]]["id"]],
        "key": [issue["key"], issue["id"]],
        "issuekey": [issue["key"], issue["id"]],
        "labels": issue["labels"],
        "status": [status[0], issue["status"]],
        "statuscategory": [status[4], status[2], str(status[1])],
        "issuetype": [ISSUE_TYPES[issue["issuetype"]]["name"], issue["issuetype"]],
        "type": [ISSUE_TYPES[issue["issuetype"]]["name"], issue["issuetype"]],
        "resolution": [issue["resolution"]] if issue.get("resolution") else [],
    }[field]


def matches(issue: dict[str, Any], clauses: list[tuple[str, str, Any]]) -> bool:
    for field, op, want in clauses:
        if field in ("summary", "text"):
            hay = issue["summary"] + ("\n" + (issue.get("description") or "") if field == "text" else "")
            found = str(want).strip("*").casefold() in hay.casefold()
            if found != (op == "~"):
                return False
            continue
        have = {v.casefold() for v in _issue_values(issue, field)}
        wants = {str(w).casefold() for w in (want if isinstance(want, list) else [want])}
        if field == "resolution" and wants & {"unresolved"}:
            wants, op = set(), {"=": "is empty", "!=": "is not empty"}.get(op, op)
        ok = {
            "=": bool(have & wants), "in": bool(have & wants),
            "!=": bool(have) and not have & wants, "not in": bool(have) and not have & wants,
            "is empty": not have, "is not empty": bool(have),
        }[op]
        if not ok:
            return False
    return True


def _check_values(clauses: list[tuple[str, str, Any]]) -> None:
    """Jira refuses a project or status that does not exist."""
    known = {
        "project": {k.casefold() for p in PROJECTS.values() for k in (p["key"], p["id"])},
        "status": {n.casefold() for sid, s in STATUSES.items() for n in (s[0], sid)},
    }
    for field, _op, want in clauses:
        for w in want if isinstance(want, list) else [want]:
            if field in known and str(w).casefold() not in known[field]:
                raise JiraError(400, f"The value '{w}' does not exist for the field '{field}'.")


# ---- the application ----------------------------------------------------------------------------------------------


def build(sb: Sandbox) -> FastAPI:
    app = FastAPI(title="sandbox jira", docs_url=None, redoc_url=None, openapi_url=None)
    store = sb.store("jira")
    with store.lock:
        for key, default in (("issues", {}), ("links", {}), ("counters", {}), ("keys", {})):
            store.data.setdefault(key, default)

    def next_id(kind: str, start: int = 10000) -> int:
        n = store.data["counters"].get(kind, start - 1) + 1
        store.data["counters"][kind] = n
        return n

    def url(path: str) -> str:
        return sb.url(PREFIX, path)

    def api(ver: str, path: str) -> str:
        return url(f"/rest/api/{'2' if ver == 'latest' else ver}{path}")

    # -- auth and errors --

    @app.middleware("http")
    async def basic_auth(request: Request, call_next):
        header = request.headers.get("authorization", "")
        ok = False
        if header[:6].lower() == "basic ":
            try:
                email, _, token = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                email = token = ""
            ok = secrets.compare_digest(email.encode(), sb.credentials.jira_email.encode()) & secrets.compare_digest(
                token.encode(), sb.credentials.jira_api_token.get_secret_value().encode()
            )
        anonymous_ok = not header and (request.url.path.endswith("/serverInfo") or "/browse/" in request.url.path)
        if not ok and not anonymous_ok:
            return JSONResponse(
                error_body(["Client must be authenticated to access this resource."]),
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="protected-area"',
                         "X-Seraph-LoginReason": "AUTHENTICATED_FAILED"},
            )
        return await call_next(request)

    @app.exception_handler(JiraError)
    def on_jira_error(_request: Request, exc: JiraError) -> JSONResponse:
        return JSONResponse(error_body(exc.messages, exc.errors), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body([str(exc.detail)]), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        if any(tuple(e.get("loc", ()))[:2] == ("path", "ver") for e in errs):
            return JSONResponse(error_body(["Not Found"]), status_code=404)
        if any(e.get("loc", ("",))[0] == "body" for e in errs):
            return JSONResponse(error_body(["Invalid request payload. Refer to the REST API documentation and try "
                                            "again."]), status_code=400)
        return JSONResponse(error_body([f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs]), 400)

    @app.exception_handler(Exception)
    def on_crash(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(["Internal server error"]), status_code=500)

    def version(ver: str) -> str:
        if ver not in VERSIONS:
            raise JiraError(404, "Not Found")
        return ver

    def find(key: str) -> dict[str, Any]:
        issues = store.data["issues"]
        k = store.data["keys"].get(key) or store.data["keys"].get(key.upper())
        if k is None or k not in issues:
            raise JiraError(404, "Issue does not exist or you do not have permission to see it.")
        return issues[k]

    # -- representations --

    def avatars(kind: str) -> dict[str, str]:
        return {f"{n}x{n}": url(f"/images/avatars/{kind}-{n}.png") for n in (48, 24, 16, 32)}

    def user() -> dict[str, Any]:
        return {
            "self": url(f"/rest/api/2/user?accountId={BOT_ACCOUNT}"), "accountId": BOT_ACCOUNT,
            "emailAddress": sb.credentials.jira_email, "avatarUrls": avatars("user"),
            "displayName": "fixloop bot", "active": True, "timeZone": "Etc/UTC", "accountType": "atlassian",
        }

    def project_json(ver: str, key: str, full: bool = False) -> dict[str, Any]:
        p = PROJECTS[key]
        out = {"self": api(ver, f"/project/{p['id']}"), "id": p["id"], "key": key, "name": p["name"],
               "projectTypeKey": "software", "simplified": True, "avatarUrls": avatars("project")}
        if full:
            out |= {"description": "", "lead": user(), "style": "next-gen", "isPrivate": False,
                    "issueTypes": [issue_type_json(ver, t) for t in ISSUE_TYPES]}
        return out

    def issue_type_json(ver: str, tid: str) -> dict[str, Any]:
        t = ISSUE_TYPES[tid]
        return {"self": api(ver, f"/issuetype/{tid}"), "id": tid, "description": t["description"],
                "iconUrl": url(f"/images/icons/issuetypes/{t['name'].lower()}.svg"), "name": t["name"],
                "subtask": False, "avatarId": int(tid), "hierarchyLevel": t["hierarchyLevel"]}

    def status_json(ver: str, sid: str) -> dict[str, Any]:
        name, cid, ckey, color, cname = STATUSES[sid]
        return {"self": api(ver, f"/status/{sid}"), "description": "", "iconUrl": url("/images/icons/status.png"),
                "name": name, "id": sid, "statusCategory": {"self": api(ver, f"/statuscategory/{cid}"), "id": cid,
                                                            "key": ckey, "colorName": color, "name": cname}}

    def link_type_json(ver: str, tid: str) -> dict[str, Any]:
        return {"id": tid, **LINK_TYPES[tid], "self": api(ver, f"/issueLinkType/{tid}")}

    def comment_json(ver: str, issue: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
        return {"self": api(ver, f"/issue/{issue['id']}/comment/{c['id']}"), "id": c["id"], "author": user(),
                "body": c["adf"] if ver == "3" else c["text"], "updateAuthor": user(), "created": c["created"],
                "updated": c["updated"], "jsdPublic": True}

    def linked_issue_json(ver: str, other: dict[str, Any]) -> dict[str, Any]:
        return {"id": other["id"], "key": other["key"], "self": api(ver, f"/issue/{other['id']}"),
                "fields": {"summary": other["summary"], "status": status_json(ver, other["status"]),
                           "priority": priority_json(ver), "issuetype": issue_type_json(ver, other["issuetype"])}}

    def priority_json(ver: str) -> dict[str, Any]:
        return {"self": api(ver, "/priority/3"), "iconUrl": url("/images/icons/priorities/medium.svg"),
                "name": "Medium", "id": "3"}

    def issue_json(ver: str, issue: dict[str, Any], wanted: set[str] | None = None) -> dict[str, Any]:
        links = []
        for lid in issue["links"]:
            link = store.data["links"][lid]
            outward = link["inward"] == issue["id"]  # this issue is the subject: "<this> blocks <other>"
            other = store.data["issues"][link["outward" if outward else "inward"]]
            links.append({"id": lid, "self": api(ver, f"/issueLink/{lid}"), "type": link_type_json(ver, link["type"]),
                          ("outwardIssue" if outward else "inwardIssue"): linked_issue_json(ver, other)})
        comments = [comment_json(ver, issue, c) for c in issue["comments"]]
        resolution = issue.get("resolution")
        desc = issue.get("description")
        fields = {
            "summary": issue["summary"],
            "description": (issue["description_adf"] if ver == "3" else desc) if desc is not None else None,
            "labels": list(issue["labels"]),
            "status": status_json(ver, issue["status"]),
            "statuscategorychangedate": issue["status_changed"],
            "issuetype": issue_type_json(ver, issue["issuetype"]),
            "project": project_json(ver, issue["project"]),
            "priority": priority_json(ver),
            "resolution": {"self": api(ver, "/resolution/10000"), "id": "10000", "description": "Work has been "
                           "completed on this issue.", "name": resolution} if resolution else None,
            "resolutiondate": issue.get("resolutiondate"),
            "created": issue["created"],
            "updated": issue["updated"],
            "assignee": None, "reporter": user(), "creator": user(),
            "issuelinks": links,
            "comment": {"comments": comments, "self": api(ver, f"/issue/{issue['id']}/comment"),
                        "maxResults": len(comments), "total": len(comments), "startAt": 0},
            "watches": {"self": api(ver, f"/issue/{issue['key']}/watchers"), "watchCount": 1, "isWatching": True},
            "votes": {"self": api(ver, f"/issue/{issue['key']}/votes"), "votes": 0, "hasVoted": False},
            "lastViewed": None, "environment": None, "duedate": None,
            "components": [], "fixVersions": [], "versions": [], "subtasks": [], "attachment": [],
        }
        if wanted is not None and not wanted & {"*all", "*navigable"}:
            fields = {k: v for k, v in fields.items() if k in wanted}
        return {"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
                "id": issue["id"], "self": api(ver, f"/issue/{issue['id']}"), "key": issue["key"], "fields": fields}

    def wanted_fields(request: Request, body: dict[str, Any] | None = None) -> set[str] | None:
        raw = (body or {}).get("fields") if body is not None else request.query_params.getlist("fields")
        names = {f.strip() for item in (raw or []) for f in str(item).split(",") if f.strip()}
        return {n for n in names if not n.startswith("-")} or None

    # -- fields of a create or edit --

    def set_fields(ver: str, issue: dict[str, Any], fields: dict[str, Any], errors: dict[str, str]) -> None:
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
                    add_labels(issue, value, errors)

    def add_labels(issue: dict[str, Any], labels: list[str], errors: dict[str, str]) -> None:
        for label in labels:
            if not label or re.search(r"\s", label) or len(label) > 255:
                errors["labels"] = f"The label '{label}' contains spaces which is invalid."
            elif label not in issue["labels"]:
                issue["labels"].append(label)

    def apply_update(ver: str, issue: dict[str, Any], update: dict[str, Any], errors: dict[str, str]) -> None:
        for name, ops in update.items():
            if name not in EDITABLE and name != "comment":
                errors[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                continue
            for op in ops if isinstance(ops, list) else []:
                for verb, arg in op.items():
                    if name == "labels" and verb == "add":
                        add_labels(issue, [arg], errors)
                    elif name == "labels" and verb == "remove":
                        issue["labels"] = [label for label in issue["labels"] if label != arg]
                    elif name == "comment" and verb == "add":
                        add_comment(ver, issue, (arg or {}).get("body"))
                    elif verb == "set":
                        set_fields(ver, issue, {name: arg}, errors)
                    else:
                        errors[name] = f"Operation '{verb}' is not supported for field '{name}'."

    def add_comment(ver: str, issue: dict[str, Any], body: Any) -> dict[str, Any]:
        pair = rich_text(body, ver, "comment")
        if pair is None or not pair[0].strip():
            raise JiraError(400, errors={"comment": "Comment body can not be empty!"})
        now = jira_time(sb.clock())
        c = {"id": str(next_id("comment")), "text": pair[0], "adf": pair[1], "created": now, "updated": now}
        issue["comments"].append(c)
        issue["updated"] = now
        return c

    # -- endpoints --

    @app.get(API + "/serverInfo")
    def server_info(ver: str) -> dict[str, Any]:
        version(ver)
        return {"baseUrl": url(""), "displayUrl": url(""), "version": "1001.0.0-SNAPSHOT",
                "versionNumbers": [1001, 0, 0], "deploymentType": "Cloud", "buildNumber": 100282,
                "buildDate": "2025-01-06T00:00:00.000+0000", "serverTime": jira_time(sb.clock()),
                "scmInfo": "0" * 40, "serverTitle": "Jira (fixloop sandbox)", "defaultLocale": {"locale": "en_US"}}

    @app.get(API + "/myself")
    def myself(ver: str) -> dict[str, Any]:
        version(ver)
        return user() | {"locale": "en_US", "groups": {"size": 1, "items": []},
                         "applicationRoles": {"size": 1, "items": []}}

    @app.get("/rest/auth/1/session")
    def session() -> dict[str, Any]:
        return {"self": url("/rest/api/latest/user?accountId=" + BOT_ACCOUNT), "name": sb.credentials.jira_email,
                "loginInfo": {"failedLoginCount": 0, "loginCount": 1}}

    @app.get("/rest/applinks/latest/listApplicationlinks")
    def application_links() -> dict[str, Any]:
        return {"list": []}

    @app.get(API + "/field")
    def list_fields(ver: str) -> list[dict[str, Any]]:
        version(ver)
        names = {"summary": "Summary", "description": "Description", "labels": "Labels", "status": "Status",
                 "issuetype": "Issue Type", "project": "Project", "priority": "Priority", "resolution": "Resolution",
                 "created": "Created", "updated": "Updated", "issuelinks": "Linked Issues", "comment": "Comment",
                 "assignee": "Assignee", "reporter": "Reporter", "issuekey": "Key"}
        return [{"id": k, "key": k, "name": n, "custom": False, "orderable": k in EDITABLE, "navigable": True,
                 "searchable": True, "clauseNames": [k] + (["type"] if k == "issuetype" else [])}
                for k, n in names.items()]

    @app.get(API + "/project")
    def projects(ver: str) -> list[dict[str, Any]]:
        return [project_json(version(ver), k) for k in PROJECTS]

    @app.get(API + "/project/{key}")
    def project(ver: str, key: str) -> dict[str, Any]:
        for k, p in PROJECTS.items():
            if key.upper() == k or key == p["id"]:
                return project_json(version(ver), k, full=True)
        raise JiraError(404, f"No project could be found with key '{key}'.")

    @app.get(API + "/issuetype")
    def issue_types(ver: str) -> list[dict[str, Any]]:
        return [issue_type_json(version(ver), t) for t in ISSUE_TYPES]

    @app.get(API + "/issueLinkType")
    def issue_link_types(ver: str) -> dict[str, Any]:
        return {"issueLinkTypes": [link_type_json(version(ver), t) for t in LINK_TYPES]}

    @app.post(API + "/issue", status_code=201)
    def create_issue(ver: str, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        version(ver)
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
        now = jira_time(sb.clock())
        issue: dict[str, Any] = {"project": pkey, "issuetype": tid, "status": "10000", "summary": "",
                                 "description": None, "description_adf": None, "labels": [], "comments": [],
                                 "links": [], "remotelinks": [], "properties": {}, "created": now, "updated": now,
                                 "status_changed": now, "resolution": None, "resolutiondate": None}
        with store.lock:
            set_fields(ver, issue, fields, errors)
            apply_update(ver, issue, body.get("update") or {}, errors)
            if errors:
                raise JiraError(400, errors=errors)
            issue["id"] = str(next_id("issue"))
            issue["key"] = f"{pkey}-{next_id('key:' + str(pkey), 1)}"
            store.data["issues"][issue["id"]] = issue
            store.data["keys"][issue["key"]] = store.data["keys"][issue["id"]] = issue["id"]
            store.save()
        return {"id": issue["id"], "key": issue["key"], "self": api(ver, f"/issue/{issue['id']}")}

    @app.get(API + "/issue/{key}")
    def get_issue(ver: str, key: str, request: Request) -> dict[str, Any]:
        with store.lock:
            return issue_json(version(ver), find(key), wanted_fields(request))

    @app.put(API + "/issue/{key}", status_code=204)
    def edit_issue(ver: str, key: str, body: Annotated[dict[str, Any], Body()]) -> Response:
        version(ver)
        with store.lock:
            issue = find(key)
            draft = {**issue, "labels": list(issue["labels"]), "comments": list(issue["comments"])}
            errors: dict[str, str] = {}
            set_fields(ver, draft, body.get("fields") or {}, errors)
            apply_update(ver, draft, body.get("update") or {}, errors)
            if errors:
                raise JiraError(400, errors=errors)
            draft["updated"] = jira_time(sb.clock())
            issue.update(draft)
            store.save()
        return Response(status_code=204)

    def search(jql: str) -> list[dict[str, Any]]:
        """The stored issues matching ``jql``, in its order (default: newest first). Hold ``store.lock``."""
        clauses, order = parse_jql(jql or "")
        _check_values(clauses)
        found = [i for i in store.data["issues"].values() if matches(i, clauses)]
        for field, desc in reversed(order or [("created", True)]):
            sort_key = {"created": lambda i: int(i["id"]), "updated": lambda i: (i["updated"], int(i["id"])),
                        "summary": lambda i: i["summary"].casefold()}.get(
                field, lambda i: (i["project"], int(i["key"].rsplit("-", 1)[1])))
            found.sort(key=sort_key, reverse=desc)
        return found

    def param(request: Request, body: dict[str, Any] | None, name: str, default: Any = None) -> Any:
        return (body or {}).get(name, default) if body is not None else request.query_params.get(name, default)

    def page_size(raw: Any, default: int = 50) -> int:
        try:
            return max(0, min(int(raw if raw is not None else default), 5000))
        except (TypeError, ValueError):
            raise JiraError(400, "maxResults must be a number") from None

    def enhanced_search(ver: str, request: Request, body: dict[str, Any] | None) -> dict[str, Any]:
        version(ver)
        token = param(request, body, "nextPageToken")
        start = int(token) if token and str(token).isdigit() else 0
        size = page_size(param(request, body, "maxResults"))
        with store.lock:
            issues = search(param(request, body, "jql", ""))
            # unlike /search, the enhanced search returns no fields unless asked (``fields=*all`` or names)
            page = [issue_json(ver, i, wanted_fields(request, body) or set()) for i in issues[start : start + size]]
        out: dict[str, Any] = {"expand": "schema,names", "issues": page, "isLast": start + size >= len(issues)}
        if not out["isLast"]:
            out["nextPageToken"] = str(start + size)
        return out

    @app.get(API + "/search/jql")
    def search_jql(ver: str, request: Request) -> dict[str, Any]:
        return enhanced_search(ver, request, None)

    @app.post(API + "/search/jql")
    def search_jql_post(ver: str, request: Request, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return enhanced_search(ver, request, body)

    def classic_search(ver: str, request: Request, body: dict[str, Any] | None) -> dict[str, Any]:
        version(ver)
        start = page_size(param(request, body, "startAt", 0))
        size = page_size(param(request, body, "maxResults"))
        with store.lock:
            issues = search(param(request, body, "jql", ""))
            page = [issue_json(ver, i, wanted_fields(request, body)) for i in issues[start : start + size]]
        return {"expand": "schema,names", "startAt": start, "maxResults": size, "total": len(issues), "issues": page}

    @app.get(API + "/search")
    def search_classic(ver: str, request: Request) -> dict[str, Any]:
        return classic_search(ver, request, None)

    @app.post(API + "/search")
    def search_classic_post(ver: str, request: Request, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return classic_search(ver, request, body)

    @app.get(API + "/issue/{key}/comment")
    def list_comments(ver: str, key: str, startAt: int = 0, maxResults: int = 5000) -> dict[str, Any]:
        with store.lock:
            issue = find(key)
            comments = [comment_json(version(ver), issue, c) for c in issue["comments"]]
        return {"startAt": startAt, "maxResults": maxResults, "total": len(comments),
                "comments": comments[startAt : startAt + maxResults]}

    @app.post(API + "/issue/{key}/comment", status_code=201)
    def create_comment(ver: str, key: str, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        with store.lock:
            issue = find(key)
            c = add_comment(version(ver), issue, body.get("body"))
            store.save()
            return comment_json(ver, issue, c)

    @app.get(API + "/issue/{key}/comment/{cid}")
    def get_comment(ver: str, key: str, cid: str) -> dict[str, Any]:
        with store.lock:
            issue = find(key)
            for c in issue["comments"]:
                if c["id"] == cid:
                    return comment_json(version(ver), issue, c)
        raise JiraError(404, "Can not find a comment for the id: " + cid + ".")

    @app.get(API + "/issue/{key}/transitions")
    def list_transitions(ver: str, key: str, transitionId: str | None = None) -> dict[str, Any]:
        with store.lock:
            issue = find(key)
        out = [{"id": tid, "name": name, "to": status_json(version(ver), to), "hasScreen": False, "isGlobal": False,
                "isInitial": False, "isAvailable": True, "isConditional": False, "isLooped": False}
               for tid, (name, to, sources) in TRANSITIONS.items()
               if issue["status"] in sources and transitionId in (None, tid)]
        return {"expand": "transitions", "transitions": out}

    @app.post(API + "/issue/{key}/transitions", status_code=204)
    def do_transition(ver: str, key: str, body: Annotated[dict[str, Any], Body()]) -> Response:
        version(ver)
        tid = str((body.get("transition") or {}).get("id", ""))
        with store.lock:
            issue = find(key)
            if tid not in TRANSITIONS or issue["status"] not in TRANSITIONS[tid][2]:
                raise JiraError(400, f"Transition id '{tid}' is not valid for this issue.")
            draft = {**issue, "labels": list(issue["labels"]), "comments": list(issue["comments"])}
            errors: dict[str, str] = {}
            apply_update(ver, draft, body.get("update") or {}, errors)
            if errors:
                raise JiraError(400, errors=errors)
            now = jira_time(sb.clock())
            to = TRANSITIONS[tid][1]
            done = STATUSES[to][2] == "done"
            draft.update(status=to, status_changed=now, updated=now, resolution="Done" if done else None,
                         resolutiondate=now if done else None)
            issue.update(draft)
            store.save()
        return Response(status_code=204)

    @app.post(API + "/issueLink", status_code=201)
    def link_issues(ver: str, body: Annotated[dict[str, Any], Body()]) -> Response:
        version(ver)
        t = body.get("type") or {}
        tid = next((k for k, v in LINK_TYPES.items() if str(t.get("id", "")) == k or t.get("name") == v["name"]),
                   None)
        if tid is None:
            raise JiraError(404, f"No issue link type with name '{t.get('name')}' found.")
        with store.lock:
            ends = []
            for side in ("inwardIssue", "outwardIssue"):
                ref = body.get(side) or {}
                ends.append(find(str(ref.get("key") or ref.get("id") or "")))
            if body.get("comment"):
                add_comment(ver, ends[0], body["comment"].get("body"))
            lid = str(next_id("link"))
            store.data["links"][lid] = {"type": tid, "inward": ends[0]["id"], "outward": ends[1]["id"]}
            for end in ends:
                end["links"].append(lid)
            store.save()
        return Response(status_code=201)

    def remote_json(ver: str, issue: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
        return {"id": link["id"], "self": api(ver, f"/issue/{issue['key']}/remotelink/{link['id']}"),
                **{k: link[k] for k in ("globalId", "application", "relationship") if link.get(k) is not None},
                "object": link["object"]}

    @app.get(API + "/issue/{key}/remotelink")
    def list_remote_links(ver: str, key: str, globalId: str | None = None) -> Any:
        with store.lock:
            issue = find(key)
            links = [remote_json(version(ver), issue, r) for r in issue["remotelinks"]]
        if globalId is None:
            return links
        for link in links:
            if link.get("globalId") == globalId:
                return link
        raise JiraError(404, "No remote link with the given globalId was found.")

    @app.post(API + "/issue/{key}/remotelink")
    def add_remote_link(ver: str, key: str, body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        version(ver)
        obj = body.get("object")
        if not isinstance(obj, dict) or not obj.get("url") or not obj.get("title"):
            missing = {f: f"'{f}' is required." for f in ("url", "title") if not (obj or {}).get(f)}
            raise JiraError(400, errors=missing or {"object": "'object' is required."})
        with store.lock:
            issue = find(key)
            gid = body.get("globalId")
            link = next((r for r in issue["remotelinks"] if gid and r.get("globalId") == gid), None)
            status = 200 if link else 201
            if link is None:
                link = {"id": next_id("remotelink")}
                issue["remotelinks"].append(link)
            link.update(globalId=gid, application=body.get("application"), relationship=body.get("relationship"),
                        object=obj)
            issue["updated"] = jira_time(sb.clock())
            store.save()
            return JSONResponse({"id": link["id"], "self": remote_json(ver, issue, link)["self"]}, status)

    @app.get(API + "/issue/{key}/properties")
    def list_properties(ver: str, key: str) -> dict[str, Any]:
        with store.lock:
            issue = find(key)
            return {"keys": [{"self": api(version(ver), f"/issue/{issue['id']}/properties/{p}"), "key": p}
                             for p in issue["properties"]]}

    @app.get(API + "/issue/{key}/properties/{prop}")
    def get_property(ver: str, key: str, prop: str) -> dict[str, Any]:
        version(ver)
        with store.lock:
            props = find(key)["properties"]
            if prop not in props:
                raise JiraError(404, f"The property with key '{prop}' does not exist.")
            return {"key": prop, "value": props[prop]}

    @app.put(API + "/issue/{key}/properties/{prop}")
    def set_property(ver: str, key: str, prop: str, body: Annotated[Any, Body()]) -> Response:
        version(ver)
        if len(prop) > 255:
            raise JiraError(400, "The property key cannot be longer than 255 characters.")
        with store.lock:
            props = find(key)["properties"]
            status = 200 if prop in props else 201
            props[prop] = body
            store.save()
        return Response(status_code=status)

    @app.delete(API + "/issue/{key}/properties/{prop}", status_code=204)
    def delete_property(ver: str, key: str, prop: str) -> Response:
        version(ver)
        with store.lock:
            props = find(key)["properties"]
            if props.pop(prop, None) is None:
                raise JiraError(404, f"The property with key '{prop}' does not exist.")
            store.save()
        return Response(status_code=204)

    def shown(text: str) -> str:
        """Wiki text as Jira shows it, as far as escapes go (``\\X`` is X): markup is not rendered, so fixloop's
        escaped text reads as the text it escapes, and anything else shows its raw markup."""
        return html.escape(_WIKI_ESCAPE.sub(r"\1", text))

    @app.get("/browse/{key}", response_class=HTMLResponse)
    def browse(key: str) -> str:
        """A minimal human view of an issue (the ``url`` fixloop records), for the demo."""
        with store.lock:
            issue = find(key)
            comments = "".join(f"<li><pre>{shown(c['text'])}</pre></li>" for c in issue["comments"])
            return (f"<html><head><title>{html.escape(issue['key'])}</title></head><body>"
                    f"<h1>{html.escape(issue['key'])}: {html.escape(issue['summary'])}</h1>"
                    f"<p>Status: {STATUSES[issue['status']][0]} &middot; Labels: "
                    f"{html.escape(', '.join(issue['labels']))}</p><pre>{shown(issue['description'] or '')}"
                    f"</pre><h2>Comments</h2><ol>{comments}</ol></body></html>")

    return app

