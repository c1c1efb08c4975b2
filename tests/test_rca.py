"""Root-cause ranking (fixloop.core.rca) and its bench (bench/rca.py) on real inputs: faults of the alert-correlation
corpus (tests/fixtures/alert-correlation, see tests/fixtures/SOURCES.md), real Datadog and Alertmanager payloads
(tests/fixtures/datadog, tests/fixtures/alertmanager) and a storm over the services of a ``topology:`` section."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.app.ingest import parse_document
from fixloop.core import rca, topology
from fixloop.core.rca import Observation
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
AC = FIXTURES / "alert-correlation"
KG = AC / "rca-llm-reasoning_OB-cloudbed-2_KG.json"
ALERTS = AC / "rca-llm-reasoning_OB-cloudbed-2_metric-alerts_7-faults.json"
LABELS = AC / "rca-llm-reasoning_OB-cloudbed-2_label.csv"


def _kg() -> topology.Topology:
    return topology.from_kg(json.loads(KG.read_text()))


def _faults() -> dict[str, list[list[object]]]:
    return json.loads(ALERTS.read_text())


def _labels() -> dict[str, dict[str, str]]:
    with LABELS.open(newline="") as f:
        return {r["fault_id"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize(
    ("metric", "family"),
    [
        ("system.cpu.pct_usage", "cpu"),
        ("container_cpu_usage_seconds", "cpu"),
        ("container_memory_usage_MB", "memory"),
        ("system.mem.used", "memory"),
        ("container_fs_reads./dev/vda", "disk/io"),
        ("system.io.w_s", "disk/io"),
        ("system.disk.pct_usage", "disk/io"),
        ("container_network_receive_packets.eth0", "network"),
        ("container_threads", "threads"),
        ("grpc-mrt", "latency"),
        ("http_request_duration_seconds", "latency"),
        ("grpc-sr", "errors"),
        ("http_5xx_rate", "errors"),
        ("http-rr", "traffic"),
        ("somethingelse", "other"),
    ],
)
def test_metric_families_by_generic_words(metric: str, family: str) -> None:
    assert rca.family(metric)[0] == family
    assert rca.family(metric)[1] is (family in ("latency", "errors", "traffic"))


# every Alertmanager alertname in tests/fixtures/alertmanager, with the words it splits into and its family
ALERTNAMES = {
    "CPUThrottlingHigh": (["cpu", "throttling", "high"], "cpu"),
    "HighPodMemory": (["high", "pod", "memory"], "memory"),
    "JustATestAlert_1": (["just", "a", "test", "alert", "1"], "other"),
    "KubeSchedulerDown": (["kube", "scheduler", "down"], "other"),
    "PromgenHeartbeat": (["promgen", "heartbeat"], "other"),
    "high_memory_load": (["high", "memory", "load"], "cpu"),  # "load" is cpu's word, and cpu comes first
    "node_down": (["node", "down"], "other"),
    "service_level_alert": (["service", "level", "alert"], "other"),
}


def _alertnames(doc: object) -> set[str]:
    if isinstance(doc, dict):
        own = {doc["alertname"]} if isinstance(doc.get("alertname"), str) else set()
        return own.union(*(_alertnames(v) for v in doc.values()))
    if isinstance(doc, list):
        return set().union(*(_alertnames(v) for v in doc))
    return set()


def test_the_alertname_table_covers_every_alertname_of_the_fixtures() -> None:
    found = set().union(*(_alertnames(json.loads(p.read_text())) for p in (FIXTURES / "alertmanager").glob("*.json")))
    assert found == set(ALERTNAMES)


@pytest.mark.parametrize(
    ("name", "words", "family"),
    [
        *((name, words, fam) for name, (words, fam) in ALERTNAMES.items()),
        # kube-prometheus (kubernetes-mixin) alert names and Datadog monitor names as production carries them
        ("KubePodCrashLooping", ["kube", "pod", "crash", "looping"], "threads"),
        ("KubeContainerOOMKilled", ["kube", "container", "oom", "killed"], "memory"),
        ("HighErrorRate", ["high", "error", "rate"], "errors"),
        ("HTTPRequestsErrors", ["http", "requests", "errors"], "errors"),
        ("KubeAPIErrorBudgetBurn", ["kube", "api", "error", "budget", "burn"], "errors"),
        ("NodeFilesystemSpaceFillingUp", ["node", "filesystem", "space", "filling", "up"], "other"),
        ("High error rate on catalog", ["high", "error", "rate", "on", "catalog"], "errors"),
        (
            "SLO Monitor: aws_alb_latency_p50 for splunk",
            ["slo", "monitor", "aws", "alb", "latency", "p50", "for", "splunk"],
            "latency",
        ),
        ("p99Latency", ["p99", "latency"], "latency"),
        ("checkout-service.http.5xx", ["checkout", "service", "http", "5xx"], "errors"),
        ("container_network_receive_MB.eth0", ["container", "network", "receive", "mb", "eth0"], "network"),
    ],
)
def test_names_split_into_words_at_case_and_separators(name: str, words: list[str], family: str) -> None:
    assert rca.words(name) == words
    assert rca.family(name) == (family, family in ("latency", "errors", "traffic"))


@given(st.text(max_size=300), st.text(st.characters(max_codepoint=127), max_size=300))
def test_words_are_lower_case_ascii_letters_and_digits(name: str, ascii_name: str) -> None:
    assert all(w and w.isascii() and w.isalnum() and w == w.lower() for w in rca.words(name))
    # case only adds splits: the lower-cased name gives the words split on separators alone, and the same letters
    lowered = [w for w in re.split(r"[^a-z0-9]+", ascii_name.lower()) if w]
    assert rca.words(ascii_name.lower()) == lowered
    assert "".join(rca.words(ascii_name)) == "".join(lowered)


def test_a_datadog_monitor_is_classified_by_its_name_not_its_number() -> None:
    """Datadog's monitor id is a number: the observation's metric adds the monitor's name (the title without its
    ``[Triggered on ...]`` bracket), so a monitor "High error rate on catalog" counts as a caller's symptom."""
    doc = json.loads((FIXTURES / "datadog/inres-docs_query_alert_monitor_triggered_P1.json").read_text())
    doc["title"] = "[Triggered on {service:catalog}] High error rate on catalog"
    (signal,) = parse_document(doc, ref="dd", received_at=datetime.now(UTC)).signals
    assert signal.monitor_id == "221164084"
    obs = rca.observation_from_signal(signal)
    assert obs.metric == "221164084 High error rate on catalog"
    assert rca.family(obs.metric) == ("errors", True)
    am = parse_document(
        json.loads((FIXTURES / "alertmanager/harvester_rancher-monitoring_cputhrottlinghigh_firing.json").read_text()),
        ref="am",
        received_at=datetime.now(UTC),
    ).signals
    assert [rca.observation_from_signal(s).metric for s in am] == ["CPUThrottlingHigh"]


