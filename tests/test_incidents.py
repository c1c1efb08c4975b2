"""Correlation of alerts into incidents (fixloop.core.incidents) on real Datadog and Alertmanager payloads
(tests/fixtures/datadog, tests/fixtures/alertmanager, examples/demo/alerts) re-targeted to the services of a small
``topology:`` section: storefront -> catalog -> inventory, and payments -> ledger apart."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.app.ingest import parse_document
from fixloop.core import incidents, topology
from fixloop.core.incidents import correlate
from fixloop.core.models import RecentDeploy, Signal, WorkItem, WorkItemKind
from fixloop.core.triage import triage_rules
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 10, 1, 18, 0, tzinfo=UTC)
POLICY = """
topology:
  services:
    storefront: [catalog]
    catalog: [inventory]
    payments: [ledger]
    ledger: []
"""
WINDOW = timedelta(minutes=15)


def _topo() -> topology.Topology:
    return topology.from_policy_text(POLICY)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _parse(doc: dict, ref: str, at: datetime) -> Signal:
    (s,) = parse_document(doc, ref=ref, received_at=at).signals
    return s


def am_pod_memory(service: str, pod: str, seconds: int) -> Signal:
    """The python-webhook HighPodMemory alert (one alert of a real Alertmanager v4 payload) on ``service``/``pod``."""
    doc = _load(FIXTURES / "alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json")
    alert = doc["alerts"][0]
    alert.pop("fingerprint", None)
    alert["labels"].update(service=service, pod=pod)
    at = T0 + timedelta(seconds=seconds)
    alert["startsAt"] = at.isoformat()
    return _parse(doc, f"am-{service}-{pod}-{seconds}", at)


def am_errors(service: str, seconds: int) -> Signal:
    """The demo's Alertmanager CatalogHighErrorRate payload, its service and job labels set to ``service``."""
    doc = _load(ROOT / "examples/demo/alerts/alertmanager-catalog-errors-firing.json")
    alert = doc["alerts"][0]
    alert["labels"].update(service=service, job=service)
    doc["commonLabels"]["service"] = service
    at = T0 + timedelta(seconds=seconds)
    alert["startsAt"] = at.isoformat()
    return _parse(doc, f"am-err-{service}-{seconds}", at)


def dd(path: Path, service: str, seconds: int, extra_tags: str = "") -> Signal:
    """A real Datadog webhook payload re-targeted: ``service:`` tag, time, and its aggregate (the alert's group)."""
    doc = copy.deepcopy(_load(path))
    at = T0 + timedelta(seconds=seconds)
    ms = str(int(at.timestamp() * 1000))
    doc.update(
        tags=f"service:{service},env:prod{extra_tags}",
        last_updated=ms,
        date=ms,
        aggregate=f"{service}-{seconds}",
        title=f"[Triggered] High error rate on {service}",
    )
    return _parse(doc, f"dd-{service}-{seconds}", at)


DD_DEMO = ROOT / "examples/demo/alerts/datadog-catalog-error-rate-triggered.json"
DD_INRES = FIXTURES / "datadog/inres-docs_query_alert_monitor_triggered_P1.json"


def storm() -> list[Signal]:
    """inventory fails first (two pods' memory, its own Datadog monitor), catalog errors a minute later,
    storefront two minutes later."""
    return [
        am_pod_memory("inventory", "inventory-7d9c-a", 0),
        am_pod_memory("inventory", "inventory-7d9c-b", 10),
        dd(DD_INRES, "inventory", 5),
        am_errors("catalog", 60),
        dd(DD_DEMO, "catalog", 70),
        dd(DD_INRES, "storefront", 120),
    ]


def payments_storm() -> list[Signal]:
    return [am_errors("ledger", 30), dd(DD_DEMO, "payments", 90)]


