"""The interactive ``fixloop demo`` in a pseudo-terminal, as a person runs it (pexpect), reviewed in a real browser
(Debian's Chromium through Playwright, as ``test_review_browser``): its human gate shows the Jira issue, the merge
request and the diff stat, and the command that approves it elsewhere. At the first gate every open demo merge
request's page shows its description and diff; the printed command, run as printed from the same directory,
approves the first, the next is approved and merged through its page, and each time the waiting prompt notices and
goes on; an empty answer does not approve (``[y/N]``). About 60 s on 2 cores: the demo runs until its third gate,
then Ctrl-C. Screenshots under ``tests/.artefacts/<test name>/``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pexpect
import pytest
from playwright.async_api import Page, async_playwright, expect

from fixloop.workflows.contracts.merge_request import MergeRequestRef
from tests.e2e.test_review_browser import CHROMIUM, INSTALL, approve_and_merge
from tests.e2e.test_review_browser import artefacts as artefacts  # noqa: PLC0414 - the fixture

ROOT = Path(__file__).resolve().parents[2]
GATE = re.compile(r"Approve and merge !(\d+) as reviewer now\? \[y/N\] ")


async def open_merge_requests(state: Path) -> tuple[str, str, list[dict]]:
    """The running demo's sandbox GitLab URL, the reviewer's token and its open merge requests (the API's list)."""
    info = json.loads((state / "demo.json").read_text())
    token = json.loads(Path(info["credentials"]).read_text())["gitlab_reviewer_token"]
    api = f"{info['gitlab_url']}/api/v4/projects/{info['project'].replace('/', '%2F')}/merge_requests"
    async with httpx.AsyncClient(headers={"PRIVATE-TOKEN": token}, timeout=10) as http:
        listed = (await http.get(api, params={"state": "opened"})).raise_for_status().json()
    return info["gitlab_url"], token, listed


async def see_the_page(page: Page, mr: dict, gitlab_url: str, token: str) -> None:
    """Merge request ``mr``'s page at its ``web_url``: its title, a description and the diff of every file."""
    api = f"{gitlab_url}/api/v4/projects/{mr['project_id']}/merge_requests/{mr['iid']}/changes"
    async with httpx.AsyncClient(headers={"PRIVATE-TOKEN": token}, timeout=10) as http:
        changes = (await http.get(api)).raise_for_status().json()["changes"]
    assert (await page.goto(mr["web_url"])).ok
    await expect(page.locator("#title")).to_have_text(mr["title"])
    assert (await page.locator("#description").inner_text()).strip()
    assert changes
    for change in changes:
        await expect(page.locator(f'#changes .file[data-path="{change["new_path"]}"]')).to_be_visible()


async def test_the_demo_prompt_returns_when_the_merge_request_is_approved_elsewhere(
    tmp_path: Path, artefacts: Path
) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing: {INSTALL} (make test does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    state = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")}
    env.update(TERM="xterm", COLUMNS="250")
    demo = pexpect.spawn(
        sys.executable,
        ["-m", "fixloop", "demo", "--state-dir", str(state), "--timeout", "600", "--no-keep"],
        cwd=str(ROOT),
        env=env,
        dimensions=(60, 250),
        encoding="utf-8",
        codec_errors="replace",
        timeout=240,
    )
    log = tmp_path / "demo-pty.log"
    demo.logfile_read = log.open("w")
    try:
        await asyncio.to_thread(demo.expect, GATE)
        first = int(demo.match.group(1))
        gate = demo.before[demo.before.rfind("gate") - 40 :]
        assert f"merge request !{first}: http" in gate, gate
        assert re.search(r"Jira OPS-\d+: http\S+/browse/OPS-\d+", gate), gate
        assert re.search(r"\d+ files? changed, \+\d+ -\d+: \S", gate), gate
        hint = re.search(r"or approve it elsewhere: in GitLab, or (.+approve \d+ --state-dir \S+)", gate)
        assert hint, gate
        command = shlex.split(hint.group(1).strip())
        assert command[0] != "fixloop" or (ROOT / command[0]).exists(), command  # typed as printed, it works
        gitlab_url, token, listed = await open_merge_requests(state)
        assert len(listed) == 3, [mr["title"] for mr in listed]  # the three fixes wait at their gates
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            for mr in listed:  # every demo merge request can be judged in the browser
                await see_the_page(page, mr, gitlab_url, token)
                await page.screenshot(path=artefacts / f"mr-{mr['iid']}.png", full_page=True)
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
            assert done.returncode == 0, done.stderr
            assert f"!{first} approved by reviewer and merged" in done.stdout
            # the prompt nobody answered notices the approval and the demo goes on to the next gate
            await asyncio.to_thread(demo.expect, rf"!{first} was approved elsewhere by reviewer")
            await asyncio.to_thread(demo.expect, GATE)
            second = int(demo.match.group(1))
            assert second != first
            mr = next(m for m in listed if m["iid"] == second)
            ref = MergeRequestRef(
                project=info_project(state),
                iid=second,
                url=mr["web_url"],
                branch=mr["source_branch"],
                head_sha=mr["sha"],
            )
            await approve_and_merge(page, ref, {"FIXLOOP_GITLAB_URL": gitlab_url}, token, artefacts, "demo")
            await asyncio.to_thread(demo.expect, rf"!{second} was approved elsewhere by reviewer")
            await browser.close()
        await asyncio.to_thread(demo.expect, GATE)
        third = int(demo.match.group(1))
        assert third not in (first, second)
        demo.sendline("")  # Enter alone: no
        await asyncio.to_thread(demo.expect, rf"left !{third} waiting")
    finally:
        if demo.isalive():
            demo.sendintr()
            demo.expect(pexpect.EOF, timeout=60)
        demo.close()
        demo.logfile_read.close()
    assert demo.exitstatus != 0 or demo.signalstatus is not None  # stopped by Ctrl-C, not finished


def info_project(state: Path) -> str:
    return str(json.loads((state / "demo.json").read_text())["project"])
