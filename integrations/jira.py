"""Jira work items: a thin typed client on the official ``jira`` library (pycontribs/jira).

REST API: developer.atlassian.com/cloud/jira/platform/rest/v2/ (the library's default version, so descriptions and
comment bodies are plain text / wiki markup; v3 would take Atlassian Document Format). Auth is HTTP basic with the
account's email and an API token (id.atlassian.com/manage-profile/security/api-tokens).

Idempotency: an issue belongs to a fixloop work item through the label ``fixloop:<fixloop_id>`` (labels are visible in
the UI, settable on create in one request and searchable with plain JQL on Cloud and Data Center alike, unlike entity
properties, which need indexing configuration to be searchable). ``find_or_create_issue`` searches
``project = "<P>" AND labels = "fixloop:<id>"`` before it creates. Jira Cloud's search index lags a write by up to a
few seconds, so two concurrent first calls could still both create; Temporal runs one activity attempt at a time per
work item, and retries come seconds later, which is the case this guards. A comment with a ``dedup_key`` ends with the
line ``fixloop-ref: <dedup_key>``, looked for among the issue's comments before adding; a remote link uses its URL
as ``globalId``, which Jira itself treats as "update, don't add".

Errors: ``JIRAError`` -> ``fixloop.integrations.errors.status_error`` by HTTP status (401/403 ``AuthError``, 404
``NotFound``,
400 ``Invalid``, 429/5xx retryable ``HttpStatusError``); requests' connection errors and timeouts -> ``TransportError``.
The library's own retries are off (``max_retries=0``): Temporal is the only retry layer. Messages carry Jira's error
text, never a header (``str(JIRAError)`` would print the request headers, Authorization included, so it is not used).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import requests
from jira import JIRA, JIRAError
from pydantic import BaseModel, Field, HttpUrl, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.integrations.checks import CheckResult, Status, bounded, failed, hint
from fixloop.integrations.errors import (
    AuthError,
    ExceptionMap,
    IntegrationError,
    Invalid,
    answer_error,
    by_status,
    map_exceptions,
    transport_error,
)

SYSTEM = "jira"
LABEL_PREFIX = "fixloop:"
DEDUP_PREFIX = "fixloop-ref: "
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,200}$")  # what a Jira label may hold (no spaces)
_ISSUE_FIELDS = "summary,status,labels,description,resolution,issuetype,created,updated"


class JiraSettings(BaseSettings):
    """``FIXLOOP_JIRA_URL`` (the site, e.g. ``https://acme.atlassian.net``), ``FIXLOOP_JIRA_EMAIL``,
    ``FIXLOOP_JIRA_API_TOKEN``, ``FIXLOOP_JIRA_PROJECT`` (key, default ``OPS``), ``FIXLOOP_JIRA_TIMEOUT`` (seconds
    per HTTP request)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_JIRA_", env_file=".env", extra="ignore")

    url: HttpUrl = Field(description="The Jira site, e.g. https://acme.atlassian.net; setting it enables Jira.")
    email: str = Field(min_length=3, description="The API user's email (HTTP basic auth with the token).")
    api_token: SecretStr = Field(description="The API user's API token (id.atlassian.com, Security).")
    project: str = Field(
        default="OPS", pattern=r"^[A-Z][A-Z0-9_]{1,9}$", description="Key of the project work items are filed in."
    )
    timeout: float = Field(default=30.0, gt=0, le=300, description="Seconds per HTTP request.")


class IssueRef(BaseModel):
    """An issue: ``key`` (``OPS-12``), ``id`` (numeric string), ``url`` (the browse page)."""

    key: str
    id: str
    url: str
    created: bool = False  # find_or_create_issue: True when this call created it


class Issue(IssueRef):
    summary: str
    status: str  # the status name, e.g. "In Progress"
    status_category: str  # "new" | "indeterminate" | "done"
    labels: list[str]
    description: str | None  # plain text (API v2)
    resolution: str | None
    issue_type: str
    created_at: str  # Jira's timestamp, e.g. 2024-05-01T10:00:00.000+0000
    updated_at: str


class CommentRef(BaseModel):
    id: str
    created: bool  # False when a comment with the same dedup_key was already there


class TransitionResult(BaseModel):
    key: str
    status: str  # the status after the call
    changed: bool  # False when the issue already had it


class RemoteLinkRef(BaseModel):
    id: str
    url: str
    created: bool  # False when a link with this URL was already there


class JiraUser(BaseModel):
    account_id: str | None
    display_name: str
    email: str | None


class TransitionUnavailable(IntegrationError):
    """The issue's workflow offers no transition to the wanted status from its current one. Not retryable."""


def fixloop_label(fixloop_id: str) -> str:
    """The label that marks the issue of work item ``fixloop_id``; raises ``IntegrationError`` for an id a label
    cannot hold (whitespace, quotes, more than 200 characters)."""
    if not _SAFE_ID.match(fixloop_id):
        raise IntegrationError(SYSTEM, "fixloop id must be 1-201 characters of [A-Za-z0-9._:/@+-]")
    return LABEL_PREFIX + fixloop_id


def _jql_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _error_text(e: JIRAError) -> str:
    """Jira's ``errorMessages`` and ``errors`` (``field: message``, so a refused field is named), else the library's
    text."""
    try:
        body = e.response.json() if e.response is not None else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [str(m) for m in body.get("errorMessages") or []]
        errors = body.get("errors")
        parts += [f"{k}: {v}" for k, v in errors.items()] if isinstance(errors, dict) else []
        if parts:
            return "; ".join(parts)
    return e.text or ""


# The library's and requests' exceptions as ``fixloop.integrations.errors`` (``map_exceptions``).
_ERRORS: ExceptionMap = {
    JIRAError: by_status(SYSTEM, lambda e: e.status_code, lambda e: (_error_text(e) or "no error message")[:300]),
    requests.exceptions.JSONDecodeError: answer_error(SYSTEM, "the answer is not JSON (is the URL a Jira site?)"),
    requests.exceptions.RequestException: transport_error(SYSTEM),
}


class JiraClient:
    """Blocking; run it in a thread from async code. Every call is one or a few HTTP requests, each bounded by
    ``settings.timeout``; the library connects lazily (``serverInfo``) on the first call."""

    def __init__(self, settings: JiraSettings) -> None:
        self.settings = settings
        self.server = str(settings.url).rstrip("/")
        self._jira: JIRA | None = None

    @property
    def jira(self) -> JIRA:
        if self._jira is None:
            with map_exceptions(_ERRORS, "connect"):
                self._jira = JIRA(
                    server=self.server,
                    basic_auth=(self.settings.email, self.settings.api_token.get_secret_value()),
                    max_retries=0,
                    timeout=self.settings.timeout,
                    options={"verify": True},
                )
        return self._jira

    def browse_url(self, key: str) -> str:
        return f"{self.server}/browse/{key}"

    def check(self) -> JiraUser:
        """The API user (``GET /myself``): proves URL and credentials work."""
        with map_exceptions(_ERRORS, "myself"):
            me = self.jira.myself()
        return JiraUser(
            account_id=me.get("accountId"), display_name=me.get("displayName", ""), email=me.get("emailAddress")
        )

    def find_issue(self, fixloop_id: str) -> IssueRef | None:
        """The oldest issue of the project labelled ``fixloop:<fixloop_id>``, or None."""
        jql = (
            f"project = {_jql_quote(self.settings.project)} AND labels = {_jql_quote(fixloop_label(fixloop_id))}"
            " ORDER BY created ASC"
        )
        with map_exceptions(_ERRORS, "search"):
            found = self.jira.search_issues(jql, maxResults=1, fields="labels")
        return IssueRef(key=found[0].key, id=found[0].id, url=self.browse_url(found[0].key)) if found else None

    def find_or_create_issue(
        self,
        fixloop_id: str,
        summary: str,
        description: str,
        labels: list[str] | None = None,
        issue_type: str = "Task",
    ) -> IssueRef:
        """The issue of work item ``fixloop_id``, created (in ``settings.project``) only if none has its label.
        ``summary`` is cut to one line of 255 characters; ``description`` is wiki markup taken as it is (the
        activities escape it: ``fixloop.core.markup.jira_text``); ``labels`` are added beside ``fixloop:<id>``.
        ``created`` tells whether this call created it. Raises ``Invalid`` (400) naming a refused field."""
        existing = self.find_issue(fixloop_id)
        if existing is not None:
            return existing
        one_line = " ".join(summary.split())[:255]
        fields: dict[str, Any] = {
            "project": {"key": self.settings.project},
            "issuetype": {"name": issue_type},
            "summary": one_line,
            "description": description,
            "labels": [fixloop_label(fixloop_id), *(labels or [])],
        }
        with map_exceptions(_ERRORS, "create issue"):
            raw = self.jira.create_issue(fields=fields, prefetch=False)
        return IssueRef(key=raw.key, id=raw.id, url=self.browse_url(raw.key), created=True)

    def get_issue(self, key: str) -> Issue:
        """The issue ``key``; ``NotFound`` when it does not exist (or is hidden from the API user)."""
        with map_exceptions(_ERRORS, f"get {key}"):
            raw = self.jira.issue(key, fields=_ISSUE_FIELDS).raw
        f = raw["fields"]
        description = f.get("description")
        return Issue(
            key=raw["key"],
            id=raw["id"],
            url=self.browse_url(raw["key"]),
            summary=f.get("summary") or "",
            status=f["status"]["name"],
            status_category=f["status"].get("statusCategory", {}).get("key", ""),
            labels=list(f.get("labels") or []),
            description=description if isinstance(description, str) else None,
            resolution=(f.get("resolution") or {}).get("name"),
            issue_type=(f.get("issuetype") or {}).get("name", ""),
            created_at=f.get("created", ""),
            updated_at=f.get("updated", ""),
        )

    def set_summary(self, key: str, summary: str, was: str | None = None) -> bool:
        """Set ``key``'s summary (``PUT /issue/{key}`` with ``fields.summary``; cut to one line of 255 characters)
        when it is ``was`` (None: whatever it is). True when the issue has ``summary`` afterwards (now or already),
        False when its summary is another one than ``was`` (a person edited it: kept). ``Invalid`` (400) when Jira
        refuses the summary."""
        one_line = " ".join(summary.split())[:255]
        with map_exceptions(_ERRORS, f"summary of {key}"):
            issue = self.jira.issue(key, fields="summary")
            current = issue.fields.summary or ""
            if current == one_line:
                return True
            if was is not None and current != " ".join(was.split())[:255]:
                return False
            issue.update(fields={"summary": one_line})
        return True

    def comment(self, key: str, body: str, dedup_key: str | None = None) -> CommentRef:
        """Add ``body`` (wiki markup, taken as it is: fixloop's activities pass only ``fixloop.core.markup.jira_text``)
        to ``key``. With ``dedup_key``, the comment ends with the line ``fixloop-ref: <dedup_key>`` and is not added
        again when a comment with that line exists."""
        if dedup_key is not None:
            if "\n" in dedup_key:
                raise IntegrationError(SYSTEM, "dedup_key must be one line")
            marker = DEDUP_PREFIX + dedup_key
            for existing in self._comments(key):
                if marker in str(existing.get("body", "")).splitlines():
                    return CommentRef(id=str(existing["id"]), created=False)
            body = f"{body.rstrip()}\n\n{marker}"
        with map_exceptions(_ERRORS, f"comment on {key}"):
            added = self.jira.add_comment(key, body)
        return CommentRef(id=str(added.id), created=True)

    def _comments(self, key: str, page: int = 100) -> Iterator[dict[str, Any]]:
        start = 0
        while True:
            with map_exceptions(_ERRORS, f"comments of {key}"):
                batch = self.jira.comments(key, start_at=start, max_results=page)
            yield from (c.raw for c in batch)
            if len(batch) < page:
                return
            start += len(batch)

    def add_labels(self, key: str, labels: list[str]) -> list[str]:
        """Add ``labels`` to ``key`` (existing ones are kept); returns the issue's labels afterwards."""
        with map_exceptions(_ERRORS, f"labels of {key}"):
            issue = self.jira.issue(key, fields="labels")
            missing = [label for label in labels if label not in issue.fields.labels]
            if missing:
                issue.update(update={"labels": [{"add": label} for label in missing]})
            return list(issue.fields.labels)

    def transition(self, key: str, to_status: str) -> TransitionResult:
        """Move ``key`` to the status named ``to_status`` (case-insensitive); a no-op when it is there already.
        Raises ``TransitionUnavailable`` naming the transitions the workflow offers when none leads there."""
        with map_exceptions(_ERRORS, f"status of {key}"):
            current = self.jira.issue(key, fields="status").fields.status.name
        if current.casefold() == to_status.casefold():
            return TransitionResult(key=key, status=current, changed=False)
        with map_exceptions(_ERRORS, f"transitions of {key}"):
            available = self.jira.transitions(key)
        chosen = next((t for t in available if t["to"]["name"].casefold() == to_status.casefold()), None)
        if chosen is None:
            offered = ", ".join(f"{t['name']} -> {t['to']['name']}" for t in available) or "none"
            raise TransitionUnavailable(
                SYSTEM, f"{key} cannot go from '{current}' to '{to_status}'; available transitions: {offered}"
            )
        with map_exceptions(_ERRORS, f"transition {key}"):
            self.jira.transition_issue(key, str(chosen["id"]))
        return TransitionResult(key=key, status=chosen["to"]["name"], changed=True)

    def add_remote_link(self, key: str, url: str, title: str) -> RemoteLinkRef:
        """Link ``url`` (e.g. the merge request) from ``key`` under ``title``; one link per URL."""
        global_id = url if len(url) <= 255 else "sha256:" + hashlib.sha256(url.encode()).hexdigest()
        with map_exceptions(_ERRORS, f"remote links of {key}"):
            for link in self.jira.remote_links(key):
                raw = link.raw
                if raw.get("globalId") == global_id or (raw.get("object") or {}).get("url") == url:
                    return RemoteLinkRef(id=str(raw["id"]), url=url, created=False)
            added = self.jira.add_remote_link(key, {"url": url, "title": title}, globalId=global_id)
        return RemoteLinkRef(id=str(added.id), url=url, created=True)


def check(settings: JiraSettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s jira line: ``GET /myself`` (URL, email, API token), then a JQL search in the
    project (Jira refuses an unknown project with 400); each request bounded by ``timeout`` seconds."""
    target = str(settings.url).rstrip("/")
    client = JiraClient(bounded(settings, timeout))
    try:
        me = client.check()
    except IntegrationError as e:
        auth = "FIXLOOP_JIRA_EMAIL and FIXLOOP_JIRA_API_TOKEN"
        return failed("jira", target, e, hint(e, {AuthError: auth}, "FIXLOOP_JIRA_URL"))
    try:
        client.find_issue("config-check")  # JQL on the project: Jira answers 400 for one that does not exist
    except IntegrationError as e:
        hints = {AuthError: "the user's permissions in FIXLOOP_JIRA_PROJECT", Invalid: "FIXLOOP_JIRA_PROJECT"}
        return failed("jira", target, e, hint(e, hints, "FIXLOOP_JIRA_URL"))
    who = me.display_name or me.email or me.account_id or "?"
    return CheckResult(Status.OK, "jira", f"{target} as {who}, project {settings.project}")
