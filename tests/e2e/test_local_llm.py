"""A real model drafting a merge request: ``change.plan`` with ``PlanActivities(llm=...)`` pointed at llama.cpp's
server on the bundled SmolLM2-135M-Instruct (the ``local_llm`` fixture, ``fixloop.app.llmserve``), against the
sandbox's GitLab, as the worker runs it (stages 1-3: Jira issue, plan, MR). The model's valid draft is used and the
MR names the model; a real answer fixloop refuses (cut off at the server's token limit) gives the rules' MR saying
why; either way the MR makes only validated operations. About 20 s per draft on 2 loaded cores."""

from __future__ import annotations

from fixloop.app.llmserve import LocalServer, local_server
from fixloop.core.change.mr import read_back
from fixloop.core.models import Signal, WorkItem
from fixloop.workflows.contracts.plan import PlanChangeInput
from tests.activities.sandbox_world import World
from tests.activities.test_change_draft import ALL_THREE, REQUIREMENTS, RULES_TITLE, item, world  # noqa: F401 - fixtures
from tests.activities.test_change_mr import SCOPE, mr_diffs, open_all

# the plan's validated operations, in the order of their lines in the requirements file
VALIDATED = {"aiohttp": ("3.6.2", "3.7.4"), "Django": ("3.2.9", "3.2.10"), "Twisted": ("18.9.0", "20.3.0rc1")}


def changed_lines(diffs: dict[str, str]) -> dict[str, list[str]]:
    """``{path: the diff's removed and added lines}`` (the hunks' context depends on which lines change)."""
    return {p: [ln for ln in d.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
            for p, d in diffs.items()}


async def test_the_real_model_drafts_the_mr_and_it_is_validated(
    world: World, local_llm: LocalServer, item: tuple[WorkItem, list[Signal]]  # noqa: F811
) -> None:
    world.change.llm = local_llm.settings()
    issue, planned, mr = await open_all(world, *item)
    footer = next(line for line in (planned.description or "").splitlines() if line.startswith("_Drafted by"))
    assert planned.drafted_by == local_llm.model, footer  # the model's draft passed fixloop's checks
    shown = local_llm.model.replace("_", "\\_")  # the model's name as the MR's Markdown escapes it
    assert footer == f"_Drafted by {shown}; validated by fixloop's policy._"
    got = world.bot.get_merge_request(mr.iid)
    assert got.title == planned.title and got.description == planned.description
    assert f"(drafted by {shown})" in got.description
    kept = [op["package"] for op in read_back(got.description)["operations"]]  # type: ignore[index]
    assert kept and set(kept) <= set(VALIDATED) and len(set(kept)) == len(kept)
    expected = [line for name in sorted(kept, key=list(VALIDATED).index) for line in (
        f"-{name}=={VALIDATED[name][0]}", f"+{name}=={VALIDATED[name][1]}")]
    assert changed_lines(mr_diffs(world, mr.iid)) == {REQUIREMENTS: expected}  # exactly the kept operations
    left_out = sorted(set(VALIDATED) - set(kept))
    assert [n.split(":", 1)[0] for n in planned.not_fixable] == left_out
    commit = world.project().commits.get(mr.head_sha)
    assert commit.message == f"{planned.title}\n\nFixloop-Work-Item: {item[0].id}\nRefs: {issue.key}\n"


async def test_a_real_answer_fixloop_refuses_gives_the_rules_mr_with_the_reason(
    world: World, local_llm: LocalServer, item: tuple[WorkItem, list[Signal]]  # noqa: F811
) -> None:
    with local_server(max_tokens=8) as cut_short:  # the same model, its answers cut off after 8 tokens
        world.change.llm = cut_short.settings()
        issue, planned, mr = await open_all(world, *item)
    world.change.llm = None
    ask = PlanChangeInput(scope=SCOPE, work_item=item[0], jira_key=issue.key, signals=item[1])
    rules = await world.change.plan(ask)
    assert planned.drafted_by == "fixloop rules" and planned.title == rules.title == RULES_TITLE
    footer = next(line for line in (planned.description or "").splitlines() if line.startswith("_Drafted by"))
    assert footer == (
        "_Drafted by fixloop rules: the model's draft was refused: the answer was cut off at the token limit; "
        "validated by fixloop's policy._"
    )
    assert planned.description == (rules.description or "").replace(
        "_Drafted by fixloop rules; validated by fixloop's policy._", footer
    )
    assert mr_diffs(world, mr.iid) == ALL_THREE  # the rules' change: every validated operation, nothing else
