"""A person reviews in a real browser: headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright; no
browser is downloaded) against the sandbox, the Temporal dev server with its Web UI, the real worker and a real loop
(the alpine base image bump, as ``test_sandbox_loop`` runs it).

- The review pages: each merge request the loop opens (its Dockerfile change, then the staging tag change) is opened
  at the ``url`` the loop recorded; its title, description and the diff of every file (the API's ``changes``) are
  on the page; the reviewer signs in with a token, clicks Approve (the page shows who approved which SHA), clicks
  Merge (merged, the merge commit), and the loop moves past the gate (its ``status`` query). The project's merge
  request list and the Jira issue's browse page (its summary, status and the link to the merge request) are opened
  too.
- The Temporal UI: the workflow list and the loop's workflow page show its id.

Screenshots go to ``tests/.artefacts/<test name>/`` (gitignored; the path is printed). Without ``/usr/bin/chromium``
the tests skip naming the install command, or fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio import workflow
from temporalio.client import WorkflowHandle

with workflow.unsafe.imports_passed_through():
    from fixloop.app.worker import build_worker
    from fixloop.core.models import WorkItemKind
    from fixloop.sandbox.app import Sandbox
    from fixloop.sandbox.seed import GITOPS_PROJECT
    from fixloop.workflows.contracts.loop import LoopOptions, LoopState, RemediationInput, Stage, loop_id
    from fixloop.workflows.contracts.merge_request import MergeRequestRef
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.devserver import DevUI, dev_ui  # noqa: F401 - the fixture
    from tests.e2e.test_sandbox_loop import item_of, sandbox, sandbox_integrations  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install -y chromium"
DEADLINE = 60.0  # seconds of real time for the loop to reach a state
BEFORE_THE_GATE = {Stage.OPEN_WORK_ITEM, Stage.INVESTIGATE, Stage.PLAN_CHANGE, Stage.OPEN_MERGE_REQUEST}


@pytest.fixture
def artefacts(request: pytest.FixtureRequest) -> Path:
    """``tests/.artefacts/<test name>/``, emptied; its path printed."""
    path = ROOT / "tests" / ".artefacts" / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    print(f"screenshots: {path}")
    return path


@pytest.fixture(scope="module", autouse=True)
def chromium() -> Path:
    """``/usr/bin/chromium``, checked before any other fixture of the module starts a server: missing, the tests
    skip naming the install command, or fail when ``CI=true``."""
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing: {INSTALL} (make test does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, through Playwright (never a browser of Playwright's own)."""
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(chromium))
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Review:
    """A running loop and a browser tab: the sandbox (``sb``, its ``env``), the loop's ``handle``, the ``page``."""

    sb: Sandbox
    env: dict[str, str]
    handle: WorkflowHandle[Any, Any]
    page: Page


@pytest.fixture
async def review(
    dev_ui: DevUI,  # noqa: F811
    sandbox: tuple[Sandbox, dict[str, str]],  # noqa: F811
    browser: Browser,
) -> AsyncIterator[Review]:
    """The worker on the sandbox, the alpine rebuild's loop (terminated on the way out) and a browser tab."""
    sb, env = sandbox
    item, found = item_of("trivy/trivy-0.22-fulldb_alpine-39.json", WorkItemKind.OS_REBUILD)
    options = LoopOptions(poll_interval=timedelta(milliseconds=300), verify_delay=timedelta(seconds=3))
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    async with build_worker(dev_ui.env.client, task_queue, integrations=sandbox_integrations(env)):
        handle = await dev_ui.env.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=GITOPS_PROJECT, work_item=item, signals=found, options=options),
            id=f"{loop_id(GITOPS_PROJECT, item.id)}/{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
            static_summary=item.title,
        )
        try:
            yield Review(sb, env, handle, await browser.new_page(viewport={"width": 1440, "height": 900}))
        finally:
            await handle.terminate("the browser test is done")


def gated(s: LoopState) -> MergeRequestRef | None:
    """The merge request the loop waits at the gate for, or None."""
    here = s.environments[s.target] if s.target < len(s.environments) else None
    if s.stage is not Stage.AWAIT_APPROVAL:
        return None
    return s.revert or (here.merge_request if here is not None else None) or s.merge_request


