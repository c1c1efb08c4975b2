"""The JQL subset the stand-in searches with: ``AND``-joined clauses, ``ORDER BY``; anything else is a 400 in
Jira's shape naming what is unsupported (see the package docstring)."""

from __future__ import annotations

import re
from typing import Any

from fixloop.sandbox.jira.wire import ISSUE_TYPES, PROJECTS, STATUSES, JiraError

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


def check_values(clauses: list[tuple[str, str, Any]]) -> None:
    """Jira refuses a project or status that does not exist."""
    known = {
        "project": {k.casefold() for p in PROJECTS.values() for k in (p["key"], p["id"])},
        "status": {n.casefold() for sid, s in STATUSES.items() for n in (s[0], sid)},
    }
    for field, _op, want in clauses:
        for w in want if isinstance(want, list) else [want]:
            if field in known and str(w).casefold() not in known[field]:
                raise JiraError(400, f"The value '{w}' does not exist for the field '{field}'.")
