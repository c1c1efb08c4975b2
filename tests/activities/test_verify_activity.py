"""``verify.judge`` against the sandbox's Datadog: the world model (``fixloop.sandbox.world``) reacts to the deploys
recorded
here, at a fixed clock 10 minutes after the deploy (as the workflow calls it, once the window has passed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment

from fixloop.activities import verify
from fixloop.activities.verify import VerifyActivities
from fixloop.core.models import Severity, WorkItem, WorkItemKind
from fixloop.core.service import service_of
from fixloop.core.verification import MetricStatus, VerdictResult, VerificationPolicy, split_points
from fixloop.integrations.datadog.api import DatadogSettings
from fixloop.integrations.prometheus import PromSeries
from fixloop.sandbox.world import MONITORS
from fixloop.workflows.contracts.verify import JudgeInput
from tests.sandbox.conftest import Running, start_sandbox  # noqa: F401  (the fixture)

DEPLOYED = datetime(2024, 6, 1, 11, 50, tzinfo=UTC)
NOW = DEPLOYED + timedelta(minutes=10)
SCOPE = "platform/gitops"
BUSTER = "FROM debian:10.8\nRUN apt-get update\n"
BOOKWORM = "FROM debian:12.8-slim\nRUN apt-get update\n"
LEGACY_ERRORS = next(m for m in MONITORS if m.service == "legacy-api" and m.kind == "errors")


def item(
    service: str | None,
    kind: WorkItemKind = WorkItemKind.OS_REBUILD,
    monitor_id: str | None = None,
    artifact: str | None = None,
) -> WorkItem:
    return WorkItem(
        id="wi-" + "0a" * 12,
        kind=kind,
        title=f"Rebuild {service}",
        severity=Severity.HIGH,
        signals=["sig-1"],
        service=service,
        monitor_id=monitor_id,
        artifact=artifact,
    )


@pytest.fixture
def dd(start_sandbox: Callable[..., Running]) -> Running:  # noqa: F811
    return start_sandbox("/datadog", clock=lambda: NOW)


@pytest.fixture
def acts(dd: Running) -> VerifyActivities:
    creds = dd.sb.credentials
    settings = DatadogSettings(
        host=dd.service("/datadog"), api_key=creds.datadog_api_key, app_key=creds.datadog_app_key, timeout=5
    )
    return VerifyActivities(settings)


def deploy(dd: Running, at: datetime, revision: str, service: str, base_image: str, dockerfile: str) -> None:
    dd.sb.world.record_deploy(
        at,
        revision,
        {service: {"app": f"registry.sandbox.local/shop/{service}:{revision}", "base-image": base_image}},
        {f"services/{service}/Dockerfile": dockerfile},
    )


async def test_an_improving_deploy_passes_with_its_numbers(dd: Running, acts: VerifyActivities) -> None:
    deploy(dd, DEPLOYED - timedelta(days=2), "r1", "legacy-api", "debian:10.8", BUSTER)  # the seeded alert
    deploy(dd, DEPLOYED, "r2", "legacy-api", "debian:12.8-slim", BOOKWORM)  # the fix: errors / 4

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=item("legacy-api"), deployed_at=DEPLOYED))

    assert v.result is VerdictResult.PASS, v.summary
    assert v.summary.startswith("legacy-api shows no regression over 10 min after the deploy")
    assert v.baseline and v.after
    assert (v.baseline.start, v.baseline.end, v.after.end) == (DEPLOYED - timedelta(minutes=10), DEPLOYED, NOW)
    by_name = {m.name: m for m in v.metrics}
    assert set(by_name) == {"error rate", "latency p95", "request rate"}
    errors = by_name["error rate"]
    assert (errors.n_baseline, errors.n_after) == (20, 20)  # 10 minutes of 30-second points each side
    assert errors.query == "sum:trace.http.request.errors{service:legacy-api}.as_rate().rollup(avg, 30)"
    assert errors.median_baseline and errors.median_after and errors.effect is not None
    assert errors.median_baseline == pytest.approx(15 * 0.02 * 4, rel=0.15)  # hits x error ratio x 4 (buster)
    assert errors.effect == pytest.approx(-0.75, abs=0.08)  # a quarter of the errors: a good change passes
    assert errors.status is MetricStatus.PASS and errors.p_value is not None and errors.p_value > 0.99
    assert v.score == 100
    assert any(line.startswith("error rate (critical): PASS: median 1.") for line in v.evidence)


async def test_a_deploy_the_world_breaks_fails_naming_the_metric(dd: Running, acts: VerifyActivities) -> None:
    deploy(dd, DEPLOYED - timedelta(days=2), "r1", "payments", "python:3.11-slim", "FROM python:3.11-slim\n")
    deploy(dd, DEPLOYED, "r2", "payments", "python:3.12-slim", "FROM python:3.12-slim\n")  # errors x3, p95 x1.6

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=item("payments"), deployed_at=DEPLOYED))

    assert v.result is VerdictResult.FAIL
    assert v.summary.startswith("payments regressed after the deploy: error rate rose +")
    errors = next(m for m in v.metrics if m.name == "error rate")
    assert errors.status is MetricStatus.FAIL and errors.effect == pytest.approx(2.0, abs=0.3)
    assert errors.p_value is not None and errors.p_value < 1e-6
    latency = next(m for m in v.metrics if m.name == "latency p95")
    assert latency.status is MetricStatus.FAIL and latency.effect == pytest.approx(0.6, abs=0.1)
    assert next(m for m in v.metrics if m.name == "request rate").status is MetricStatus.PASS
    assert any(line.startswith("error rate (critical): FAIL: median ") for line in v.evidence)
    assert v.evidence[0].startswith("windows: baseline 2024-06-01T11:40:00Z to 2024-06-01T11:50:00Z, after ")


async def test_a_regression_during_a_long_rollout_is_not_taken_for_the_baseline(
    dd: Running, acts: VerifyActivities
) -> None:
    applied = DEPLOYED - timedelta(minutes=6)  # Flux applied it; the new pods took 6 minutes to be all ready
    deploy(dd, DEPLOYED - timedelta(days=2), "r1", "payments", "python:3.11-slim", "FROM python:3.11-slim\n")
    deploy(dd, applied, "r2", "payments", "python:3.12-slim", "FROM python:3.12-slim\n")  # errors x3 from the apply
    wi = item("payments")

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=wi, deployed_at=DEPLOYED, changed_at=applied))

    assert v.result is VerdictResult.FAIL, v.summary
    assert v.baseline and v.after and (v.baseline.start, v.baseline.end) == (applied - timedelta(minutes=10), applied)
    assert (v.after.start, v.after.end) == (DEPLOYED, NOW)
    errors = next(m for m in v.metrics if m.name == "error rate")
    assert (errors.n_baseline, errors.n_after) == (20, 20) and errors.effect == pytest.approx(2.0, abs=0.3)
    assert "360 s between (the rollout) left out" in v.evidence[0]
    # measured from the rollout's end alone, the baseline would hold the new version's errors: x3 would read +24 %
    hidden = await acts.judge(JudgeInput(scope=SCOPE, work_item=wi, deployed_at=DEPLOYED))
    shrunk = next(m for m in hidden.metrics if m.name == "error rate").effect
    assert shrunk is not None and shrunk < 0.5, hidden.summary
    with pytest.raises(ValueError, match="changed_at is after deployed_at"):
        JudgeInput(scope=SCOPE, work_item=wi, deployed_at=DEPLOYED, changed_at=DEPLOYED + timedelta(seconds=1))


async def test_every_metric_has_a_unit_its_own_or_the_one_datadog_reports(dd: Running, acts: VerifyActivities) -> None:
    """The default checks carry theirs (errors/s, s shown in ms, req/s); a metric of ``fixloop.yaml`` without one
    gets the unit Datadog's answer names for the series (``unit`` of ``GET /api/v1/query``)."""
    deploy(dd, DEPLOYED - timedelta(days=2), "r1", "payments", "python:3.11-slim", "FROM python:3.11-slim\n")
    deploy(dd, DEPLOYED, "r2", "payments", "python:3.12-slim", "FROM python:3.12-slim\n")
    raw = {"name": "hits", "query": "sum:trace.http.request.hits{service:{service}}", "direction": "decrease"}
    per_second = {**raw, "name": "hits per second", "query": raw["query"] + ".as_rate()"}
    policy = VerificationPolicy.from_policy({"metrics": [raw, per_second]})

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=item("payments"), deployed_at=DEPLOYED, policy=policy))

    units = {m.name: m.unit for m in v.metrics}
    assert units == {
        "error rate": "errors/s", "latency p95": "s", "request rate": "req/s",
        "hits": "hit", "hits per second": "hit/second",
    }  # fmt: skip
    latency = next(line for line in v.evidence if line.startswith("latency p95"))
    assert " ms \u2192 " in latency and latency.split(" \u2192 ")[1].split(" (")[0].endswith(" ms")
    assert any(line.startswith("hits: PASS: median ") and " hit \u2192 " in line for line in v.evidence)
    assert "errors/s \u2192 " in v.summary