def test_a_storm_over_three_connected_services_is_one_incident_with_the_failing_callee_first() -> None:
    alerts = storm()
    (inc,) = correlate(alerts, _topo(), window=WINDOW)
    assert sorted(inc.fingerprints) == sorted(s.fingerprint for s in alerts)
    assert inc.entities == ["catalog", "inventory", "storefront"] and inc.services == inc.entities
    assert inc.onset == T0 and inc.last == T0 + timedelta(seconds=120) and inc.unknown == []
    top = inc.candidates[0]
    assert top.entity == "inventory", [(c.entity, c.score) for c in inc.candidates]
    assert len(inc.candidates) == 3
    catalog = next(c for c in inc.candidates if c.entity == "catalog")
    assert "callees alerting before it (it may be a victim): inventory (60s earlier)" in catalog.evidence
    wi = incidents.work_item(inc)
    assert wi.kind is WorkItemKind.INCIDENT and wi.id == inc.id and wi.attached_to is None
    assert wi.title.startswith("Incident: 6 alerts on catalog, inventory, storefront; likely root cause inventory")
    assert wi.signals == inc.fingerprints and wi.window_start == T0
    text = incidents.description(inc)
    assert "1. inventory (service), score" in text and "2. " in text and "3. " in text
    assert "   - itself: 2 metric(s) alerting, 3 alert(s), first at +0s" in text
    assert "+60s 2025-10-01T18:01:00Z catalog CatalogHighErrorRate: " in text  # the timeline
    assert text.count("\n+") == 6
    # today's rules engine: one alert_investigation per service and monitor, five work items for this storm
    assert len(triage_rules(alerts).work_items) == 5


def test_two_storms_on_disconnected_services_are_two_incidents() -> None:
    found = correlate([*storm(), *payments_storm()], _topo(), window=WINDOW)
    assert [sorted(i.services) for i in found] == [["catalog", "inventory", "storefront"], ["ledger", "payments"]]
    assert found[1].candidates[0].entity == "ledger"  # the callee, alerting first


def test_alerts_further_apart_than_the_window_are_separate_incidents() -> None:
    late = dd(DD_INRES, "storefront", 3600)
    found = correlate([*storm(), late], _topo(), window=WINDOW)
    assert [len(i.fingerprints) for i in found] == [6, 1] and found[1].fingerprints == [late.fingerprint]


def test_an_alert_on_an_entity_missing_from_the_topology_is_its_own_incident_not_dropped() -> None:
    stray = dd(DD_DEMO, "search", 30)  # within the window of the storm, on a service the topology does not know
    found = correlate([*storm(), stray], _topo(), window=WINDOW)
    assert len(found) == 2
    (alone,) = [i for i in found if stray.fingerprint in i.fingerprints]
    assert alone.fingerprints == [stray.fingerprint] and alone.unknown == ["search"] and alone.entities == ["search"]
    assert alone.candidates[0].entity == "search" and alone.candidates[0].kind is None
    assert "Not in the topology (ranked without neighbours): search" in incidents.description(alone)
    assert incidents.work_item(alone).title.startswith("Incident: 1 alert on search; likely root cause search")


def test_the_same_storm_delivered_twice_or_reordered_gives_the_same_work_item_ids() -> None:
    alerts = [*storm(), *payments_storm()]
    first = [incidents.work_item(i) for i in correlate(alerts, _topo(), window=WINDOW)]
    again = [incidents.work_item(i) for i in correlate([*reversed(alerts), *alerts], _topo(), window=WINDOW)]
    assert first == again
    assert len({w.id for w in first}) == 2
    # a later alert joining the storm keeps its id (the id is the first alert's)
    later = correlate([*alerts, dd(DD_DEMO, "storefront", 400)], _topo(), window=WINDOW)
    assert [i.id for i in later] == [w.id for w in first]


def test_an_alert_after_a_fixloop_deploy_of_its_service_stays_that_loops_deploy_regression() -> None:
    deploy = RecentDeploy(work_item_id="wi-" + "c" * 24, service="catalog", deployed_at=T0 - timedelta(minutes=10))
    alerts = storm()
    found = correlate(alerts, _topo(), window=WINDOW, recent_deploys=[deploy])
    (reg,) = [i for i in found if i.attached_to]
    catalog = {s.fingerprint for s in alerts if s.service == "catalog"}
    assert set(reg.fingerprints) == catalog and reg.attached_to == deploy.work_item_id
    wi = incidents.work_item(reg)
    assert wi.kind is WorkItemKind.DEPLOY_REGRESSION and wi.attached_to == deploy.work_item_id
    assert wi.title.startswith(f"Regression after deploy of {deploy.work_item_id}: Incident: 2 alerts on catalog")
    # the rules engine attaches exactly the same alerts to that loop
    rules = triage_rules(alerts, recent_deploys=[deploy])
    assert {fp for w in rules.work_items if w.attached_to for fp in w.signals} == catalog
    # without catalog's alerts inventory and storefront are not neighbours: two incidents besides the regression
    assert sorted(tuple(i.entities) for i in found if not i.attached_to) == [("inventory",), ("storefront",)]
    late = correlate(alerts, _topo(), window=WINDOW, recent_deploys=[deploy], attach_window=timedelta(minutes=5))
    assert not any(i.attached_to for i in late) and len(late) == 1


