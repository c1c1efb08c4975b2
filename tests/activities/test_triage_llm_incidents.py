"""The ``llm`` triage engine with a topology (issue 16), over real HTTP against the local OpenAI-compatible stand-in
(``tests/llm_server.py``): the alerts that are not deploy regressions become the ``rules`` engine's incident work
items (same ids, signals, candidates in the same order), made by code and kept out of the digest, whatever the
model answers; the model groups and words the rest. The storms and the ``topology:`` section are
tests/test_incidents.py's, the findings tests/activities/test_triage_llm.py's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import Response

from fixloop.activities.triage import triage
from fixloop.core.models import RecentDeploy, Signal, TriageResult, WorkItem, WorkItemKind
from fixloop.core.triage import triage_rules
from tests.activities.test_triage_llm import INPUTS, digest_of, placed, sensible, settings
from tests.conftest import signals
from tests.llm_server import FakeLlm, answer
from tests.test_incidents import T0, WINDOW, _topo, payments_storm, storm

KINDS = (WorkItemKind.INCIDENT, WorkItemKind.DEPLOY_REGRESSION)


def _incidents(result: TriageResult) -> list[WorkItem]:
    return [w for w in result.work_items if w.kind is WorkItemKind.INCIDENT]


def _facts(items: list[WorkItem]) -> list[tuple[str, list[str], list[str], object]]:
    """What code decides of an incident: id, signals, candidates in order, and every other fact."""
    return [(w.id, w.signals, [c.entity for c in w.incident.candidates], w.incident) for w in items if w.incident]


def _unassign_everything(body: dict[str, Any]) -> dict[str, Any]:
    doc = digest_of(body)
    ids = [e["id"] for a in doc["artifacts"] for t in a["targets"] for e in t["entries"]]
    ids += [a["id"] for a in doc["alerts"]]
    return {"assignments": dict.fromkeys(ids, {"unassigned": "nothing to do"}), "groups": []}


def _claim_the_incident_alerts(body: dict[str, Any]) -> dict[str, Any]:
    """A model that invents an entry for the storm's alerts (which it never saw): the check refuses that group."""
    ans = sensible(body)
    ans["assignments"]["e999"] = {"kind": "alert_investigation", "group": 999}
    ans["groups"].append({"number": 999, "title": "LLM: the storm"})
    return ans


ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "sensible, every alert in one group": sensible,
    "everything unassigned": _unassign_everything,
    "alert entries it never saw": _claim_the_incident_alerts,
}


@pytest.fixture(scope="module")
def findings() -> list[Signal]:
    return [s for rel in INPUTS for s in signals(rel)]


def _reply(edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], Response]:
    return lambda body: answer(edit(body))


@pytest.mark.parametrize("case", ANSWERS)
async def test_the_llm_engine_makes_the_rules_engines_incidents_whatever_the_model_answers(
    llm_server: FakeLlm, findings: list[Signal], case: str
) -> None:
    given = [*findings, *storm(), *payments_storm()]
    llm_server.reply = _reply(ANSWERS[case])
    result = await triage(given, engine="llm", llm=settings(llm_server), topology=_topo(), incident_window=WINDOW)

    rules = triage_rules(given, topology=_topo(), incident_window=WINDOW)
    assert len(_incidents(rules)) >= 3  # the storm, the payments pair, the fixtures' own alerts
    assert _facts(_incidents(result)) == _facts(_incidents(rules))
    strip = {"engine", "note"}
    assert [w.model_dump(exclude=strip) for w in _incidents(result)] == [
        w.model_dump(exclude=strip) for w in _incidents(rules)
    ]
    assert sorted(placed(result)) == sorted({s.fingerprint for s in given})  # every signal exactly once
    # the model saw the findings, never the correlated alerts
    (request,) = llm_server.requests
    doc = digest_of(request.body)
    assert doc["alerts"] == [] and doc["artifacts"]
    alert_fps = {s.fingerprint for s in given if s.kind.value == "alert"}
    assert not any(fp in request.user for fp in alert_fps)
    others = [w for w in result.work_items if w.kind is not WorkItemKind.INCIDENT]
    if case == "alert entries it never saw":  # that group is dropped (it holds no entry); the rest is used
        assert others and {w.engine for w in others} == {"llm"} and {w.note for w in others} == {None}
        assert "LLM: the storm" not in {w.title for w in result.work_items}
    elif case == "everything unassigned":
        # findings without a fix are unassigned as the model says; a fix is never waived: the rules bump or rebuild it
        assert {u.reason for u in result.unassigned} >= {"llm: nothing to do"}
        assert others and {w.kind for w in others} <= {WorkItemKind.OS_REBUILD, WorkItemKind.DEPENDENCY_BUMP}
        assert all(w.engine == "rules" and "never waived" in (w.note or "") for w in others)
    else:
        assert others and {w.engine for w in others} == {"llm"} and all(w.title.startswith("LLM: ") for w in others)


async def test_a_storm_of_alerts_alone_needs_no_model_call(llm_server: FakeLlm) -> None:
    given = [*storm(), *payments_storm()]
    result = await triage(given, engine="llm", llm=settings(llm_server), topology=_topo(), incident_window=WINDOW)
    assert llm_server.requests == []
    assert result == triage_rules(given, topology=_topo(), incident_window=WINDOW)
    assert sorted(len(w.signals) for w in result.work_items) == [2, 6]


async def test_alerts_after_a_fixloop_deploy_are_the_models_and_the_rest_are_incidents(llm_server: FakeLlm) -> None:
    deploy = RecentDeploy(work_item_id="wi-" + "c" * 24, service="catalog", deployed_at=T0 - timedelta(minutes=10))
    given = storm()
    llm_server.reply = _reply(sensible)
    result = await triage(
        given,
        engine="llm",
        llm=settings(llm_server),
        topology=_topo(),
        incident_window=WINDOW,
        recent_deploys=[deploy],
    )
    rules = triage_rules(given, topology=_topo(), incident_window=WINDOW, recent_deploys=[deploy])
    assert _facts(_incidents(result)) == _facts(_incidents(rules)) and len(_incidents(rules)) == 2
    (request,) = llm_server.requests
    alerts = digest_of(request.body)["alerts"]
    assert alerts and {a["after_deploy"] for a in alerts} == {deploy.work_item_id}  # only catalog's, after the deploy
    catalog = {s.fingerprint for s in given if s.service == "catalog"}
    (grouped,) = [w for w in result.work_items if w.kind is WorkItemKind.ALERT_INVESTIGATION]
    assert set(grouped.signals) == catalog and grouped.engine == "llm"
    assert sorted(placed(result)) == sorted(s.fingerprint for s in given)


async def test_without_a_topology_the_llm_engine_groups_the_alerts_as_before(
    llm_server: FakeLlm, findings: list[Signal]
) -> None:
    given = [*findings, *storm()]
    llm_server.reply = _reply(sensible)
    result = await triage(given, engine="llm", llm=settings(llm_server))
    assert not [w for w in result.work_items if w.kind in KINDS]
    (grouped,) = [w for w in result.work_items if w.kind is WorkItemKind.ALERT_INVESTIGATION]
    assert set(grouped.signals) == {s.fingerprint for s in given if s.kind.value == "alert"}
