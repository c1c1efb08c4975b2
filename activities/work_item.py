"""Work-item activities (on Jira): open the work item's issue, comment (escalations, evidence), close it.

Every text reaches Jira through this module, and this module escapes all of it: summaries through
``fixloop.core.markup.jira_summary`` (plain text, one line, 255 characters), descriptions and comment bodies through
``fixloop.core.markup.jira_text`` (inert wiki markup: no link, mention, macro, image, table, heading or list, bare URLs
defanged). The inputs' texts are therefore plain text, never wiki markup: a caller cannot forget to escape an alert
title or a scanner field, and cannot format with wiki markup either.

Stages 1, escalation and 7 of the RemediationWorkflow (inputs and outputs: ``fixloop.workflows.contracts.work_item``).
Each activity is idempotent: ``jira.open_work_item`` looks the issue up by the fixloop work-item id (a label) before
creating one, so a retry or a worker crash never opens a second issue. ``WorkItemActivities`` run on
``fixloop.integrations.jira.JiraClient`` (registered by the worker when Jira is configured).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from temporalio import activity

from fixloop.activities.errors import as_application_errors
from fixloop.core.incidents import describe
from fixloop.core.lifecycle import describe as describe_eol
from fixloop.core.markup import jira_summary, jira_text
from fixloop.core.models import FIX_KINDS, WorkItem
from fixloop.core.parsing import clean
from fixloop.integrations.jira import JiraClient, JiraSettings, TransitionUnavailable
from fixloop.workflows.contracts.work_item import (
    CloseWorkItemInput,
    CommentInput,
    IssueRef,
    LinkInput,
    LinkRef,
    OpenWorkItemInput,
    RenameInput,
    SetStatusInput,
)

# Temporal activity names, unchanged since activities/jira.py (running histories and the worker's metrics name them):
OPEN_WORK_ITEM = "jira.open_work_item"
COMMENT = "jira.comment"
CLOSE_WORK_ITEM = "jira.close_work_item"
LINK = "jira.link"
SET_STATUS = "jira.set_status"
RENAME = "jira.rename"


# --- the implementation ----------------------------------------------------------------------------------------

SUMMARY_MAX = 255
ADVISORIES_MAX = 20
PACKAGES_MAX = 20
DONE = "done"
DONE_STATUS = "Done"


def issue_description(scope: str, item: WorkItem, findings: Sequence[str] = (), findings_total: int = 0) -> str:
    """The issue's description as plain text (the activity escapes it with ``jira_text``): a summary of the work
    item, every value from signals bounded; its advisories by severity (``item.counts``, the title's and the merge
    request's rule); at most ``ADVISORIES_MAX`` advisories and ``PACKAGES_MAX`` packages, with a count of the rest;
    for an incident its ranked root-cause candidates with their evidence and the alert timeline
    (``fixloop.core.incidents.describe``); for an OS item its image line's end of life
    (``fixloop.core.lifecycle.describe``: the target of a migration, or why it was not checked); for a digest the
    ``findings`` it holds (titles, of ``findings_total``)."""
    lines = [
        f"fixloop work item {item.id} ({item.kind.value}, severity {item.severity.value}) in {clean(scope, 200)}.",
        "",
    ]
    for name, value in (
        ("Image", item.artifact),
        ("Target", item.target),
        ("Ecosystem", item.ecosystem),
        ("Service", item.service),
        ("Environment", item.env),
        ("Monitor", item.monitor_id),
    ):
        if value:
            lines.append(f"{name}: {clean(value, 200)}")
    if item.packages:
        lines += ["", "Packages (installed -> fixed):"]
        for p in item.packages[:PACKAGES_MAX]:
            installed, fixed = clean(p.installed_version or "?", 60), clean(p.fixed_version, 60)
            lines.append(f"- {clean(p.package, 120)} {installed} -> {fixed}")
        if len(item.packages) > PACKAGES_MAX:
            lines.append(f"- ... and {len(item.packages) - PACKAGES_MAX} more")
    if item.counts is not None:  # the counting rule of the title and the merge request (``advisory_counts``)
        verb = "Fixes" if item.kind in FIX_KINDS else "Holds"
        lines += ["", f"{verb} {item.counts.text()} (each advisory once, at its highest severity)."]
    if item.eol is not None:  # the image's release line: its end of life, the line to move to, or why not checked
        lines += ["", describe_eol(item.eol)]
    if item.advisories:
        shown = ", ".join(clean(a, 64) for a in item.advisories[:ADVISORIES_MAX])
        more = f" and {len(item.advisories) - ADVISORIES_MAX} more" if len(item.advisories) > ADVISORIES_MAX else ""
        lines += ["", f"Advisories ({len(item.advisories)}): {shown}{more}"]
    if findings:
        lines += ["", f"Findings ({max(findings_total, len(findings))}):"]
        lines += [f"- {clean(f, 300)}" for f in findings]
        if findings_total > len(findings):
            lines.append(f"- ... and {findings_total - len(findings)} more (in the Temporal UI's loop input)")
    if item.incident is not None:
        if lines[-1]:
            lines.append("")
        lines.append(describe(item.incident, alerts=len(item.signals), attached_to=item.attached_to))
    lines += ["", f"Signals: {len(item.signals)}. Triage engine: {clean(item.engine, 40)}."]
    if item.note:
        lines.append(f"Note: {clean(item.note, 300)}")
    return "\n".join(lines) + "\n"


def resolution_label(resolution: str) -> str:
    """``won't do`` -> ``fixloop-wont-do``."""
    slug = re.sub(r"[^a-z0-9]+", "-", resolution.lower().replace("'", "")).strip("-")[:40] or "closed"
    return f"fixloop-{slug}"


class WorkItemActivities:
    """The work-item activities (on Jira) on the project of ``settings``."""

    def __init__(self, settings: JiraSettings) -> None:
        self.settings = settings
        self.client = JiraClient(settings)

    @activity.defn(name=OPEN_WORK_ITEM)
    async def open_work_item(self, inp: OpenWorkItemInput) -> IssueRef:
        """The work item's issue, found by its label ``fixloop:<id>`` or created (summary: the work item title,
        ``jira_summary``; description: ``issue_description``, ``jira_text``; labels ``fixloop``, ``fixloop-<kind>``).
        ``created`` False when found."""
        item = inp.work_item
        with as_application_errors():
            ref = await asyncio.to_thread(
                self.client.find_or_create_issue,
                item.id,
                jira_summary(item.title, SUMMARY_MAX),
                jira_text(issue_description(inp.scope, item, inp.findings, inp.findings_total)),
                ["fixloop", f"fixloop-{item.kind.value}"],
            )
        return IssueRef(key=ref.key, url=ref.url, created=ref.created)

    @activity.defn(name=RENAME)
    async def rename(self, inp: RenameInput) -> bool:
        """Give the issue the summary ``inp.summary`` (``jira_summary``) if its summary is still ``inp.was`` (as
        ``jira_summary`` made it): the work item's title once planning named its service. True when the issue has
        the new summary (a retry finds it there); False when a person changed the summary (it is kept)."""
        with as_application_errors():
            return await asyncio.to_thread(
                self.client.set_summary,
                inp.key,
                jira_summary(inp.summary, SUMMARY_MAX),
                jira_summary(inp.was, SUMMARY_MAX),
            )

    @activity.defn(name=COMMENT)
    async def comment(self, inp: CommentInput) -> None:
        """Comment ``inp.body`` (escaped: ``jira_text``) once per ``dedup_key``, and add ``inp.labels``."""
        with as_application_errors():
            await asyncio.to_thread(self.client.comment, inp.key, jira_text(inp.body), inp.dedup_key)
            if inp.labels:
                await asyncio.to_thread(self.client.add_labels, inp.key, inp.labels)

    @activity.defn(name=CLOSE_WORK_ITEM)
    async def close_work_item(self, inp: CloseWorkItemInput) -> None:
        """Comment ``inp.comment`` (escaped: ``jira_text``; once) and close the issue. Resolution ``done``:
        transition to ``Done`` (a workflow without that transition is a non-retryable ``TransitionUnavailable``).
        Any other resolution (e.g.
        ``won't do``): the comment and the label ``fixloop-<resolution>`` only; the team's workflow decides the
        status (fixloop does not guess transition names)."""
        resolution = clean(inp.resolution, 60)
        with as_application_errors():
            await asyncio.to_thread(self.client.comment, inp.key, jira_text(inp.comment), f"close:{resolution}")
            if resolution.casefold() == DONE:
                await asyncio.to_thread(self.client.transition, inp.key, DONE_STATUS)
            else:
                await asyncio.to_thread(self.client.add_labels, inp.key, [resolution_label(resolution)])

    @activity.defn(name=LINK)
    async def link(self, inp: LinkInput) -> LinkRef:
        """A remote link on ``inp.key`` to ``inp.url`` (one per URL); its title is plain text (``jira_summary``)."""
        with as_application_errors():
            ref = await asyncio.to_thread(self.client.add_remote_link, inp.key, inp.url, jira_summary(inp.title))
        return LinkRef(id=ref.id, created=ref.created)

    @activity.defn(name=SET_STATUS)
    async def set_status(self, inp: SetStatusInput) -> bool:
        """Move the issue to ``inp.status``; True when it is there (already or now). No transition leading there:
        False with ``best_effort`` (logged), else a non-retryable ``TransitionUnavailable``."""
        with as_application_errors():
            try:
                await asyncio.to_thread(self.client.transition, inp.key, inp.status)
            except TransitionUnavailable as e:
                if not inp.best_effort:
                    raise
                activity.logger.warning("%s", clean(e.message, 300))
                return False
        return True
