"""Verification: false fails on unchanged services and detection of an error-rate regression.

Over ``--series`` seeded services (default 1,000) per scenario, builds the default checks' windows as the sandbox
world does (``fixloop.sandbox.world``: the services' daily means, the daily load curve of +-15 % as a slow drift, noise
``1 + cv * z`` with ``z`` standard normal clipped to +-3 and the world's coefficients of variation at 60 s scaled
by ``sqrt(60 / 30)`` for 30-second points: error rate ~14 %, p95 ~8.5 %, request rate ~5.7 %), a 10-minute window
each side of a deploy at a random time of the year, and judges them with ``fixloop.core.verification`` and the default
policy. A verdict counts as a fail only when it is ``fail`` (``marginal`` goes to a human and is reported apart).
Printed besides, outside the goals: x1.2 (at the effect floor), x2, and error counts drawn as Poisson counts per
point (real count metrics of the world's services: 4.5 to 36 errors per 30-second point), unchanged and x1.5.

Each window goes through a provider's code path as the verification activity reads it (``fixloop.activities.verify``):
for Datadog, a ``GET /api/v1/query`` answer (``pointlist`` of bucket starts in epoch ms) parsed by
``fixloop.integrations.datadog.api.parse_series`` and merged; for Prometheus, a ``GET /api/v1/query_range`` answer
(``matrix``: values as strings at each step's evaluation time, the end of its bucket) parsed by
``fixloop.integrations.prometheus.parse_matrix`` and bucketed by ``prometheus_points`` over the range
``prometheus_window`` gives; then ``split_points`` and the judge. The Prometheus defaults judge the error rate as the
share of failed requests (``100 * errors / requests``, so the noise of both), the Datadog ones as errors/s.

Goals (issue 6, through Datadog's path; issue 20: the same through Prometheus's): ``false_fail_rate`` (unchanged
services judged fail) at most 0.01; ``detection_rate_1_5x`` (error rate x1.5 at the deploy judged fail) at least
0.95.
Last line: ``{"false_fail_rate": ..., "detection_rate_1_5x": ..., "prometheus_false_fail_rate": ...,
"prometheus_detection_rate_1_5x": ...}``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from fixloop.activities.verify import datadog_points, prometheus_points, prometheus_window  # noqa: E402
from fixloop.core.verification import (  # noqa: E402
    ERROR_RATE,
    LATENCY_P95,
    REQUEST_RATE,
    MetricStatus,
    Provider,
    VerdictResult,
    VerificationPolicy,
    compare,
    fmt_duration,
    judge,
    split_points,
)
from fixloop.integrations.datadog.api import parse_series  # noqa: E402
from fixloop.integrations.prometheus import parse_matrix  # noqa: E402
from fixloop.sandbox.world import DAILY_AMPLITUDE, NOISE_CV, SERVICES, World  # noqa: E402

YEAR_S = 365 * 86_400
START = 1_704_067_200  # 2024-01-01T00:00:00Z


@dataclass(frozen=True)
class Scenario:
    name: str
    error_x: float = 1.0  # the error rate's multiplier from the deploy on
    poisson: bool = False  # error counts per bucket drawn as Poisson counts instead of the world's noise


def windows(
    rng: np.random.Generator, service: str, deployed: float, policy: VerificationPolicy, scenario: Scenario
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The bucket starts (epoch seconds, both windows: ``policy.points`` before ``deployed``, as many from it) and
    metric -> its values there: ``errors`` (errors/s), ``hits`` (req/s), ``latency`` (s)."""
    base = SERVICES[service]
    step = policy.interval_s
    n = policy.points
    t = np.concatenate([deployed - policy.window.total_seconds() + step * np.arange(n), deployed + step * np.arange(n)])
    load = np.array([World.load(x + step / 2) for x in t])
    after = np.arange(2 * n) >= n
    cv_scale = min(2.0, math.sqrt(60.0 / step))

    def noisy(mean: np.ndarray, metric: str) -> np.ndarray:
        z = np.clip(rng.standard_normal(mean.shape), -3, 3)
        return mean * np.maximum(0.05, 1 + NOISE_CV[metric] * cv_scale * z)

    hits_mean = base.hits * load
    errors_mean = hits_mean * base.error_ratio * np.where(after, scenario.error_x, 1.0)
    if scenario.poisson:
        errors = rng.poisson(errors_mean * step) / step  # as_rate() of a count per bucket
    else:
        errors = noisy(errors_mean, "errors")
    latency = noisy(base.latency_p95_ms / 1000 * (1 + DAILY_AMPLITUDE * (load - 1)), "latency_p95")
    return t, {"errors": errors, "hits": noisy(hits_mean, "hits"), "latency": latency}


def datadog_answer(t: np.ndarray, values: np.ndarray, step: int) -> dict[str, object]:
    """A ``GET /api/v1/query`` answer of one series: bucket starts in epoch ms."""
    points = [[int(x * 1000), float(v)] for x, v in zip(t, values, strict=True)]
    return {"status": "ok", "series": [{"metric": "m", "scope": "*", "interval": step, "pointlist": points}]}