def test_pods_and_hosts_join_their_service_through_instance_of_and_runs_on() -> None:
    t = topology.from_policy(
        {"services": {"catalog": {"calls": ["inventory"], "instances": ["catalog-0"], "hosts": ["node-1"]}}}
    )
    pod = am_pod_memory("catalog", "catalog-0", 0)  # resolves to the pod catalog-0
    node = dd(DD_DEMO, "other", 20, extra_tags=",host:node-1")  # "other" is unknown: the host node-1 is known
    callee = dd(DD_INRES, "inventory", 40)
    (inc,) = correlate([pod, node, callee], t, window=WINDOW)
    assert inc.entities == ["catalog-0", "inventory", "node-1"] and inc.services == ["catalog", "inventory"]


def test_a_component_over_the_bound_is_split_in_time_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "MAX_GROUP_ALERTS", 4)
    found = correlate(storm(), _topo(), window=WINDOW)
    assert [(len(i.fingerprints), i.part) for i in found] == [(4, 0), (2, 1)]
    assert len({i.id for i in found}) == 2


def test_a_finding_is_refused_by_name() -> None:
    from tests.conftest import signals

    finding = signals("trivy/trivy-head_alpine-39.json")[0]
    with pytest.raises(ValueError, match=f"signal {finding.fingerprint} is a finding, not an alert"):
        correlate([*storm(), finding], _topo(), window=WINDOW)


# --- properties ----------------------------------------------------------------------------------------------

PROPERTY_POLICY = {
    "services": {
        "storefront": ["catalog"],
        "catalog": {"calls": ["inventory"], "instances": ["catalog-0", "catalog-1"], "hosts": ["node-1"]},
        "inventory": {"instances": ["inventory-0"], "hosts": ["node-2"]},
        "payments": {"calls": ["ledger"], "instances": ["payments-0"], "hosts": ["node-1"]},
        "ledger": [],
    }
}
SERVICE_OF = {"catalog-0": "catalog", "catalog-1": "catalog", "inventory-0": "inventory", "payments-0": "payments"}
HOST_OF = {"catalog-0": "node-1", "catalog-1": "node-1", "inventory-0": "node-2", "payments-0": "node-1"}
CALLS = {("storefront", "catalog"), ("catalog", "inventory"), ("payments", "ledger")}
SERVICES = ["storefront", "catalog", "inventory", "payments", "ledger"]
NAMES = [*SERVICES, *SERVICE_OF, "node-1", "node-2", "search", "mail"]  # the last two unknown
_BASE = am_pod_memory("inventory", "base", 0)


def _synthetic(i: int, name: str, seconds: int) -> Signal:
    if name in SERVICE_OF:
        tags, service = [f"pod_name:{name}"], None
    elif name.startswith("node-"):
        tags, service = [f"host:{name}"], None
    else:
        tags, service = [f"service:{name}"], name
    return _BASE.model_copy(
        update={
            "fingerprint": f"{i:032x}",
            "service": service,
            "tags": [*tags, "alertname:HighPodMemory"],
            "scope": None,
            "observed_at": T0 + timedelta(seconds=seconds),
        }
    )


def _entity(s: Signal) -> str:
    return next(t.split(":", 1)[1] for t in s.tags if t.split(":", 1)[0] in ("pod_name", "host", "service"))


def _joined(a: str, b: str) -> bool:
    """The linking rule written out on PROPERTY_POLICY: the same entity, an instance and its service or host, or
    two entities whose services (an instance's service; hosts and unknown names have none) are equal or call."""
    if a == b or SERVICE_OF.get(a) == b or SERVICE_OF.get(b) == a or HOST_OF.get(a) == b or HOST_OF.get(b) == a:
        return True
    sa = SERVICE_OF.get(a, a if a in SERVICES else None)
    sb = SERVICE_OF.get(b, b if b in SERVICES else None)
    return sa is not None and sb is not None and (sa == sb or (sa, sb) in CALLS or (sb, sa) in CALLS)