def test_datadog_units_are_shown_as_display_units() -> None:
    assert verify.unit_of("error/second") == "error/second"
    assert verify.unit_of("<b>byte</b>") == "bbyte/b"  # no markup survives; at most 20 characters
    assert verify.unit_of(None) is None and verify.unit_of("[]") is None
    assert len(verify.unit_of("x" * 50) or "") == 20


async def test_an_unchanged_service_passes_and_the_env_tag_is_used(dd: Running, acts: VerifyActivities) -> None:
    deploy(dd, DEPLOYED, "r1", "inventory", "golang:1.22", "FROM golang:1.22\n")  # nothing the world reacts to
    policy = VerificationPolicy.from_policy({"env": "production", "window": "10m"})

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=item("inventory"), deployed_at=DEPLOYED, policy=policy))

    assert v.result is VerdictResult.PASS, v.evidence
    assert v.env == "production"
    assert all("{service:inventory,env:production}" in (m.query or "") for m in v.metrics)


async def test_a_service_without_series_gives_no_data(dd: Running, acts: VerifyActivities) -> None:
    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=item("ghost"), deployed_at=DEPLOYED))

    assert v.result is VerdictResult.NO_DATA
    assert v.summary == "Not enough data to judge ghost after the deploy: no data for request rate."
    statuses = {m.name: m.status for m in v.metrics}
    assert statuses["request rate"] is MetricStatus.NO_DATA and statuses["latency p95"] is MetricStatus.NO_DATA
    assert "request rate (required): NO DATA: 0 points before, 0 after (needs 5 each side)" in v.evidence