@pytest.mark.parametrize(("fault", "expected"), [("0", "recommendationservice2-0"), ("4", "currencyservice-0")])
def test_a_pod_fault_of_the_corpus_ranks_that_pod_first_with_its_evidence(fault: str, expected: str) -> None:
    assert _labels()[fault]["fault_entity"] == expected
    ranking = rca.rank(_kg(), rca.observations(_faults()[fault]))
    top = ranking.candidates[0]
    assert top.entity == expected and top.kind is topology.EntityKind.INSTANCE
    assert top.evidence[0].startswith("score ") and "onset +0s" in top.evidence[0]
    assert any(line.startswith("itself: ") and "metric(s) alerting" in line for line in top.evidence)
    assert any(line == f"runs on {_kg().host_of(expected)}" for line in top.evidence)


def test_a_service_fault_of_the_corpus_puts_the_service_and_its_pods_on_top() -> None:
    """Fault 9 (service currencyservice): every instance alerts; the service and its pods fill the top three."""
    t = _kg()
    assert _labels()["9"]["fault_level"] == "service"
    ranking = rca.rank(t, rca.observations(_faults()["9"]))
    top3 = [c.entity for c in ranking.candidates[:3]]
    assert all(e == "currencyservice" or t.service_of(e) == "currencyservice" for e in top3)
    svc = next(c for c in ranking.candidates if c.entity == "currencyservice")
    assert any("4 of its 4 instance(s) alerting" in line for line in svc.evidence)


def test_a_node_fault_of_the_corpus_ranks_the_node_first() -> None:
    assert _labels()["28"]["fault_entity"] == "node-6"
    assert rca.rank(_kg(), rca.observations(_faults()["28"])).candidates[0].entity == "node-6"


