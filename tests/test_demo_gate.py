"""The demo's human gate in pieces: what a gate is about, the diff stat, the deploys and verdicts it announces once
each, the command it prints, and the prompt that gives up when the question is decided elsewhere."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fixloop.app.demo import DemoError, Loop, Prompt, announcements, diff_stat, fixloop_command, gate_kind
from fixloop.core.verification import VerdictResult
from fixloop.workflows.contracts.loop import EnvironmentState, Gate, GateKind, LoopState
from fixloop.workflows.contracts.merge_request import MergeRequestRef
from fixloop.workflows.contracts.verify import Verdict

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _mr(iid: int) -> MergeRequestRef:
    url = f"http://sandbox/gitlab/platform/gitops/-/merge_requests/{iid}"
    return MergeRequestRef(project="platform/gitops", iid=iid, url=url, branch=f"b{iid}", head_sha="a" * 40)


def test_a_gate_is_a_change_a_promotion_or_a_rollback() -> None:
    def gate(kind: GateKind, environment: str | None = None) -> Gate:
        mr = _mr(1)
        return Gate(kind=kind, iid=mr.iid, url=mr.url, title="t", environment=environment)

    assert gate_kind(gate(GateKind.CHANGE)) == "change"
    assert gate_kind(gate(GateKind.PROMOTION, "staging")) == "promotion to staging"
    assert gate_kind(gate(GateKind.ROLLBACK, "staging")) == "rollback"


def test_the_diff_stat_counts_added_and_removed_lines_not_the_file_headers() -> None:
    diff = (
        "--- a/requirements.txt\n+++ b/requirements.txt\n@@ -1,2 +1,2 @@\n-Werkzeug==0.11\n+Werkzeug==0.15.3\n flask\n"
    )
    assert diff_stat([{"new_path": "services/payments/requirements.txt", "diff": diff}]) == (
        "1 file changed, +1 -1: services/payments/requirements.txt"
    )
    many = [{"new_path": f"f{i}", "diff": "+x\n+y\n"} for i in range(7)]
    assert diff_stat(many) == "7 files changed, +14 -0: f0, f1, f2, f3, f4, ..."


def test_deploys_verdicts_and_the_revert_are_announced_once_each_with_loop_text_escaped() -> None:
    loop = Loop("remediate/x", title="Bump [bold]evil[/bold] 1 → 2")
    state = LoopState(merge_request=_mr(1))
    assert announcements(loop, state) == []
    env = EnvironmentState(name="staging", tag="1.4.3", revision="main@sha1:" + "b" * 40, deployed_at=NOW)
    state.environments = [env]
    (deployed,) = announcements(loop, state)
    assert "deployed to staging (revision main@sha1:bbbb" in deployed and r"\[bold]evil" in deployed
    assert announcements(loop, state) == []  # once
    env.verdict = Verdict(result=VerdictResult.FAIL, summary="error rate rose 0.5 % -> 1.5 %")
    state.revert = _mr(4)
    verdict, revert = announcements(loop, state)
    assert "verified in staging: fail (error rate rose 0.5 % -> 1.5 %)" in verdict
    assert "rollback merge request !4 opened" in revert


def test_the_printed_command_names_this_environment_s_fixloop() -> None:
    command = fixloop_command()
    assert command.endswith("fixloop")
    assert Path(command).is_file(), command  # relative to the working directory, or absolute: typed as shown


def _prompt(lines: list[str]) -> tuple[Prompt, threading.Event]:
    """A Prompt reading ``lines`` one per call, then blocking (a person who does not answer) until released."""
    release = threading.Event()
    feed = iter(lines)

    def ask(_: str) -> str:
        line = next(feed, None)
        if line is None:
            release.wait()
            raise EOFError
        return line

    return Prompt(ask), release


async def test_a_question_decided_elsewhere_returns_none_and_the_next_question_gets_the_next_line() -> None:
    decided = asyncio.Event()
    prompt, release = _prompt([])
    try:
        asked = asyncio.ensure_future(prompt.ask(decided.wait()))
        await asyncio.sleep(0)
        assert not asked.done()  # nobody answered: still asking
        decided.set()
        assert await asked is None
    finally:
        release.set()
    with pytest.raises(DemoError, match="standard input is closed"):
        await prompt.ask(asyncio.Event().wait())


async def test_an_answer_is_returned_and_the_elsewhere_watch_stopped() -> None:
    prompt, release = _prompt(["y"])
    watched = asyncio.Event()

    async def elsewhere() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            watched.set()

    try:
        assert await prompt.ask(elsewhere()) == "y"
        await asyncio.wait_for(watched.wait(), 5)
    finally:
        release.set()