async def test_an_env_datadog_does_not_know_gives_no_data_not_pass(dd: Running, acts: VerifyActivities) -> None:
    policy = VerificationPolicy.from_policy({"env": "prod"})  # the sandbox's env tags are production and staging

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=item("payments"), deployed_at=DEPLOYED, policy=policy))

    assert v.result is VerdictResult.NO_DATA


async def test_an_alerting_monitor_fails_an_alert_driven_item(dd: Running, acts: VerifyActivities) -> None:
    # The deploy changed nothing the world cares about: legacy-api is still on buster, its monitor still alerts.
    deploy(dd, DEPLOYED - timedelta(days=2), "r1", "legacy-api", "debian:10.8", BUSTER)
    deploy(dd, DEPLOYED, "r2", "legacy-api", "debian:10.8", BUSTER + "LABEL x=y\n")
    alert = item("legacy-api", WorkItemKind.ALERT_INVESTIGATION, monitor_id=str(LEGACY_ERRORS.id))

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=alert, deployed_at=DEPLOYED))

    assert {m.name: m.status for m in v.metrics}["error rate"] is MetricStatus.PASS  # unchanged, still broken
    assert v.result is VerdictResult.FAIL
    assert v.summary == (
        f"The triggering monitor {LEGACY_ERRORS.id} (High error rate on legacy-api) is still Alert 10 min after "
        "the deploy."
    )
    assert [(m.id, m.state, m.status) for m in v.monitors] == [(LEGACY_ERRORS.id, "Alert", MetricStatus.FAIL)]
    assert f"monitor {LEGACY_ERRORS.id} (High error rate on legacy-api): FAIL: still alerting (Alert)" in v.evidence

    # The recovery the workflow saw on the same alert cycle is taken as it is: no monitor is read.
    seen = await acts.judge(JudgeInput(scope=SCOPE, work_item=alert, deployed_at=DEPLOYED, recovered=True))
    assert seen.result is VerdictResult.PASS and seen.monitors == []


