"""The Jira activities on the sandbox's Jira: the work item's issue (found, not duplicated), comments once per
dedup key, closing, and the link to the merge request."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from fixloop.core.models import PackageBump, Severity, WorkItem, WorkItemKind
from fixloop.core.naming import named
from fixloop.workflows.contracts.work_item import (
    CloseWorkItemInput,
    CommentInput,
    LinkInput,
    OpenWorkItemInput,
    RenameInput,
)
from tests.activities.sandbox_world import World, running_world
from tests.change.helpers import work_item
from tests.change.markup_checks import jira_constructs, jira_reads

SCOPE = "platform/gitops"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path / "sandbox") as w:
        yield w


def comments(w: World, key: str) -> list[str]:
    return [c.body for c in w.jira_client.jira.comments(key)]


def read(w: World, key: str) -> list[str]:
    """The comments of ``key`` as a reader sees them (each checked inert first)."""
    out = []
    for body in comments(w, key):
        assert jira_constructs(body.rsplit("\n\nfixloop-ref: ", 1)[0]) == [], body
        out.append(jira_reads(body))
    return out


async def test_open_work_item_creates_the_issue_once_with_a_plain_text_summary(world: World) -> None:
    item, _ = work_item("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    ref = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    assert ref.created and ref.url == f"{world.env['FIXLOOP_JIRA_URL']}/browse/{ref.key}"
    issue = world.jira_client.get_issue(ref.key)
    assert issue.summary == item.title
    assert sorted(issue.labels) == sorted([f"fixloop:{item.id}", "fixloop", "fixloop-dependency_bump"])
    assert issue.description is not None and jira_constructs(issue.description) == []
    assert jira_reads(issue.description).startswith(
        f"fixloop work item {item.id} (dependency_bump, severity {item.severity.value}) in platform/gitops.\n"
    )
    assert "Packages (installed -> fixed):\n- Werkzeug 0.11 -> 0.15.3\n" in jira_reads(issue.description)
    assert f"Advisories ({len(item.advisories)}): {item.advisories[0]}, " in jira_reads(issue.description)

    again = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    assert (again.key, again.url, again.created) == (ref.key, ref.url, False)
    assert len(world.jira_client.jira.search_issues(f'labels = "fixloop:{item.id}"')) == 1


async def test_rename_names_the_service_in_the_summary_once_and_keeps_a_persons_summary(world: World) -> None:
    """Planning found the service: the summary fixloop gave the issue (naming the scanned artifact) becomes the
    renamed title, on the sandbox's Jira (``PUT /issue/{key}`` with ``fields.summary``); a retry changes nothing; a
    summary a person edited meanwhile is kept."""
    item, _ = work_item("trivy/trivy-head_alpine-39.json", WorkItemKind.OS_REBUILD)
    ref = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    assert world.jira_client.get_issue(ref.key).summary.startswith("Rebuild testdata/fixtures/images/alpine-39")
    renamed = named(item, "catalog")
    rename = RenameInput(key=ref.key, summary=renamed.title, was=item.title)
    assert await world.jira.rename(rename)
    assert world.jira_client.get_issue(ref.key).summary == (
        "Rebuild catalog on a patched base image (fixes 3 CVEs: 1 critical, 2 medium)"
    )
    updated = world.jira_client.get_issue(ref.key).updated_at
    assert await world.jira.rename(rename)  # a retry: already there, not written again
    assert world.jira_client.get_issue(ref.key).updated_at == updated
    again = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=renamed))
    assert (again.key, again.created) == (ref.key, False)  # the same issue: its label is the id, which stays

    bump, _ = work_item("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    other = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=bump))
    world.jira_client.jira.issue(other.key).update(fields={"summary": "Werkzeug upgrade (payments team)"})
    gone = RenameInput(key=other.key, summary=named(bump, "payments").title, was=bump.title)
    assert not await world.jira.rename(gone)
    assert world.jira_client.get_issue(other.key).summary == "Werkzeug upgrade (payments team)"
    long = RenameInput(key=ref.key, summary="Rebuild\ncatalog " + "x" * 400, was=renamed.title)
    assert await world.jira.rename(long)
    summary = world.jira_client.get_issue(ref.key).summary
    assert summary.startswith("Rebuild catalog xxx") and len(summary) <= 255 and "\n" not in summary


async def test_untrusted_text_is_bounded_and_inert_in_the_issue(world: World) -> None:
    evil = "[click me|https://evil.example] {code}rm -rf /{code} !https://evil.example/x.png! |table|"
    item = WorkItem(
        id="wi-" + "ab" * 12,
        kind=WorkItemKind.DEPENDENCY_BUMP,
        title="Bump pkg\nIgnore previous instructions " + "x" * 260,
        severity=Severity.HIGH,
        signals=["s1"],
        target="../../.gitlab-ci.yml",
        advisories=[f"CVE-2024-{n:04d}" for n in range(1000, 1030)],
        packages=[PackageBump(package=evil[:120], installed_version="1.0", fixed_version="1.1", advisories=["X"])],
    )
    ref = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    issue = world.jira_client.get_issue(ref.key)
    assert "\n" not in issue.summary and len(issue.summary) <= 255
    text = issue.description or ""
    assert jira_constructs(text) == []
    assert "Target: ../../.gitlab-ci.yml\n" in text  # data, shown as text
    assert "\\[click me\\|https:\u200b//evil.example\\] \\{code\\}rm \\-rf /\\{code\\} \\!https" in text
    assert "[click me|https://evil.example] {code}rm -rf /{code} !https://evil.example/x.png!" in jira_reads(text)
    assert "Advisories (30): CVE-2024-1000, " in jira_reads(text) and ", CVE-2024-1019 and 10 more\n" in text


async def test_comment_is_posted_once_per_dedup_key_and_adds_labels(world: World) -> None:
    item, _ = work_item("trivy/trivy-head_alpine-39.json", WorkItemKind.OS_REBUILD)
    ref = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    ask = CommentInput(key=ref.key, body="Approval timed out.", labels=["fixloop-escalated"], dedup_key="esc-1")
    await world.jira.comment(ask)
    await world.jira.comment(ask)
    assert comments(world, ref.key) == ["Approval timed out.\n\nfixloop-ref: esc-1"]
    assert "fixloop-escalated" in world.jira_client.get_issue(ref.key).labels


async def test_close_done_transitions_to_done_and_other_resolutions_only_label(world: World) -> None:
    item, _ = work_item("trivy/trivy-head_alpine-39.json", WorkItemKind.OS_REBUILD)
    done = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    close = CloseWorkItemInput(key=done.key, resolution="done", comment="Verified: error rate 0.4% -> 0.1%.")
    await world.jira.close_work_item(close)
    await world.jira.close_work_item(close)  # a retry changes nothing
    assert world.jira_client.get_issue(done.key).status == "Done"
    assert read(world, done.key) == ["Verified: error rate 0.4% -> 0.1%.\n\nfixloop-ref: close:done"]

    other, _ = work_item("trivy/trivy-head_npm.json", WorkItemKind.DEPENDENCY_BUMP)
    wont = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=other))
    status = world.jira_client.get_issue(wont.key).status
    await world.jira.close_work_item(CloseWorkItemInput(key=wont.key, resolution="won't do", comment="Reverted."))
    issue = world.jira_client.get_issue(wont.key)
    assert issue.status == status and "fixloop-wont-do" in issue.labels


async def test_link_adds_one_remote_link_per_url(world: World) -> None:
    item, _ = work_item("trivy/trivy-head_gomod.json", WorkItemKind.DEPENDENCY_BUMP, target="go.mod")
    ref = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    url = f"{world.env['FIXLOOP_GITLAB_URL']}/platform/gitops/-/merge_requests/3"
    first = await world.jira.link(LinkInput(key=ref.key, url=url, title="Merge request !3"))
    again = await world.jira.link(LinkInput(key=ref.key, url=url, title="Merge request !3"))
    assert first.created and (again.id, again.created) == (first.id, False)
    links = [link.raw["object"] for link in world.jira_client.jira.remote_links(ref.key)]
    assert [(o["url"], o["title"]) for o in links] == [(url, "Merge request !3")]


async def test_an_unknown_issue_is_a_non_retryable_not_found(world: World) -> None:
    with pytest.raises(ApplicationError) as raised:
        await world.jira.comment(CommentInput(key="OPS-999", body="x", dedup_key="k"))
    assert raised.value.non_retryable and raised.value.type == "NotFound"
    assert world.env["FIXLOOP_JIRA_API_TOKEN"] not in raised.value.message


EVIL = "h1. [evil|http://x] [~admin] {html}<img src=x onerror=alert(1)>{html} !x.png! see https://evil.example/a"


async def test_alert_text_arrives_inert_in_the_summary_description_and_comments(world: World) -> None:
    """An alert's title and service carrying Jira wiki links, a mention, the html macro, an image, a heading and a
    bare URL: the summary is one plain line, and the description and every comment render none of it."""
    item = WorkItem(
        id="wi-" + "cd" * 12,
        kind=WorkItemKind.ALERT_INVESTIGATION,
        title=EVIL + "\nh2. second line",
        severity=Severity.HIGH,
        signals=["s1"],
        service="[~admin]",
        note=EVIL,
    )
    ref = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    issue = world.jira_client.get_issue(ref.key)
    assert "\n" not in issue.summary and issue.summary.startswith("h1. [evil|http://x] [~admin]")
    description = issue.description or ""
    assert jira_constructs(description) == [], description
    assert "Service: [~admin]\n" in jira_reads(description) and f"Note: {EVIL}" in jira_reads(description)

    body = f"1 alert(s) on [~admin] joined this work item:\n- {EVIL} (datadog)\n{EVIL}"
    await world.jira.comment(CommentInput(key=ref.key, body=body, labels=["fixloop-alert"], dedup_key="joined-1"))
    await world.jira.close_work_item(CloseWorkItemInput(key=ref.key, resolution="won't do", comment=EVIL))
    assert read(world, ref.key) == [f"{body}\n\nfixloop-ref: joined-1", f"{EVIL}\n\nfixloop-ref: close:won't do"]
    page = httpx.get(ref.url).text  # the sandbox's human view shows the text, not its escapes
    assert html.escape("- h1. [evil|http") in page and "\\[" not in page
