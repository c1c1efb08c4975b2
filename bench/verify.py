"""Verification: false fails on unchanged services and detection of an error-rate regression.

Over ``--series`` seeded services (default 1,000) per scenario, builds the default checks' windows as the sandbox
world does (``fixloop.sandbox.world``: the services' daily means, the daily load curve of +-15 % as a slow drift, noise
``1 + cv * z`` with ``z`` standard normal clipped to +-3 and the world's coefficients of variation at 60 s scaled
by ``sqrt(60 / 30)`` for 30-second points: error rate ~14 %, p95 ~8.5 %, request rate ~5.7 %), a 10-minute window
each side of a deploy at a random time of the year, and judges them with ``fixloop.core.verification`` and the default
policy. A verdict counts as a fail only when it is ``fail`` (``marginal`` goes to a human and is reported apart).
Printed besides, outside the goals: x1.2 (at the effect floor), x2, and error counts drawn as Poisson counts per
point (real count metrics of the world's services: 4.5 to 36 errors per 30-second point), unchanged and x1.5.

Goals (issue 6): ``false_fail_rate`` (unchanged services judged fail) at most 0.01; ``detection_rate_1_5x`` (error
rate x1.5 at the deploy judged fail) at least 0.95.
Last line: ``{"false_fail_rate": ..., "detection_rate_1_5x": ...}``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from fixloop.core.verification import (  # noqa: E402
    ERROR_RATE,
    LATENCY_P95,
    REQUEST_RATE,
    MetricStatus,
    VerdictResult,
    VerificationPolicy,
    compare,
    fmt_duration,
    judge,
)
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
) -> dict[str, tuple[list[float], list[float]]]:
    """metric -> (baseline values, after values) at ``policy.interval`` points around ``deployed``."""
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
    values = {
        ERROR_RATE.name: errors,
        LATENCY_P95.name: noisy(base.latency_p95_ms / 1000 * (1 + DAILY_AMPLITUDE * (load - 1)), "latency_p95"),
        REQUEST_RATE.name: noisy(hits_mean, "hits"),
    }
    return {k: (list(v[:n]), list(v[n:])) for k, v in values.items()}


def run(scenario: Scenario, count: int, seed: int, policy: VerificationPolicy) -> tuple[Counter[str], Counter[str]]:
    """(verdicts, failed metrics) over ``count`` seeded services."""
    rng = np.random.default_rng([seed, int(scenario.error_x * 1000), scenario.poisson])
    services = list(SERVICES)
    checks = policy.checks_for(None)
    verdicts: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for i in range(count):
        service = services[i % len(services)]
        deployed = START + float(rng.integers(0, YEAR_S))
        data = windows(rng, service, deployed, policy, scenario)
        results = [compare(*data[c.name], c, policy) for c in checks]
        verdict, _, _ = judge(results, policy, subject=service)
        verdicts[verdict.value] += 1
        failed.update(r.name for r in results if r.status is MetricStatus.FAIL)
    return verdicts, failed


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
    figures: dict[str, tuple[Counter[str], Counter[str]]] = {}
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
        verdicts, failed = figures[sc.name] = run(sc, n, args.seed, policy)
        print(f"{sc.name:58s} verdicts: {show(verdicts)}; failed metrics: {show(failed) or 'none'}")
    elapsed = time.perf_counter() - t0
    false_fail = rate(figures["unchanged"][0])
    detection = rate(figures["error rate x1.5"][0])
    print(f"false-fail rate (unchanged, goal <= 0.01): {false_fail:.4f}")
    print(f"detection rate of error rate x1.5 (goal >= 0.95): {detection:.4f}")
    print(f"{len(scenarios) * n} verdicts in {elapsed:.1f} s")
    report({"false_fail_rate": false_fail, "detection_rate_1_5x": detection})


if __name__ == "__main__":
    main()
