"""Jira's wire conventions: the seeded project, issue types, statuses, workflow transitions and link types, the
error answer ``{"errorMessages": [...], "errors": {field: message}}`` and the timestamp format."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

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
WIKI_ESCAPE = re.compile(r"\\([!\[\]^~+?%{}()*_|@-])")  # atlassian-renderer's escapable characters
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