def prometheus_answer(t: np.ndarray, values: np.ndarray, step: int) -> dict[str, object]:
    """A ``GET /api/v1/query_range`` answer of one series: each value at its evaluation time (the end of its
    bucket), as the string Prometheus writes."""
    points = [[float(x + step), repr(float(v))] for x, v in zip(t, values, strict=True)]
    return {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": points}]}}


def read(provider: Provider, t: np.ndarray, values: np.ndarray, deployed: float, policy: VerificationPolicy):  # noqa: ANN201
    """(baseline, after) of one metric through ``provider``'s answer, parser and bucketing."""
    step = policy.interval_s
    at = datetime.fromtimestamp(deployed, UTC)
    if provider is Provider.PROMETHEUS:
        start, end = prometheus_window(at, policy.window.total_seconds(), step)
        assert abs(start - (t[0] + step)) < 1e-6 and abs(end - (t[-1] + step)) < 1e-6  # the range the activity asks
        points = prometheus_points(parse_matrix(prometheus_answer(t, values, step)), step)
    else:
        points = datadog_points(parse_series(datadog_answer(t, values, step)))
    return split_points(points, at, policy.window, step)


def run(
    scenario: Scenario, count: int, seed: int, policy: VerificationPolicy
) -> dict[Provider, tuple[Counter[str], Counter[str]]]:
    """Per provider, (verdicts, failed metrics) over ``count`` seeded services (the same draws for both)."""
    rng = np.random.default_rng([seed, int(scenario.error_x * 1000), scenario.poisson])
    services = list(SERVICES)
    out: dict[Provider, tuple[Counter[str], Counter[str]]] = {p: (Counter(), Counter()) for p in Provider}
    policies = {p: VerificationPolicy(provider=p) for p in Provider}
    for i in range(count):
        service = services[i % len(services)]
        deployed = START + float(rng.integers(0, YEAR_S))
        t, data = windows(rng, service, deployed, policy, scenario)
        values = {
            Provider.DATADOG: {
                ERROR_RATE.name: data["errors"],
                LATENCY_P95.name: data["latency"],
                REQUEST_RATE.name: data["hits"],
            },
            Provider.PROMETHEUS: {
                ERROR_RATE.name: 100 * data["errors"] / data["hits"],
                LATENCY_P95.name: data["latency"],
                REQUEST_RATE.name: data["hits"],
            },
        }
        for provider, (verdicts, failed) in out.items():
            checks = policies[provider].checks_for(None)
            results = [
                compare(*read(provider, t, values[provider][c.name], deployed, policy), c, policy) for c in checks
            ]
            verdict, _, _ = judge(results, policy, subject=service)
            verdicts[verdict.value] += 1
            failed.update(r.name for r in results if r.status is MetricStatus.FAIL)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=1_000, help="services per scenario (default 1000)")
    ap.add_argument("--seed", type=int, default=20_261_121)
    args = ap.parse_args()
    policy = VerificationPolicy()  # 10-minute windows of 30-second points, alpha 0.01, 20 % effect floor
    n = args.series

    def rate(c: Counter[str], key: str = VerdictResult.FAIL.value) -> float:
        return c[key] / n

    print(
        f"policy: window {fmt_duration(policy.window)}, {policy.interval_s} s points ({policy.points} per side), alpha "
        f"{policy.alpha}, thresholds pass {policy.pass_score:g} / marginal {policy.marginal_score:g}, failure limit "
        f"{policy.failure_limit}; {n} services per scenario, seed {args.seed}"
    )
    t0 = time.perf_counter()
    figures: dict[str, dict[Provider, tuple[Counter[str], Counter[str]]]] = {}
    scenarios = (
        Scenario("unchanged"),
        Scenario("error rate x1.5", 1.5),
        Scenario("error rate x1.2 (at the 20 % effect floor)", 1.2),
        Scenario("error rate x2", 2.0),
        Scenario("unchanged, Poisson error counts", 1.0, poisson=True),
        Scenario("error rate x1.5, Poisson error counts", 1.5, poisson=True),
    )

    def show(c: Counter[str]) -> str:
        return ", ".join(f"{k} {v / n:.4f}" for k, v in sorted(c.items()))

    for sc in scenarios:
        figures[sc.name] = run(sc, n, args.seed, policy)
        for provider, (verdicts, failed) in figures[sc.name].items():
            name = f"{sc.name} ({provider.value})"
            print(f"{name:70s} verdicts: {show(verdicts)}; failed metrics: {show(failed) or 'none'}")
    elapsed = time.perf_counter() - t0
    out: dict[str, float] = {}
    for provider in Provider:
        prefix = "" if provider is Provider.DATADOG else f"{provider.value}_"
        false_fail = out[f"{prefix}false_fail_rate"] = rate(figures["unchanged"][provider][0])
        detection = out[f"{prefix}detection_rate_1_5x"] = rate(figures["error rate x1.5"][provider][0])
        print(f"{provider.value}: false-fail rate (unchanged, goal <= 0.01): {false_fail:.4f}")
        print(f"{provider.value}: detection rate of error rate x1.5 (goal >= 0.95): {detection:.4f}")
    print(f"{len(scenarios) * n * len(Provider)} verdicts in {elapsed:.1f} s")
    report(out)


if __name__ == "__main__":
    main()
