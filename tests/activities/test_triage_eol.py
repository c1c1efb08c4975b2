"""The triage activity and endoflife.date (issue 22, scope 4): it looks up the product of each scanned OS line once
(kept for the day, a heartbeat per lookup) and hands the engines what it found, so the real Ubuntu 18.04 report is
one migration to 22.04; endoflife.date down (no answer, 5xx) or its lookups off never fail triage: the items stay
and say why the end of life was not checked. The recorded answers are served by an ``httpx.MockTransport``."""

from __future__ import annotations

import httpx
from temporalio.testing import ActivityEnvironment

from fixloop.activities.triage import LOOKUPS_OFF, LifecycleLookups, TriageActivities
from fixloop.app.worker import Integrations, activities
from fixloop.core.models import Signal, TriageResult, WorkItemKind
from fixloop.core.triage import triage_rules
from fixloop.integrations.endoflife import EndOfLifeClient, EndOfLifeSettings
from fixloop.workflows.contracts.triage import GroupSignalsInput
from tests.conftest import signals
from tests.integrations.test_pypi_endoflife import UBUNTU_2025, recorded, serve
from tests.test_eol_runtimes import PYTHON, VULNERABLE_IMAGE, renamed
from tests.test_lifecycle import RECORDED, TODAY

UBUNTU_REPORT = "trivy/trivy-0.22-fulldb_ubuntu-1804.json"
CENTOS_REPORT = "trivy/trivy-0.22-fulldb_centos-7.json"
CENTOS_6_REPORT = "trivy/trivy-head_centos-6.json"


def settings(**kw: object) -> EndOfLifeSettings:
    return EndOfLifeSettings(_env_file=None, **kw)  # type: ignore[call-arg]


def with_site(transport: httpx.BaseTransport) -> TriageActivities:
    acts = TriageActivities(endoflife=settings())
    assert acts.lifecycles is not None and acts.lifecycles.client is not None
    acts.lifecycles.client.close()
    acts.lifecycles = LifecycleLookups(EndOfLifeClient(settings(), transport=transport), today=lambda: TODAY)
    return acts


async def run(acts: TriageActivities, found: list[Signal], beats: list[str] | None = None) -> TriageResult:
    env = ActivityEnvironment()
    if beats is not None:
        env.on_heartbeat = lambda *details: beats.extend(details)
    return await env.run(acts.group_signals, GroupSignalsInput(scope="s", signals=found))


async def test_an_ended_line_looked_up_once_a_day_is_one_migration() -> None:
    seen: list[str] = []
    acts = with_site(serve({"/api/ubuntu.json": recorded(UBUNTU_2025)}, seen))
    found = signals(UBUNTU_REPORT)
    beats: list[str] = []
    (item,) = (await run(acts, found, beats)).work_items
    assert item.kind is WorkItemKind.EOL_MIGRATION and len(item.signals) == 84
    assert item.eol is not None and item.eol.target is not None and item.eol.target.cycle == "22.04"
    assert item.eol.checked_on == TODAY  # the day is the activity's input to the pure core
    assert item.title.startswith("Migrate Ubuntu 18.04 (end of life 2023-05-31) in ")
    assert beats[:3] == [
        "read the topology",
        "look up the end of life of the scanned OS release lines",
        "look up ubuntu on endoflife.date",
    ]
    assert seen == ["/api/ubuntu.json"]
    again = await run(acts, found)
    assert seen == ["/api/ubuntu.json"] and again.work_items == [item]  # the day's answer is kept


def recorded_v1(name: str) -> httpx.Response:
    """A recorded API v1 product (tests/fixtures/SOURCES.md: the ``endoflife-radar_api_v1_*`` byte ranges) as the
    body of its ``GET /api/v1/products/<product>`` answer, ``{"result": <product>}``; ``parse_cycles`` reads it
    whatever the path, so it is served at the v0 path the client asks."""
    body = (RECORDED / f"endoflife-radar_api_v1_{name}.json").read_bytes()
    return httpx.Response(200, content=b'{"result": ' + body + b"}", headers={"Content-Type": "application/json"})


async def test_the_real_centos_6_report_is_one_migration_to_centos_stream_9() -> None:
    """The real CentOS 6.10 golden through the activity: centos and its successor centos-stream looked up once each
    (recorded answers), one ``eol_migration`` with both findings, to CentOS Stream 9."""
    seen: list[str] = []
    routes = {"/api/centos.json": recorded_v1("centos"), "/api/centos-stream.json": recorded_v1("centos-stream")}
    found = signals(CENTOS_6_REPORT)
    result = await run(with_site(serve(routes, seen)), found)
    (item,) = result.work_items
    assert item.kind is WorkItemKind.EOL_MIGRATION and not result.unassigned
    assert sorted(item.signals) == sorted(s.fingerprint for s in found) and len(found) == 2  # each once
    assert item.eol is not None and item.eol.target is not None and item.eol.cycle == "6"
    assert (item.eol.target.product, item.eol.target.cycle) == ("centos-stream", "9")
    assert item.title.startswith("Migrate CentOS 6.10 (end of life 2020-11-30) in ")
    assert " to CentOS Stream 9 (covers 2 CVEs: 2 medium)" in item.title
    assert seen == ["/api/centos.json", "/api/centos-stream.json"]