alert_lists = st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 7200)), max_size=30).map(
    lambda rows: [_synthetic(i, n, t) for i, (n, t) in enumerate(rows)]
)


@settings(max_examples=300, deadline=None)
@given(alerts=alert_lists, window_s=st.integers(0, 1800), data=st.data())
def test_every_alert_in_exactly_one_group_the_groups_are_the_linked_components_and_order_never_matters(
    alerts: list[Signal], window_s: int, data: st.DataObject
) -> None:
    t, window = topology.from_policy(PROPERTY_POLICY), timedelta(seconds=window_s)
    found = correlate(alerts, t, window=window)
    placed = [fp for i in found for fp in i.fingerprints]
    assert sorted(placed) == sorted(s.fingerprint for s in alerts)  # exactly once
    shuffled = data.draw(st.permutations(alerts))
    assert correlate(shuffled, t, window=window) == found
    group = {fp: n for n, i in enumerate(found) for fp in i.fingerprints}

    # brute force: two alerts at most ``window`` apart on joined entities share a group, and a group is connected
    # by such pairs (a flood fill from its first alert reaches all of it)
    def linked(a: Signal, b: Signal) -> bool:
        return abs(a.observed_at - b.observed_at) <= window and _joined(_entity(a), _entity(b))

    for a in alerts:
        for b in alerts:
            if linked(a, b):
                assert group[a.fingerprint] == group[b.fingerprint]
    for inc in found:
        members = [s for s in alerts if s.fingerprint in inc.fingerprints]
        assert inc.entities == sorted({_entity(s) for s in members})
        reached, todo = {members[0].fingerprint}, [members[0]]
        while todo:
            a = todo.pop()
            for b in members:
                if b.fingerprint not in reached and linked(a, b):
                    reached.add(b.fingerprint)
                    todo.append(b)
        assert len(reached) == len(members)
        assert len(inc.candidates) <= incidents.TOP_CANDIDATES and len(inc.timeline) <= incidents.TIMELINE_MAX
        assert len(incidents.description(inc)) <= incidents.DESCRIPTION_MAX


def test_an_incident_is_handled_like_an_alert_investigation_a_jira_issue_and_no_change() -> None:
    from fixloop.core.change.plan import plan
    from fixloop.core.models import ALERT_KINDS, FIX_KINDS

    assert WorkItemKind.INCIDENT in ALERT_KINDS and WorkItemKind.INCIDENT not in FIX_KINDS
    alerts = storm()
    (inc,) = correlate(alerts, _topo(), window=WINDOW)
    wi = incidents.work_item(inc)
    assert WorkItem.model_validate_json(wi.model_dump_json()) == wi  # what Temporal's converter does
    planned = plan(wi, alerts, {})
    assert planned.reason == "incident work items are not fixed by a merge request"  # type: ignore[union-attr]


def test_the_alert_history_counts_storms_and_keeps_the_most_frequent_keys() -> None:
    h = incidents.remember(None, ["a\x1fm", "b\x1fm", "a\x1fm"])
    assert (h.storms, h.counts) == (1, {"a\x1fm": 1, "b\x1fm": 1})
    h = incidents.remember(h, ["a\x1fm", "c\x1fm"], limit=2)
    assert (h.storms, h.counts) == (2, {"a\x1fm": 2, "b\x1fm": 1})  # c ties b at 1: the smaller key stays
    assert h.rarity("a", "m") < h.rarity("b", "m") < h.rarity("z", "m") == 1.0
    keys = incidents.alert_keys(storm(), _topo())
    assert keys == sorted(set(keys)) and {k.split("\x1f")[0] for k in keys} == {"catalog", "inventory", "storefront"}


@given(st.lists(st.lists(st.text(max_size=8), max_size=6), max_size=8), st.integers(min_value=1, max_value=5))
@settings(max_examples=200, deadline=None)
def test_remembering_storms_stays_within_its_bound(storms: list[list[str]], limit: int) -> None:
    h = None
    for keys in storms:
        h = incidents.remember(h, keys, limit=limit)
    if h is not None:
        assert h.storms == len(storms) and len(h.counts) <= limit
        assert all(1 <= n <= len(storms) for n in h.counts.values())
