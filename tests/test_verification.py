"""``fixloop.core.verification`` on seeded series: per-metric comparison, the verdict, the policy of ``fixloop.yaml``.

Series are made like the sandbox world's (``fixloop.sandbox.world``): a mean times ``1 + cv * z``, ``z`` standard normal
clipped to +-3, with the world's noise at 30-second points (error rate CV 10 % at 60 s -> ~14 %)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.core.verification import (
    DEFAULT_METRICS,
    ERROR_RATE,
    LATENCY_P95,
    REQUEST_RATE,
    Direction,
    MetricCheck,
    MetricResult,
    MetricStatus,
    VerdictResult,
    VerificationPolicy,
    change_line,
    change_start,
    compare,
    describe_plan,
    headline,
    judge,
    percent,
    render_query,
    shown_unit,
    split_points,
    value,
)

POLICY = VerificationPolicy()
N = 20  # 10 minutes of 30-second points
CV = {"errors": 0.10 * math.sqrt(2), "latency": 0.06 * math.sqrt(2), "hits": 0.04 * math.sqrt(2)}
SEED_POLICY = Path(__file__).resolve().parent.parent / "sandbox" / "gitops_seed" / "fixloop.yaml"


def series(seed: int, mean: float, cv: float, n: int = N) -> list[float]:
    z = np.clip(np.random.default_rng(seed).standard_normal(n), -3, 3)
    return [float(v) for v in mean * np.maximum(0.05, 1 + cv * z)]


def both(seed: int, mean: float, cv: float, factor: float = 1.0) -> tuple[list[float], list[float]]:
    """A baseline and an after window of one metric whose mean is multiplied by ``factor`` at the deploy."""
    return series(seed, mean, cv), series(seed + 10_000, mean * factor, cv)


def results(seed: int, error_x: float = 1.0, latency_x: float = 1.0, hits_x: float = 1.0) -> list[MetricResult]:
    """The default checks of one seeded service (payments: 40 req/s, 1.25 % errors, p95 320 ms)."""
    return [
        compare(*both(seed, 0.5, CV["errors"], error_x), ERROR_RATE, POLICY),
        compare(*both(seed + 1, 0.32, CV["latency"], latency_x), LATENCY_P95, POLICY),
        compare(*both(seed + 2, 40.0, CV["hits"], hits_x), REQUEST_RATE, POLICY),
    ]


# --- one metric ----------------------------------------------------------------------------------------------------


def test_a_2x_error_rate_regression_fails() -> None:
    r = compare(*both(1, 0.5, CV["errors"], 2.0), ERROR_RATE, POLICY)
    assert r.status is MetricStatus.FAIL
    assert (r.n_baseline, r.n_after) == (N, N)
    assert r.median_baseline == pytest.approx(0.5, rel=0.1) and r.median_after == pytest.approx(1.0, rel=0.1)
    assert r.effect == pytest.approx(1.0, abs=0.2) and r.p_value is not None and r.p_value < 1e-6
    assert r.reason.startswith("rose +")

    verdict, summary, evidence = judge(results(1, error_x=2.0), POLICY, subject="payments")
    assert verdict is VerdictResult.FAIL
    assert summary.startswith("payments regressed after the deploy: error rate rose +")
    assert evidence[0].startswith("error rate (critical): FAIL: median 0.")
    assert evidence[-1] == "score: 67/100 (pass >= 95, marginal >= 50); failed 1 (limit 1), no data 0 of 3"


def test_an_unchanged_noisy_service_passes() -> None:
    verdicts = {seed: judge(results(seed), POLICY, subject="payments") for seed in range(0, 300, 3)}
    assert [(seed, v[1]) for seed, v in verdicts.items() if v[0] is not VerdictResult.PASS] == []
    assert verdicts[0][1] == (
        "payments shows no regression over 10 min after the deploy: error rate, latency p95 and request rate held."
    )


def test_no_data_is_no_data_never_a_pass() -> None:
    nothing = compare([], [], REQUEST_RATE, POLICY)
    assert nothing.status is MetricStatus.NO_DATA and nothing.p_value is None and nothing.effect is None
    assert nothing.reason == "0 points before, 0 after (needs 5 each side)"
    few = compare(series(1, 40, 0.05, 4), series(2, 40, 0.05), REQUEST_RATE, POLICY)  # 4 < min_points
    assert few.status is MetricStatus.NO_DATA and (few.n_baseline, few.n_after) == (4, N)

    # No metric with data at all.
    none = [compare([], [], c.model_copy(update={"missing_as_zero": False}), POLICY) for c in DEFAULT_METRICS]
    verdict, summary, evidence = judge(none, POLICY, subject="ghost")
    assert verdict is VerdictResult.NO_DATA
    assert summary == "Not enough data to judge ghost after the deploy: no data for request rate."
    assert evidence[-1].startswith("score: n/a (no metric has data)")

    # The others pass, but the request rate (must have data) has none: still no verdict of pass.
    rs = results(5)[:2] + [nothing]
    assert judge(rs, POLICY)[0] is VerdictResult.NO_DATA

    # A metric that may lack data (latency here) is left out of the score.
    rs = [results(5)[0], compare([], [], LATENCY_P95, POLICY), results(5)[2]]
    verdict, summary, _ = judge(rs, POLICY, subject="payments")
    assert verdict is VerdictResult.PASS
    assert summary.endswith("error rate and request rate held (latency p95: no data).")


def test_a_sparse_error_count_counts_its_missing_points_as_zero() -> None:
    quiet = compare([], [], ERROR_RATE, POLICY)  # no errors reported on either side
    assert quiet.status is MetricStatus.PASS and (quiet.n_baseline, quiet.n_after) == (N, N) and quiet.p_value is None
    new_errors = compare([], series(3, 0.4, CV["errors"]), ERROR_RATE, POLICY)  # errors appear after the deploy
    assert new_errors.status is MetricStatus.FAIL
    assert new_errors.median_baseline == 0 and new_errors.effect is None and new_errors.reason.startswith("rose from 0")


def test_direction_matters() -> None:
    faster = both(7, 0.32, CV["latency"], 0.5)  # p95 halves
    assert compare(*faster, LATENCY_P95, POLICY).status is MetricStatus.PASS
    assert compare(*faster, LATENCY_P95.model_copy(update={"direction": Direction.DECREASE}), POLICY).status is (
        MetricStatus.FAIL
    )
    assert compare(*faster, LATENCY_P95.model_copy(update={"direction": Direction.EITHER}), POLICY).status is (
        MetricStatus.FAIL
    )
    fewer_requests = both(8, 40.0, CV["hits"], 0.6)
    more_requests = both(9, 40.0, CV["hits"], 1.6)
    assert compare(*fewer_requests, REQUEST_RATE, POLICY).status is MetricStatus.FAIL
    assert compare(*more_requests, REQUEST_RATE, POLICY).status is MetricStatus.PASS
    fewer_errors = compare(*both(10, 0.5, CV["errors"], 0.25), ERROR_RATE, POLICY)
    assert fewer_errors.status is MetricStatus.PASS and fewer_errors.reason.startswith("fell (the good way)")


def test_the_effect_floor_stops_a_tiny_but_significant_shift_failing() -> None:
    steady = both(11, 0.32, 0.01, 1.05)  # +5 % with 1 % noise: certainly real, too small to matter
    r = compare(*steady, LATENCY_P95, POLICY)
    assert r.p_value is not None and r.p_value < 1e-6
    assert r.effect == pytest.approx(0.05, abs=0.01)
    assert r.status is MetricStatus.PASS and r.reason.startswith("rose within the 20 % floor")
    strict = LATENCY_P95.model_copy(update={"effect_floor": 0.02})
    assert compare(*steady, strict, POLICY).status is MetricStatus.FAIL


def test_a_large_change_without_significance_does_not_fail() -> None:
    # Two points each side: any change is too few points to be significant (min_points lowered to allow it).
    policy = VerificationPolicy(min_points=2, window=timedelta(minutes=1))
    r = compare([1.0, 1.1], [3.0, 3.2], LATENCY_P95, policy)
    assert r.effect is not None and r.effect > 1 and r.p_value is not None and r.p_value >= 0.05
    assert r.status is MetricStatus.PASS and r.reason.startswith("rose but not significantly")


# --- the verdict ---------------------------------------------------------------------------------------------------


def _passing(i: int) -> MetricResult:
    check = MetricCheck(name=f"metric {i}", query=f"avg:m{i}{{service:{{service}}}}")
    return compare(*both(100 + i, 10.0, 0.05), check, POLICY)


def _failing(i: int, critical: bool = False) -> MetricResult:
    check = MetricCheck(name=f"bad {i}", query=f"avg:b{i}{{service:{{service}}}}", critical=critical)
    return compare(*both(200 + i, 10.0, 0.05, 2.0), check, POLICY)


def test_a_failing_critical_metric_fails_whatever_the_score() -> None:
    rs = [_failing(0, critical=True)] + [_passing(i) for i in range(19)]  # score 95: a pass by score alone
    verdict, summary, evidence = judge(rs, POLICY, subject="svc")
    assert verdict is VerdictResult.FAIL and summary.startswith("svc regressed after the deploy: bad 0 rose +")
    assert evidence[-1].startswith("score: 95/100")
    assert judge([_failing(0)] + [_passing(i) for i in range(19)], POLICY)[0] is VerdictResult.PASS


def test_score_thresholds_and_the_failure_limit() -> None:
    one_of_three = [_failing(0), _passing(1), _passing(2)]  # score 67
    verdict, summary, _ = judge(one_of_three, POLICY, subject="svc")
    assert verdict is VerdictResult.MARGINAL
    assert summary.startswith("svc is borderline after the deploy (score 67/100, a human decides): bad 0 rose +")

    two_of_ten = [_failing(0), _failing(1)] + [_passing(i) for i in range(8)]  # score 80, but 2 failed > limit 1
    assert judge(two_of_ten, POLICY)[0] is VerdictResult.FAIL
    assert judge(two_of_ten, VerificationPolicy(failure_limit=2))[0] is VerdictResult.MARGINAL
    assert judge(two_of_ten, VerificationPolicy(failure_limit=2, marginal_score=90, pass_score=95))[0] is (
        VerdictResult.FAIL
    )
    assert judge(two_of_ten, VerificationPolicy(failure_limit=5, pass_score=80))[0] is VerdictResult.PASS
    # A proven regression outweighs missing data.
    assert judge([_failing(0, critical=True), compare([], [], REQUEST_RATE, POLICY)], POLICY)[0] is (VerdictResult.FAIL)


def test_identical_windows_pass_without_a_test() -> None:
    r = compare([3.0] * N, [3.0] * N, LATENCY_P95, POLICY)
    assert r.status is MetricStatus.PASS and r.p_value is None and r.effect == 0


# --- queries and points --------------------------------------------------------------------------------------------


def test_queries_are_rendered_with_the_service_env_and_rollup() -> None:
    assert render_query(ERROR_RATE.query, "payments", "prod", 30) == (
        "sum:trace.http.request.errors{service:payments,env:prod}.as_rate().rollup(avg, 30)"
    )
    assert render_query(LATENCY_P95.query, "payments", None, 60) == (
        "avg:trace.http.request.duration.by.service.95p{service:payments}.rollup(avg, 60)"
    )
    assert render_query("avg:m{env:{env}}", "x", None, 30) == "avg:m{*}.rollup(avg, 30)"
    assert render_query("avg:m{env:{env},service:{service}}.rollup(max, 60)", "x", None, 30) == (
        "avg:m{service:x}.rollup(max, 60)"
    )
    for service, env in (("pay},env:*,x:{y", None), ("payments", "prod,team:x"), ("pay ments", None)):
        with pytest.raises(ValueError, match="is not a Datadog tag value"):
            render_query(ERROR_RATE.query, service, env, 30)


def test_points_are_split_at_the_deploy_by_whole_buckets() -> None:
    deployed = datetime(2024, 6, 1, 11, 50, 10, tzinfo=UTC)  # inside the bucket starting 11:50:00
    d = deployed.timestamp()
    pts = [(d - 10 - 30 * k, 1.0) for k in range(1, 25)] + [(d - 10, 9.0)] + [(d + 20 + 30 * k, 2.0) for k in range(22)]
    pts += [(d - 40, None), (d + 50, math.nan)]
    before, after = split_points(pts, deployed, timedelta(minutes=10), 30)
    assert 9.0 not in before + after  # the bucket holding the deploy is on neither side
    assert before == [1.0] * 19 and after == [2.0] * 19  # the first bucket starting before the window is cut too


def test_the_baseline_ends_where_flux_applied_and_the_after_window_starts_where_it_runs() -> None:
    applied = datetime(2024, 6, 1, 11, 44, 10, tzinfo=UTC)  # Flux applied the change; its rollout took 6 min
    deployed = applied + timedelta(minutes=6)
    a, d = applied.timestamp(), deployed.timestamp()
    old = [(a - 10 - 30 * k, 1.0) for k in range(1, 30)]  # every bucket that ends before the apply
    mixed = [(a - 10 + 30 * k, 5.0) for k in range(13)]  # from the bucket holding the apply to the one holding d
    new = [(d + 20 + 30 * k, 9.0) for k in range(25)]
    before, after = split_points(old + mixed + new, deployed, timedelta(minutes=10), 30, changed_at=applied)
    assert before == [1.0] * 19 and after == [9.0] * 19  # 10 min a side, the rollout on neither
    # without the apply time the baseline would be the rollout's: the old and the new version both served then
    contaminated, _ = split_points(old + mixed + new, deployed, timedelta(minutes=10), 30)
    assert contaminated.count(5.0) == 12
    # a change time after the deploy is read as the deploy (never an overlap of the two windows)
    assert split_points(old + new, deployed, timedelta(minutes=10), 30, changed_at=deployed + timedelta(hours=1)) == (
        split_points(old + new, deployed, timedelta(minutes=10), 30)
    )


SEEN = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def test_the_change_starts_at_flux_s_time_bounded_by_the_merge_and_by_when_it_was_seen() -> None:
    merged = SEEN - timedelta(minutes=5)
    assert change_start(SEEN - timedelta(minutes=2), SEEN, merged) == SEEN - timedelta(minutes=2)
    assert change_start(None, SEEN, merged) == SEEN, "Flux says nothing: when fixloop saw it applied"
    assert change_start(SEEN + timedelta(seconds=3), SEEN, merged) == SEEN, "a cluster clock ahead"
    assert change_start(SEEN - timedelta(days=3), SEEN, merged) == merged, "an older Ready transition: the merge"
    assert change_start(SEEN - timedelta(days=3), SEEN) == SEEN - timedelta(days=3), "no merge time: Flux's"


@given(
    applied=st.none() | st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30)),
    merged=st.none() | st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30)),
)
def test_the_change_start_never_follows_its_sighting_nor_precedes_its_merge(
    applied: timedelta | None, merged: timedelta | None
) -> None:
    at = change_start(None if applied is None else SEEN + applied, SEEN, None if merged is None else SEEN + merged)
    assert at <= SEEN
    if merged is not None:
        assert at >= min(SEEN, SEEN + merged)
    if applied is not None and applied <= timedelta(0) and (merged is None or applied >= merged):
        assert at == SEEN + applied, "a plausible time of Flux's is taken as it is"


# --- the policy ----------------------------------------------------------------------------------------------------


def test_the_seeded_repository_policy() -> None:
    policy = VerificationPolicy.from_policy_text(SEED_POLICY.read_text())
    assert policy.window == timedelta(minutes=10) and policy.interval == timedelta(seconds=30)
    assert policy.kustomization_ref == ("flux-system", "apps-production")
    assert policy.metrics == DEFAULT_METRICS and policy.points == 20
    assert VerificationPolicy.from_policy(None) == VerificationPolicy() == VerificationPolicy.from_policy_text(None)
    assert VerificationPolicy.from_policy_text("version: 1\n") == VerificationPolicy()


def test_policy_values_and_overrides() -> None:
    policy = VerificationPolicy.from_policy(
        {
            "window": "1h30m",
            "interval": 60,
            "env": "production",
            "alpha": 0.01,
            "thresholds": {"pass": 90, "marginal": 70},
            "failure_limit": 0,
            "metrics": [
                {"name": "error rate", "effect_floor": 0.5},
                {
                    "name": "queue depth",
                    "query": "avg:app.queue.depth{service:{service}}",
                    "direction": "either",
                    "unit": "jobs",
                },
            ],
            "services": {
                "batch-worker": {"metrics": [{"name": "request rate", "enabled": False}]},
                "payments": {"metrics": [{"name": "latency p95", "critical": True, "effect_floor": 0.1}]},
            },
        }
    )
    assert policy.window == timedelta(hours=1, minutes=30) and policy.interval_s == 60 and policy.points == 90
    assert (policy.env, policy.alpha, policy.pass_score, policy.marginal_score) == ("production", 0.01, 90, 70)
    assert policy.failure_limit == 0
    names = [c.name for c in policy.checks_for("storefront")]
    assert names == ["error rate", "latency p95", "request rate", "queue depth"]
    errors = policy.checks_for(None)[0]
    assert errors.effect_floor == 0.5 and errors.query == ERROR_RATE.query and errors.critical  # the rest kept
    assert [c.name for c in policy.checks_for("batch-worker")] == ["error rate", "latency p95", "queue depth"]
    payments_p95 = policy.checks_for("payments")[1]
    assert payments_p95.critical and payments_p95.effect_floor == 0.1
    assert policy.checks_for("payments")[0].effect_floor == 0.5  # the repository-wide override still applies
    assert VerificationPolicy.model_validate_json(policy.model_dump_json()) == policy  # as Temporal carries it
    assert [c.unit for c in policy.checks_for("storefront")] == ["errors/s", "s", "req/s", "jobs"]


def test_every_metric_value_is_shown_with_its_unit() -> None:
    assert [shown_unit(c.unit) for c in DEFAULT_METRICS] == ["errors/s", "ms", "req/s"]
    assert shown_unit(None) == "no unit given"
    custom = VerificationPolicy.from_policy({"metrics": [{"name": "queue depth", "query": "avg:q{*}"}]})
    assert "queue depth in no unit given" not in describe_plan(custom, "payments")
    assert "queue depth (no unit given, an increase of the median beyond 20%)" in describe_plan(custom, "payments")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"window": "10x"}, "verification.window: '10x' is not a duration (e.g. 30s, 10m, 1h)"),
        ({"window": "1m"}, "verification.window: must hold at least min_points (5) intervals"),
        ({"window": "2d"}, "verification.window: '2d' is not a duration"),
        ({"interval": "0s"}, "verification.interval: must be a whole number of seconds, at least 1s"),
        ({"windw": "10m"}, "verification.windw: unknown key"),
        ({"alpha": 0.9}, "verification.alpha: Input should be less than or equal to 0.5"),
        ({"failure_limit": -1}, "verification.failure_limit: Input should be greater than or equal to 0"),
        ({"thresholds": {"pass": 50, "marginal": 60}}, "verification.thresholds: marginal must not exceed pass"),
        ({"thresholds": {"pass": 120}}, "verification.thresholds.pass: Input should be less than or equal to 100"),
        ({"thresholds": [95, 50]}, "verification.thresholds: must be a mapping of pass and marginal"),
        ({"kustomization": "apps-production"}, "verification.kustomization: must be namespace/name"),
        ({"env": "prod,team:x"}, "verification.env: not a Datadog tag value"),
        ({"metrics": {"name": "x"}}, "verification.metrics: must be a list of metrics"),
        ({"metrics": [{"query": "avg:x{*}"}]}, "verification.metrics[0]: must be a mapping with a name"),
        ({"metrics": [{"name": "x"}]}, "verification.metrics[0].query: Field required"),
        (
            {"metrics": [{"name": "error rate"}, {"name": "error rate", "direction": "up"}]},
            "verification.metrics[1].direction: Input should be 'increase', 'decrease' or 'either'",
        ),
        ({"metrics": [{"name": "error rate", "effect_floor": -1}]}, "verification.metrics[0].effect_floor: Input"),
        ({"metrics": [{"name": "error rate", "colour": "red"}]}, "verification.metrics[0].colour: Extra inputs"),
        ({"metrics": [{"name": "error rate", "unit": "<b>"}]}, "verification.metrics[0].unit: String should match"),
        ({"services": {"pay ments": {}}}, "verification.services.pay ments: not a service name"),
        ({"services": {"payments": {"window": "5m"}}}, "verification.services.payments: must be a mapping with a"),
        (
            {"services": {"payments": {"metrics": [{"name": "x"}]}}},
            "verification.services.payments.metrics[0].query: Field required",
        ),
        ("10m", "verification: must be a mapping"),
    ],
)
def test_an_invalid_policy_names_the_key(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        VerificationPolicy.from_policy(raw)  # type: ignore[arg-type]
    assert str(e.value).startswith(message)


def test_a_policy_file_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(ValueError, match="fixloop.yaml: not valid YAML"):
        VerificationPolicy.from_policy_text("verification: [unclosed\n")
    with pytest.raises(ValueError, match="verification.window"):
        VerificationPolicy.from_policy_text("verification:\n  window: soon\n")


def test_numbers_are_shown_with_their_units() -> None:
    shown = [
        value(0.4, "errors/s"), value(0.12, "s"), value(1.5, "s"), value(0.00012, "s"), value(0, "s"),
        value(850, "ms"), value(1500, "ms"), value(12345.6, "req/s"), value(1.25, "%"), value(3.0, None),
    ]  # fmt: skip
    assert shown == [
        "0.4 errors/s", "120 ms", "1.5 s", "120 \u00b5s", "0 s", "850 ms", "1.5 s", "12,346 req/s", "1.25 %", "3",
    ]  # fmt: skip
    assert [percent(e) for e in (2.0, -0.75, 0.083, 0.0, None)] == ["+200 %", "-75 %", "+8.3 %", "+0.0 %", "from 0"]


def test_a_metric_line_and_the_headline_of_what_failed() -> None:
    rs = results(1, error_x=3.0, latency_x=1.6)
    errors, latency, hits = rs
    assert (errors.unit, latency.unit, hits.unit) == ("errors/s", "s", "req/s")
    assert change_line(latency).startswith("latency p95 ") and " ms \u2192 " in change_line(latency)
    assert change_line(errors).endswith(f"({percent(errors.effect)})")
    assert headline(rs) == f"error rate {percent(errors.effect)}, latency p95 {percent(latency.effect)}"
    assert headline(rs, 1) == f"error rate {percent(errors.effect)} and 1 more"
    assert headline(rs, 1, more=False) == f"error rate {percent(errors.effect)}"
    assert headline(results(1)) == ""
    new = compare([0.0] * 20, [1.2] * 20, ERROR_RATE, POLICY)  # a rise from nothing
    assert headline([new]) == "error rate from 0 to 1.2 errors/s"
    assert change_line(compare([], [], ERROR_RATE.model_copy(update={"missing_as_zero": False}), POLICY)).startswith(
        "error rate: no data (0 points before"
    )


def test_a_policy_names_a_metric_s_unit_and_refuses_markup_in_it() -> None:
    policy = VerificationPolicy.from_policy({"metrics": [{"name": "latency p95", "unit": "ms"}]})
    assert {c.name: c.unit for c in policy.metrics}["latency p95"] == "ms"
    with pytest.raises(ValueError, match=r"verification\.metrics\[0\]\.unit"):
        VerificationPolicy.from_policy({"metrics": [{"name": "error rate", "unit": "<b>x</b>"}]})
