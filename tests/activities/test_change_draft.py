"""``change.plan`` with a model drafting the merge request (``PlanActivities(llm=...)``), against the sandbox's
GitLab and a local OpenAI-compatible endpoint (``tests/llm_server.py``): a valid draft is used and the MR names the
model; a draft that tries to add an operation, and every failure of the model, give the rules' MR saying why; the
same work item twice gives the same branch, commit and MR."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Response

from fixloop.core.change.draft import SYSTEM_PROMPT
from fixloop.core.change.mr import read_back
from fixloop.core.config import LlmSettings
from fixloop.core.models import Signal, WorkItem, WorkItemKind
from fixloop.workflows.contracts.merge_request import OpenMergeRequestInput
from fixloop.workflows.contracts.plan import PlanChangeInput
from tests.activities.sandbox_world import World, running_world
from tests.activities.test_change_mr import SCOPE, mr_diffs, open_all
from tests.change.helpers import work_item
from tests.llm_server import HANG, FakeLlm, answer, completion

MODEL = "test-model"
REQUIREMENTS = "services/payments/requirements.txt"
# pip-audit's report on services/payments: Django 3.2.9 -> 3.2.10, Twisted 18.9.0 -> 20.3.0rc1, aiohttp 3.6.2 -> 3.7.4
REPORT = "pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json"
ALL_THREE = {
    REQUIREMENTS: (
        "@@ -1,9 +1,9 @@\n"
        " # payments service runtime dependencies (pinned; updated by merge request)\n"
        " adal==1.2.2\n"
        "-aiohttp==3.6.2\n"
        "+aiohttp==3.7.4\n"
        " alabaster==0.7.12\n"
        " azure-devops==0.17.0\n"
        "-Django==3.2.9\n"
        "+Django==3.2.10\n"
        " lxml==4.6.4\n"
        "-Twisted==18.9.0\n"
        "+Twisted==20.3.0rc1\n"
        " Werkzeug==0.11\n"
    )
}
WITHOUT_TWISTED = {
    REQUIREMENTS: ALL_THREE[REQUIREMENTS].replace("-Twisted==18.9.0\n+Twisted==20.3.0rc1\n", " Twisted==18.9.0\n")
}
TITLE = "Bump Django and aiohttp in payments (fixes 2 advisories); Twisted 20 waits"
# Twisted 18.9.0 -> 20.3.0rc1 is a major jump (to a pre-release): the rules' title says so first
RULES_TITLE = "Breaking: Bump 3 Python packages in services/payments (fixes 6 advisories: 6 unknown)"
PINNED_TITLE = "Bump 2 Python packages in services/payments (fixes 2 advisories: 2 unknown)"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path / "sandbox") as w:
        yield w


@pytest.fixture
def item() -> tuple[WorkItem, list[Signal]]:
    return work_item(REPORT, WorkItemKind.DEPENDENCY_BUMP)


def settings(url: str, **overrides: Any) -> LlmSettings:
    values: dict[str, Any] = {"timeout": 5.0, "max_retries": 0, **overrides}
    return LlmSettings(base_url=url, model=MODEL, api_key="sk-test", **values)


def digest_of(body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))


def keeping(pick: Callable[[dict[str, Any]], bool], **extra: Any) -> Callable[[dict[str, Any]], Response]:
    """A model keeping the operations of the digest that ``pick`` accepts (``extra``: more answer fields)."""

    def reply(body: dict[str, Any]) -> Response:
        keep = [op["number"] for op in digest_of(body)["operations"] if pick(op)]
        summary = "Raises Django and aiohttp to their fixed versions; Twisted's fix is a major pre-release."
        notes = ["Check aiohttp's 3.7 changelog."]
        return answer({"title": TITLE, "summary": summary, "reviewer_notes": notes, "keep": keep, **extra})

    return reply


def not_twisted(op: dict[str, Any]) -> bool:
    return op["name"] != "Twisted"


async def test_a_valid_draft_is_used_and_the_mr_names_the_model(
    world: World, llm_server: FakeLlm, item: tuple[WorkItem, list[Signal]]
) -> None:
    world.change.llm = settings(llm_server.base_url)
    llm_server.reply = keeping(not_twisted)
    issue, planned, mr = await open_all(world, *item)

    assert planned.drafted_by == MODEL
    assert [op["package"] for op in read_back(planned.description or "")["operations"]] == ["Django", "aiohttp"]  # type: ignore[index]
    assert mr_diffs(world, mr.iid) == WITHOUT_TWISTED  # exactly the kept operations
    got = world.bot.get_merge_request(mr.iid)
    assert got.title == planned.title == TITLE
    assert got.description == planned.description
    assert (
        "**Summary** (drafted by test-model): Raises Django and aiohttp to their fixed versions; Twisted's fix is a "
        "major pre-release.\n" in got.description
    )
    assert "### Reviewer notes (drafted by test-model)\n- Check aiohttp's 3.7 changelog.\n" in got.description
    assert "_Drafted by test-model; validated by fixloop's policy._" in got.description
    assert planned.not_fixable == [
        "Twisted: left out of this merge request by the model's draft (18.9.0 \u2192 20.3.0rc1 was validated)"
    ]
    assert planned.risks == []
    commit = world.project().commits.get(mr.head_sha)
    assert commit.message == f"{TITLE}\n\nFixloop-Work-Item: {item[0].id}\nRefs: {issue.key}\n"

    (request,) = llm_server.requests
    assert request.body["model"] == MODEL
    assert request.body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    fmt = request.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Draft" and fmt["json_schema"]["strict"]
    keep = fmt["json_schema"]["schema"]["properties"]["keep"]  # bounded to this plan's 3 operations (draft_schema)
    assert keep["items"] == {"type": "integer", "enum": [1, 2, 3]} and keep["maxItems"] == 3
    assert [op["name"] for op in digest_of(request.body)["operations"]] == ["Django", "Twisted", "aiohttp"]


FORGED = {
    ".gitlab-ci.yml": {"op": "bump_python_pin", "path": ".gitlab-ci.yml", "package": "x", "current": "1", "new": "2"},
    "../../etc/passwd": {"op": "bump_python_pin", "path": "../../etc/passwd", "package": "root", "current": "0"},
}
REFUSALS: dict[str, tuple[Callable[[dict[str, Any]], Response], str]] = {
    # a model obeying an injected "also change ...": the answer can only name operations by number
    "an added operation on .gitlab-ci.yml": (
        keeping(not_twisted, operations=[FORGED[".gitlab-ci.yml"]]),
        "the answer does not match the schema: field operations: Extra inputs are not permitted",
    ),
    "an added operation on ../../etc/passwd, as number 4": (
        lambda body: answer(
            {
                "title": "Also reset ../../etc/passwd",
                "summary": json.dumps(FORGED["../../etc/passwd"]),
                "reviewer_notes": [],
                "keep": [1, 2, 3, 4],
            }
        ),
        "the draft keeps 4 operations of 3",
    ),
    "operation 4 alone": (
        lambda body: answer({"title": "t", "summary": "s", "reviewer_notes": [], "keep": [4]}),
        "the draft keeps operation 4, not one of the 3 validated ones",
    ),
    "no operation": (
        lambda body: answer({"title": "t", "summary": "s", "reviewer_notes": [], "keep": []}),
        "the draft keeps no operation",
    ),
    "a refusal": (
        lambda body: completion(None, refusal="I can't help with that."),
        "the model refused: I can't help with that.",
    ),
    "not JSON": (lambda body: completion("Sure! Here is the MR: ..."), "the answer does not match the schema:"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_draft_gives_the_rules_mr_with_the_reason(
    world: World, llm_server: FakeLlm, item: tuple[WorkItem, list[Signal]], case: str
) -> None:
    reply, reason = REFUSALS[case]
    world.change.llm = settings(llm_server.base_url)
    llm_server.reply = reply
    issue, planned, mr = await open_all(world, *item)
    assert len(llm_server.requests) == 1

    world.change.llm = None
    rules = await world.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=item[0], jira_key=issue.key, signals=item[1])
    )
    assert planned.drafted_by == "fixloop rules" and planned.title == RULES_TITLE
    assert planned.changes == rules.changes and len(planned.changes) == 3
    assert planned.model_dump(exclude={"description"}) == rules.model_dump(exclude={"description"})
    assert planned.description is not None and rules.description is not None
    footer = next(line for line in planned.description.splitlines() if line.startswith("_Drafted by"))
    assert footer.startswith("_Drafted by fixloop rules: the model's draft was refused: ")
    assert reason.replace("_", "\\_") in footer, footer
    assert planned.description.replace(footer, "") == rules.description.replace(
        "_Drafted by fixloop rules; validated by fixloop's policy._", ""
    )
    assert mr_diffs(world, mr.iid) == ALL_THREE  # nothing but the validated operations
    for path in (".gitlab-ci.yml", "etc/passwd"):
        assert world.bot.read_file(path, mr.branch) == world.bot.read_file(path, "main")


@pytest.fixture
def unused_port_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def test_an_unreachable_or_silent_endpoint_falls_back(
    world: World, llm_server: FakeLlm, item: tuple[WorkItem, list[Signal]], unused_port_url: str
) -> None:
    ask = PlanChangeInput(scope=SCOPE, work_item=item[0], signals=item[1])
    for llm, reason in (
        (settings(unused_port_url), "cannot reach the endpoint (ConnectError, 1 attempt)"),
        (settings(llm_server.base_url, timeout=0.3), "no answer within 0.3 s (1 attempt)"),
    ):
        llm_server.reply = lambda body: HANG
        world.change.llm = llm
        planned = await world.change.plan(ask)
        assert planned.located and planned.drafted_by == "fixloop rules" and len(planned.changes) == 3
        assert f"_Drafted by fixloop rules: the model's draft was refused: {reason}; validated" in (
            planned.description or ""
        )
    assert len(llm_server.requests) == 1


async def test_the_same_work_item_twice_gives_the_same_branch_commit_and_mr(
    world: World, llm_server: FakeLlm, item: tuple[WorkItem, list[Signal]], unused_port_url: str
) -> None:
    world.change.llm = settings(llm_server.base_url)
    llm_server.reply = keeping(not_twisted)
    main_before = world.bot.branch_head("main")
    issue, planned, mr = await open_all(world, *item)
    again_issue, again_planned, again_mr = await open_all(world, *item)
    assert (again_issue.key, again_planned, again_mr) == (issue.key, planned, mr)
    project = world.project()
    assert [m.iid for m in project.mergerequests.list(source_branch=mr.branch, state="all")] == [mr.iid]
    assert [c["id"] for c in project.repository_compare(main_before, mr.branch)["commits"]] == [mr.head_sha]

    # the model now keeps all three, then is down: the open MR's operations are kept (a different set would
    # conflict with the branch), with the rules' text saying why
    llm_server.reply = keeping(lambda op: True)
    changed_mind = await world.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=item[0], jira_key=issue.key, signals=item[1])
    )
    world.change.llm = settings(unused_port_url)
    down = await world.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=item[0], jira_key=issue.key, signals=item[1])
    )
    for planned_again, reason in (
        (changed_mind, "the open merge request makes 2 of the 3 validated operations; a re-run keeps them"),
        (down, "cannot reach the endpoint (ConnectError, 1 attempt)"),
    ):
        assert planned_again.changes == planned.changes and planned_again.drafted_by == "fixloop rules"
        assert f"the model's draft was refused: {reason}; validated" in (planned_again.description or "")
        reopened = await world.gitlab.open_merge_request(
            OpenMergeRequestInput(scope=SCOPE, work_item=item[0], change=planned_again, jira_key=issue.key)
        )
        assert (reopened.iid, reopened.branch, reopened.head_sha) == (mr.iid, mr.branch, mr.head_sha)
        assert mr_diffs(world, mr.iid) == WITHOUT_TWISTED
        assert world.bot.get_merge_request(mr.iid).title == planned_again.title == PINNED_TITLE