async def test_a_recovered_monitor_passes_an_alert_driven_item(dd: Running, acts: VerifyActivities) -> None:
    deploy(dd, DEPLOYED - timedelta(days=2), "r1", "legacy-api", "debian:10.8", BUSTER)
    deploy(dd, DEPLOYED, "r2", "legacy-api", "debian:12.8-slim", BOOKWORM)
    alert = item("legacy-api", WorkItemKind.ALERT_INVESTIGATION)

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=alert, deployed_at=DEPLOYED, monitor_ids=[LEGACY_ERRORS.id]))

    assert v.result is VerdictResult.PASS, v.summary
    assert [(m.id, m.state, m.status) for m in v.monitors] == [(LEGACY_ERRORS.id, "OK", MetricStatus.PASS)]


async def test_judging_heartbeats_at_each_monitor_and_metric_query(dd: Running, acts: VerifyActivities) -> None:
    """Under Temporal ``verify.judge`` heartbeats from its worker thread before each monitor read and each metric
    query (a dead worker is noticed within ``VERIFY_HEARTBEAT``)."""
    deploy(dd, DEPLOYED - timedelta(days=2), "r1", "legacy-api", "debian:10.8", BUSTER)
    deploy(dd, DEPLOYED, "r2", "legacy-api", "debian:12.8-slim", BOOKWORM)
    env = ActivityEnvironment()
    beats: list[str] = []
    env.on_heartbeat = lambda *details: beats.extend(details)
    alert = item("legacy-api", WorkItemKind.ALERT_INVESTIGATION)
    inp = JudgeInput(scope=SCOPE, work_item=alert, deployed_at=DEPLOYED, monitor_ids=[LEGACY_ERRORS.id])
    v = await env.run(acts.judge, inp)
    assert v.result is VerdictResult.PASS, v.summary
    assert beats == [
        f"read Datadog monitor {LEGACY_ERRORS.id}",
        "query error rate of legacy-api on datadog",
        "query latency p95 of legacy-api on datadog",
        "query request rate of legacy-api on datadog",
    ]


async def test_a_missing_monitor_or_a_refused_query_is_no_data(dd: Running, acts: VerifyActivities) -> None:
    missing = await acts.judge(
        JudgeInput(scope=SCOPE, work_item=item("inventory"), deployed_at=DEPLOYED, monitor_ids=[999])
    )
    assert missing.result is VerdictResult.NO_DATA
    assert "monitor 999: NO DATA: not found in Datadog (deleted?)" in missing.evidence

    policy = VerificationPolicy.from_policy({"metrics": [{"name": "request rate", "query": "not a query{"}]})
    refused = await acts.judge(
        JudgeInput(scope=SCOPE, work_item=item("inventory"), deployed_at=DEPLOYED, policy=policy)
    )
    assert refused.result is VerdictResult.NO_DATA
    hits = next(m for m in refused.metrics if m.name == "request rate")
    assert hits.status is MetricStatus.NO_DATA and hits.reason.startswith("Datadog refused the query: HTTP 400")