def test_background_of_chronic_alerts_discounts_them() -> None:
    """An (entity, metric) pair that alerted in every past storm has rarity ~0, one never seen 1; on fault 0 a
    history where the faulty pod's metrics alerted in each of 10 past storms takes it off the top: chronic alerts
    explain nothing."""
    b = rca.background([[("a", "m"), ("a", "m")], [("a", "m"), ("b", "n")]])
    assert b.storms == 2 and b.rarity("a", "m") == pytest.approx(0.0) and b.rarity("c", "m") == 1.0
    assert 0 < b.rarity("b", "n") < 1
    assert rca.Background().rarity("a", "m") == 1.0
    t = _kg()
    obs = rca.observations(_faults()["0"])
    pod = "recommendationservice2-0"
    assert rca.rank(t, obs).candidates[0].entity == pod
    chronic = [(pod, o.metric) for o in obs if o.entity == pod]
    history = rca.background([chronic] * 10)
    top = rca.rank(t, obs, background=history, limit=100).candidates
    assert top[0].entity != pod
    assert next(c.score for c in top if c.entity == pod) < 0.1


STORM_POLICY = """\
topology:
  services:
    storefront: [catalog, payments]
    catalog: {calls: [inventory], instances: [catalog-0, catalog-1]}
    inventory: {calls: [inventory-db], instances: [inventory-0, inventory-1], hosts: [node-2]}
    payments: []
  datastores:
    inventory-db: database
"""


def _storm() -> list[Observation]:
    t0 = 1_700_000_000_000
    rows = [
        # the culprit: a bad release of inventory, both pods' resource metrics, first
        (t0, "inventory-0", "container_cpu_usage_seconds"),
        (t0, "inventory-0", "container_memory_usage_MB"),
        (t0, "inventory-1", "container_cpu_usage_seconds"),
        (t0, "inventory-1", "container_memory_usage_MB"),
        (t0 + 60_000, "inventory", "grpc-mrt"),
        # its callers' symptoms, later, and up the chain
        (t0 + 60_000, "catalog", "grpc-mrt"),
        (t0 + 120_000, "catalog", "grpc-sr"),
        (t0 + 120_000, "catalog-1", "container_threads"),
        (t0 + 180_000, "storefront", "http-mrt"),
        (t0 + 180_000, "storefront", "http-sr"),
        (t0 + 240_000, "payments", "grpc-mrt"),
    ]
    return [Observation(at_ms=t, entity=e, metric=m, direction=rca.Direction.UP) for t, e, m in rows]


def test_a_storm_over_connected_services_ranks_the_failing_callee_first_with_evidence() -> None:
    t = topology.from_policy_text(STORM_POLICY)
    ranking = rca.rank(t, _storm())
    top = ranking.candidates[0]
    assert top.entity == "inventory", [(c.entity, c.score) for c in ranking.candidates]
    text = "\n".join(top.evidence)
    assert "2 of its 2 instance(s) alerting (inventory-0, inventory-1)" in text
    assert "callers with latency/error symptoms after its onset: catalog (+60s)" in text
    assert "latency: grpc-mrt" in text
    catalog = next(c for c in ranking.candidates if c.entity == "catalog")
    assert "callees alerting before it (it may be a victim): inventory (60s earlier)" in "\n".join(catalog.evidence)
    assert [c.entity for c in ranking.candidates].index("storefront") > 1
    assert ranking.observations == 11 and ranking.unknown == []


def test_one_pod_failing_alone_ranks_above_its_service() -> None:
    """The other side of the instance mean: when only inventory-0 fails, the pod, not its service, comes first."""
    t = topology.from_policy_text(STORM_POLICY)
    storm = [o for o in _storm() if o.entity != "inventory-1"]
    assert [c.entity for c in rca.rank(t, storm).candidates[:2]] == ["inventory-0", "inventory"]


def test_real_alertmanager_and_datadog_payloads_map_to_entities_and_unknown_ones_are_kept() -> None:
    """Alertmanager (promgen, version 3): ``instance: testhost.localhost:9100`` is the host when the topology knows
    it; ``service: Service 2`` is unknown to it and still ranked. Datadog (relay test notification with tags): the
    ``pod_name`` tag wins over ``service``."""
    now = datetime.now(UTC)
    am = parse_document(
        json.loads((FIXTURES / "alertmanager/promgen_alertmanager_v3_int-groupKey.json").read_text()),
        ref="am",
        received_at=now,
    ).signals
    dd_doc = json.loads(
        (FIXTURES / "datadog/relay-integrations_test-notification_service_check_triggered.json").read_text()
    )
    dd_doc.update(
        alert_transition="Triggered", tags="env:prod,service:catalog,pod_name:catalog-1,kube_deployment:catalog"
    )
    dd = parse_document(dd_doc, ref="dd", received_at=now).signals
    obs = [rca.observation_from_signal(s) for s in [*am, *dd]]
    t = topology.from_policy({"services": {"catalog": {"instances": ["catalog-1"], "hosts": ["testhost.localhost"]}}})
    assert [rca.resolve(t, o) for o in obs] == ["testhost.localhost", "Service 2", "catalog-1"]
    assert obs[0].metric == "node_down" and obs[0].labels["job"] == "node"
    assert [rca.resolve(topology.Topology(), o) for o in obs] == ["Service 1", "Service 2", "catalog-1"]
    ranking = rca.rank(t, obs)
    assert {c.entity for c in ranking.candidates} >= {"testhost.localhost", "Service 2", "catalog-1", "catalog"}
    assert ranking.unknown == ["Service 2"]
    assert rca.resolve(t, Observation(at_ms=0, metric="m")) == "unknown"


