"""``change.plan`` with the registry lookups of ``FactLookups`` on the sandbox's GitLab: the merge request and
``PlannedChange.facts`` say what PyPI and endoflife.date answered, or that (and why) they were not looked up;
no answer ever fails the plan, and a registry that does not answer is asked once per change; a breaking bump's
release list is read from PyPI once, and the repository's ``max_jump`` bounds the bump."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from pydantic_core import to_json

from fixloop.activities.plan import ChangePlanner, FactLookups, RegistryTags
from fixloop.core.change.facts import FACTS_MAX_BYTES, Lifecycle
from fixloop.core.change.locate import MappingRepo
from fixloop.core.models import WorkItemKind
from fixloop.core.triage import triage_rules
from fixloop.integrations.endoflife import EndOfLifeClient, EndOfLifeSettings
from fixloop.integrations.pypi import PypiClient, PypiSettings
from fixloop.workflows.contracts.plan import PlanChangeInput, PlannedChange
from tests.activities.sandbox_world import World, running_world
from tests.change.helpers import work_item
from tests.change.test_breaking import REQUIREMENTS, celery_signals

SCOPE = "platform/gitops"
RECORDED = Path(__file__).parents[1] / "fixtures" / "recorded"
# endoflife.date's /api/alpine.json in the API's documented shape (no recording of Alpine exists; see SOURCES.md)
ALPINE = [
    {"cycle": "3.21", "releaseDate": "2024-12-05", "eol": "2026-11-01", "latest": "3.21.3"},
    {"cycle": "3.9", "releaseDate": "2018-12-06", "eol": "2020-11-01", "latest": "3.9.6"},
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path / "sandbox") as w:
        yield w


def lookups(pypi: httpx.MockTransport | None, endoflife: httpx.MockTransport | None) -> FactLookups:
    return FactLookups(
        PypiClient(PypiSettings(_env_file=None), transport=pypi) if pypi else None,  # type: ignore[call-arg]
        EndOfLifeClient(EndOfLifeSettings(_env_file=None), transport=endoflife) if endoflife else None,  # type: ignore[call-arg]
    )


async def planned(w: World, report: str, kind: WorkItemKind) -> PlannedChange:
    item, found = work_item(report, kind)
    result = await w.change.plan(PlanChangeInput(scope=SCOPE, work_item=item, signals=found))
    assert result.located, result.reason
    return result


async def test_an_unreachable_pypi_is_asked_once_and_said_in_the_merge_request(world: World) -> None:
    asked: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        raise httpx.ConnectError("no route to host", request=request)

    world.change.facts = lookups(httpx.MockTransport(refuse), None)
    result = await planned(
        world, "pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", WorkItemKind.DEPENDENCY_BUMP
    )
    assert len(result.changes) >= 2 and len(asked) == 1  # the first failure stands for the rest of the change
    packages = (result.description or "").split("### Packages\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(packages) == len(result.changes)
    assert all(
        line.endswith("a direct runtime dependency; release notes: not looked up: PyPI unreachable")
        for line in packages
    )
    assert result.facts is not None
    assert [r.missing for r in result.facts.releases] == ["not looked up: PyPI unreachable"] * len(result.changes)


async def test_lookups_that_are_off_say_so_and_a_rerun_the_same_day_is_the_same(world: World) -> None:
    world.change.facts = lookups(None, None)
    first = await planned(world, "trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    assert "release notes: not looked up: PyPI lookups are off" in (first.description or "")
    assert await planned(world, "trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP) == first


async def test_a_release_pypi_lists_and_one_it_does_not(world: World) -> None:
    body = json.loads((RECORDED / "pypi" / "poetry-fixtures_pypi_ipython_7.5.0.json").read_bytes())
    answers = {"/pypi/Werkzeug/0.15.3/json": httpx.Response(200, json=body)}
    world.change.facts = lookups(httpx.MockTransport(lambda r: answers.get(r.url.path, httpx.Response(404))), None)
    result = await planned(world, "trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    assert result.facts is not None and [r.version for r in result.facts.releases] == ["0.15.3"]
    assert result.facts.releases[0].released_at is not None and result.facts.releases[0].missing is None
    assert "released 2019-04-25" in (
        result.description or ""
    ) and "[PyPI](https://pypi.org/project/Werkzeug/0.15.3/)" in (result.description or "")
    answers.clear()
    result = await planned(world, "trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    assert "release notes: PyPI lists no release 0.15.3 of Werkzeug" in (result.description or "")
    assert len(to_json(result.facts)) <= FACTS_MAX_BYTES


async def test_the_end_of_life_of_a_base_image(world: World) -> None:
    world.change.facts = lookups(
        None,
        httpx.MockTransport(
            lambda r: httpx.Response(200, json=ALPINE) if r.url.path == "/api/alpine.json" else httpx.Response(404)
        ),
    )
    result = await planned(world, "trivy/trivy-head_alpine-39.json", WorkItemKind.OS_REBUILD)
    assert result.facts is not None and result.facts.lifecycles == [
        Lifecycle(
            image="alpine:3.9.6", product="alpine", label="Alpine", cycle="3.9", eol=date(2020, 11, 1), newest="3.21"
        )
    ]
    assert "- `alpine:3.9.6`: **Alpine 3.9 reached end of life on 2020-11-01**" in (result.description or "")

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    world.change.facts = lookups(None, httpx.MockTransport(down))
    result = await planned(world, "trivy/trivy-head_alpine-39.json", WorkItemKind.OS_REBUILD)
    assert "- `alpine:3.9.6`: Alpine: end of life: not looked up: endoflife.date answered HTTP 503" in (
        result.description or ""
    )


def test_the_release_list_comes_from_pypi_once_and_max_jump_is_read_from_the_repository() -> None:
    asked: list[str] = []
    celery = httpx.Response(200, content=(RECORDED / "pypi" / "dependabot-fixtures_pypi_celery.json").read_bytes())

    def pypi(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return celery if request.url.path == "/pypi/celery/json" else httpx.Response(404, json={"message": "no"})

    found = celery_signals()
    (item,) = triage_rules(found).work_items
    files = {REQUIREMENTS: "celery==2.2.7\n"}
    planner = ChangePlanner(facts=lookups(httpx.MockTransport(pypi), None))
    breaking = planner.plan_at(PlanChangeInput(scope=SCOPE, work_item=item, signals=found), MappingRepo(files), None,
                               RegistryTags(None))  # fmt: skip
    assert [op.new for op in breaking.changes] == ["5.2.2"]
    assert asked == ["/pypi/celery/json", "/pypi/celery/5.2.2/json"]  # the list once, then the release's facts
    assert breaking.callouts == [
        "Breaking: celery 2.2.7 \u2192 5.2.2 is a major jump (skips 3.x and 4.x by PyPI's release list): read its "
        "release notes before approving."
    ]
    assert (breaking.description or "").startswith("> **Breaking:** `celery` `2.2.7` \u2192 `5.2.2` is a major jump")
    files["fixloop.yaml"] = "max_jump: minor\n"
    limited = planner.plan_at(PlanChangeInput(scope=SCOPE, work_item=item, signals=found), MappingRepo(files), None,
                              RegistryTags(None))  # fmt: skip
    assert [op.new for op in limited.changes] == ["2.5.5"] and not limited.title.startswith("Breaking")  # type: ignore[union-attr]
    assert limited.not_fixable == ["celery: not fixed within max_jump: minor: CVE-2021-23727 needs 5.2.2"]
    assert limited.callouts == [
        "Not fixed within max_jump: minor: celery: CVE-2021-23727 needs 5.2.2; they stay open on the work item."
    ]
    off = ChangePlanner().plan_at(PlanChangeInput(scope=SCOPE, work_item=item, signals=found), MappingRepo(files),
                                  None, RegistryTags(None))  # fmt: skip
    assert [op.new for op in off.changes] == ["2.4.4"]  # no PyPI: the highest version the advisories name