def test_the_service_comes_from_the_work_item_or_its_image() -> None:
    assert service_of(item("payments")) == "payments"
    assert service_of(item(None, artifact="registry.sandbox.local/shop/legacy-api:1.0@sha256:ab12")) == "legacy-api"
    assert service_of(item(None, artifact="localhost:5000/catalog")) == "catalog"
    assert service_of(item("payments"), "storefront") == "storefront"
    assert service_of(item("pay},env:*,x:{y")) is None  # never widens a query scope
    assert service_of(item(None)) is None


def test_the_activity_keeps_its_interface() -> None:
    assert verify.JUDGE == "verify.judge"
    assert [v.value for v in VerdictResult] == ["pass", "marginal", "fail", "no_data"]
    old = JudgeInput(scope=SCOPE, work_item=item("payments"), deployed_at=DEPLOYED)  # as the workflow builds it
    assert old.policy == VerificationPolicy() and old.monitor_ids == [] and not old.recovered
    assert JudgeInput.model_validate_json(old.model_dump_json()) == old


async def test_an_alert_fixloop_cannot_look_up_needs_its_recovery(dd: Running, acts: VerifyActivities) -> None:
    # An Alertmanager alert: its alertname is no Datadog monitor id; untrusted text stays inert in the evidence.
    alert = item("inventory", WorkItemKind.ALERT_INVESTIGATION, monitor_id="[KubePodCrashLooping|https://evil]")

    v = await acts.judge(JudgeInput(scope=SCOPE, work_item=alert, deployed_at=DEPLOYED))

    assert v.result is VerdictResult.NO_DATA
    assert [(m.id, m.name, m.status) for m in v.monitors] == [
        (None, "KubePodCrashLoopinghttps://evil", MetricStatus.NO_DATA)
    ]
    assert v.summary.startswith("Cannot tell whether the triggering alert KubePodCrashLoopinghttps://evil recovered")
    seen = await acts.judge(JudgeInput(scope=SCOPE, work_item=alert, deployed_at=DEPLOYED, recovered=True))
    assert seen.result is VerdictResult.PASS


@given(
    window_steps=st.integers(min_value=1, max_value=40),
    step=st.sampled_from([1, 2, 15, 30, 60]),
    rollout_s=st.floats(min_value=0, max_value=900, allow_nan=False),
    offset_s=st.floats(min_value=0, max_value=59.999, allow_nan=False),
)
def test_the_prometheus_range_tiles_the_after_window_and_covers_the_baseline(
    window_steps: int, step: int, rollout_s: float, offset_s: float
) -> None:
    deployed = DEPLOYED + timedelta(seconds=offset_s)
    changed = deployed - timedelta(seconds=rollout_s)
    w = window_steps * step
    start, end = verify.prometheus_window(deployed, w, step, changed)
    stamps = [start + k * step for k in range(round((end - start) / step) + 1)]  # the points query_range returns
    found = [PromSeries(labels={}, points=[(t, 1.0) for t in stamps])]
    buckets = [t for t, _ in verify.prometheus_points(found, step)]
    c = changed.timestamp()
    assert all(t >= c - w - 1e-6 for t in buckets), "no bucket from before the baseline"
    before, after = split_points(verify.prometheus_points(found, step), deployed, timedelta(seconds=w), step, changed)
    assert len(after) == window_steps, "the after window: whole buckets from the deploy on"
    assert len(before) >= window_steps - 1, "the baseline: at most one bucket lost to the grid"
    if rollout_s == 0:
        assert len(before) == window_steps, "no rollout between: both windows tile exactly"