async def test_a_python_3_7_image_looks_up_python_and_debian_once_and_is_one_migration() -> None:
    """A python:3.7.10-slim image (the real Grype report of tests/test_eol_runtimes.py, only its artifact's name
    changed): its runtime line and its OS line are looked up, once each; one migration, to Python 3.10."""
    seen: list[str] = []
    routes = {"/api/python.json": recorded(PYTHON), "/api/debian.json": recorded_v1("debian")}
    found = renamed(VULNERABLE_IMAGE, "python:3.7.10-slim")
    result = await run(with_site(serve(routes, seen)), found)
    (item,) = [w for w in result.work_items if w.kind is WorkItemKind.EOL_MIGRATION]
    assert item.eol is not None and item.eol.target is not None and item.eol.also is not None
    lines = (item.eol.product, item.eol.cycle, item.eol.target.cycle, item.eol.also.cycle)
    assert lines == ("python", "3.7", "3.10", "10")
    assert seen == ["/api/debian.json", "/api/python.json"]
    placed = [fp for w in result.work_items for fp in w.signals] + [u.fingerprint for u in result.unassigned]
    assert sorted(placed) == sorted({s.fingerprint for s in found})


async def test_no_ruby_answer_says_ruby_was_not_checked() -> None:
    """endoflife.date answers 404 for ruby (no recording): the real Chainguard Ruby 3.0 report's rebuild says so."""
    result = await run(with_site(serve({})), signals("grype/grype-0.61.1_chainguard-ruby-3.0.json"))
    (rebuild,) = [w for w in result.work_items if w.kind is WorkItemKind.OS_REBUILD]
    assert rebuild.eol is not None and rebuild.eol.missing == "endoflife.date has no product ruby"


async def test_an_unknown_product_is_said_and_the_others_still_count() -> None:
    seen: list[str] = []
    acts = with_site(serve({}, seen))  # endoflife.date answers 404 for everything
    (item,) = (await run(acts, signals(UBUNTU_REPORT)[:1])).work_items
    assert item.eol is not None and item.eol.missing == "endoflife.date has no product ubuntu"


def refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def test_endoflife_down_never_fails_triage_and_the_items_say_why() -> None:
    found = signals(CENTOS_REPORT)
    today = triage_rules(found).work_items
    calls: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return refusing(request)

    acts = with_site(httpx.MockTransport(down))
    result = await run(acts, found)
    assert [w.id for w in result.work_items] == [w.id for w in today]  # the rebuild and the digest, as without it
    for w in result.work_items:
        assert w.eol is not None and w.eol.missing == "not looked up: endoflife.date unreachable"
    assert calls == ["/api/centos.json"]  # centos-stream is not asked after the site did not answer
    await run(acts, found)
    assert calls == ["/api/centos.json"] * 2  # a failure is not kept: the next window asks again

    busy = with_site(httpx.MockTransport(lambda request: httpx.Response(503, json={"message": "busy"})))
    for w in (await run(busy, found)).work_items:
        assert w.eol is not None and w.eol.missing == "not looked up: endoflife.date answered HTTP 503"


async def test_lookups_off_ask_nothing_and_say_so_and_none_checks_nothing() -> None:
    found = signals(CENTOS_REPORT)
    off = TriageActivities(endoflife=settings(enabled=False))
    assert off.lifecycles is not None and off.lifecycles.client is None
    for w in (await run(off, found)).work_items:
        assert w.eol is not None and w.eol.missing == LOOKUPS_OFF and w.kind is not WorkItemKind.EOL_MIGRATION
    assert (await run(TriageActivities(), found)) == triage_rules(found)  # no endoflife settings: as before


def test_the_worker_hands_the_triage_activity_its_endoflife_settings() -> None:
    def triage_of(config: Integrations) -> TriageActivities:
        (fn,) = [f for f in activities(integrations=config) if getattr(f, "__name__", "") == "group_signals"]
        return fn.__self__  # type: ignore[attr-defined]

    assert triage_of(Integrations()).lifecycles is None
    looked_up = triage_of(Integrations(endoflife=settings())).lifecycles
    assert looked_up is not None and isinstance(looked_up.client, EndOfLifeClient)
    looked_up.client.close()