async def until(handle: WorkflowHandle[Any, Any], what: str, ok: Callable[[LoopState], bool]) -> LoopState:
    """The loop's ``status`` once ``ok`` holds (within ``DEADLINE``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        s = await handle.query(RemediationWorkflow.status)
        if ok(s):
            return s
        assert s.stage is not Stage.DONE and loop.time() < deadline, f"{what}: {s.stage.value} {s.evidence[-2:]}"
        await asyncio.sleep(0.2)


def passed(iid: int) -> Callable[[LoopState], bool]:
    def check(s: LoopState) -> bool:
        waiting = gated(s)
        return s.stage not in BEFORE_THE_GATE and (waiting is None or waiting.iid != iid)

    return check


async def approve_and_merge(
    page: Page, mr: MergeRequestRef, env: dict[str, str], token: str, shots: Path, name: str
) -> None:
    """Open ``mr`` at its URL, check its title, description and diff against the API, sign in if needed, Approve,
    then Merge, screenshotting each step."""
    api = f"{env['FIXLOOP_GITLAB_URL']}/api/v4/projects/{mr.project.replace('/', '%2F')}/merge_requests/{mr.iid}"
    changes = httpx.get(f"{api}/changes", headers={"PRIVATE-TOKEN": token}, timeout=10).raise_for_status().json()
    assert (await page.goto(mr.url)).ok
    await expect(page.locator("#title")).to_have_text(changes["title"])
    await expect(page.locator("#state")).to_have_text("Open")
    assert (await page.locator("#description").inner_text()).strip()
    assert changes["changes"], "the merge request changes nothing"
    for change in changes["changes"]:
        file = page.locator(f'#changes .file[data-path="{change["new_path"]}"]')
        await expect(file).to_be_visible()
        added = [line for line in change["diff"].splitlines() if line.startswith("+")]
        shown = await file.locator("tr.add td:last-child").all_inner_texts()
        assert shown == added, (change["new_path"], shown, added)
    await expect(page.locator("#head")).to_have_text(mr.head_sha)
    await page.screenshot(path=shots / f"{name}-1-open.png", full_page=True)

    who = page.locator("#whoami")
    if "Signed in" not in await who.inner_text():
        await page.fill("#token", token)
        await page.click("#signin button[type=submit]")
    await expect(who).to_have_text("Signed in as Riley Reviewer (@reviewer)")
    await page.click("#approve")
    await expect(page.locator("#approvals")).to_contain_text(f"Approved by Riley Reviewer @reviewer at {mr.head_sha}")
    await expect(page.locator("#merge-status")).to_have_text("Ready to merge.")
    await page.screenshot(path=shots / f"{name}-2-approved.png", full_page=True)
    await page.click("#merge")
    await expect(page.locator("#state")).to_have_text("Merged")
    await expect(page.locator("#merge-commit")).to_have_text(
        httpx.get(api, headers={"PRIVATE-TOKEN": token}, timeout=10).json()["merge_commit_sha"]
    )
    await page.screenshot(path=shots / f"{name}-3-merged.png", full_page=True)


async def test_a_reviewer_approves_and_merges_each_merge_request_in_the_browser(
    review: Review, artefacts: Path
) -> None:
    env, handle, page = review.env, review.handle, review.page
    token = review.sb.credentials.gitlab_reviewer_token.get_secret_value()
    fix = gated(await until(handle, "the fix at the gate", lambda s: gated(s) is not None))
    assert fix is not None and fix.url.endswith(f"/gitlab/{GITOPS_PROJECT}/-/merge_requests/{fix.iid}")
    await approve_and_merge(page, fix, env, token, artefacts, "fix")
    staged = await until(handle, "the staging tag change at the gate",
                         lambda s: passed(fix.iid)(s) and gated(s) is not None)
    assert staged.merge_request is not None and staged.merge_request.iid == fix.iid  # past the fix's gate
    tag = gated(staged)
    assert tag is not None and tag.iid != fix.iid and staged.environments[0].name == "staging"
    await approve_and_merge(page, tag, env, token, artefacts, "staging")
    after = await until(handle, "past the staging gate", passed(tag.iid))
    assert after.stage in (Stage.AWAIT_DEPLOY, Stage.AWAIT_ROLLOUT, Stage.VERIFY), after.stage
    assert after.environments[0].merge_request is not None and after.environments[0].merge_request.iid == tag.iid

    listing = page.locator("#merge-requests")
    await page.goto(f"{env['FIXLOOP_GITLAB_URL']}/{GITOPS_PROJECT}/-/merge_requests?state=merged")
    for mr in (fix, tag):
        await expect(listing.locator(f'a[href="{mr.url}"]')).to_be_visible()
    await page.screenshot(path=artefacts / "merge-requests.png", full_page=True)

    assert after.issue is not None
    assert (await page.goto(after.issue.url)).ok
    issue = httpx.get(
        f"{env['FIXLOOP_JIRA_URL']}/rest/api/2/issue/{after.issue.key}",
        auth=(env["FIXLOOP_JIRA_EMAIL"], env["FIXLOOP_JIRA_API_TOKEN"]), timeout=10,
    ).raise_for_status().json()["fields"]
    await expect(page.locator("#summary")).to_have_text(issue["summary"])
    await expect(page.locator("#status")).to_have_text(issue["status"]["name"])
    for mr in (fix, tag):
        await expect(page.locator(f'#remote-links a[href="{mr.url}"]')).to_be_visible()
    await page.screenshot(path=artefacts / "jira-issue.png", full_page=True)


async def test_the_temporal_ui_lists_the_loop_and_shows_its_workflow(
    review: Review, dev_ui: DevUI, artefacts: Path  # noqa: F811
) -> None:
    handle, page = review.handle, review.page
    await until(handle, "the fix at the gate", lambda s: gated(s) is not None)
    await page.goto(f"{dev_ui.ui}/namespaces/default/workflows")
    row = page.get_by_role("link", name=handle.id, exact=True)
    await expect(row).to_be_visible(timeout=20_000)
    await page.screenshot(path=artefacts / "workflows.png", full_page=True)
    await row.click()
    await expect(page.get_by_text(handle.id, exact=True).first).to_be_visible(timeout=20_000)
    await expect(page.get_by_text("Running").first).to_be_visible()
    await page.screenshot(path=artefacts / "workflow.png", full_page=True)