def test_malformed_corpus_rows_are_named() -> None:
    with pytest.raises(ValueError, match="alert row 1: ts_ms 'soon'"):
        rca.observations([["1", "a", None, "m", "up"], ["soon", "a", None, "m", "up"]])
    with pytest.raises(ValueError, match="alert row 0: expected"):
        rca.observations([["1", "a"]])


_entities = st.sampled_from(["frontend", "frontend-0", "cartservice-1", "node-5", "redis-cart-0", "ghost-7", "x"])
_obs = st.builds(
    Observation,
    at_ms=st.integers(min_value=0, max_value=600_000),
    entity=_entities,
    metric=st.sampled_from(["grpc-mrt", "container_memory_usage_MB", "system.cpu.pct_usage", "http-sr", "odd"]),
    direction=st.sampled_from([rca.Direction.UP, rca.Direction.DOWN, None]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_obs, max_size=40), st.randoms(use_true_random=False))
def test_ranking_is_deterministic_order_free_and_keeps_every_entity(obs: list[Observation], rnd) -> None:  # noqa: ANN001
    t = _kg()
    first = rca.rank(t, obs, limit=100)
    shuffled = list(obs)
    rnd.shuffle(shuffled)
    assert rca.rank(t, shuffled, limit=100) == first == rca.rank(t, obs, limit=100)
    ranked = {c.entity for c in first.candidates}
    assert {o.entity for o in obs} <= ranked  # unknown ones (ghost-7, x) too
    assert first.unknown == sorted({o.entity for o in obs} - set(t.entities))
    scores = [c.score for c in first.candidates]
    assert scores == sorted(scores, reverse=True)


def test_bench_runs_the_same_ranking_and_prints_the_figures(tmp_path: Path) -> None:
    """bench/rca.py on the fixture's seven faults (labels cut to them, columns reordered and one added: ignored)."""
    faults = _faults()
    rows = [r for fid, r in _labels().items() if fid in faults]
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["fault_entity", "extra", "fault_id", "fault_level"], extrasaction="ignore")
        w.writeheader()
        w.writerows({**r, "extra": "ignored"} for r in rows)
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "rca.py"),
            "--kg",
            str(KG),
            "--alerts",
            str(ALERTS),
            "--labels",
            str(labels),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["faults"] == 7
    assert set(figures) >= {"top1", "top3", "top1_service", "top3_service", "baseline_top1_service"}
    per_fault = [line for line in out.stderr.splitlines() if line.startswith("fault ")]
    assert len(per_fault) == 7 and per_fault[0].startswith("fault 0 pod recommendationservice2-0: HIT")
    assert figures["top1_service"] >= 5 / 7 * 100 - 0.1  # faults 0, 4, 9, 14, 28 at least (each checked above)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=3000), st.text(max_size=600))
def test_any_datadog_tags_and_scope_map_to_a_bounded_observation(tags: str, hostname: str) -> None:
    """Whatever tags and host a Datadog webhook carries, the alert becomes an observation (at most 64 labels of
    bounded keys and values) and an entity, never an error."""
    doc = json.loads(
        (FIXTURES / "datadog/relay-integrations_test-notification_service_check_triggered.json").read_text()
    )
    doc.update(alert_transition="Triggered", tags=tags, hostname=hostname)
    for s in parse_document(doc, ref="dd", received_at=datetime.now(UTC)).signals:
        o = rca.observation_from_signal(s)
        assert len(o.labels) <= 64 and all(len(k) <= 253 and len(v) <= 253 for k, v in o.labels.items())
        assert rca.resolve(_kg(), o)


def test_evidence_lines_are_bounded() -> None:
    obs = [Observation(at_ms=i, entity="frontend-0", metric=f"container_memory_{'x' * 200}_{i}") for i in range(40)]
    top = rca.rank(_kg(), obs).candidates[0]
    assert top.entity == "frontend-0"
    assert all(len(line) <= rca.EVIDENCE_LINE_MAX for line in top.evidence)
    assert any(line.endswith("\u2026") for line in top.evidence)
