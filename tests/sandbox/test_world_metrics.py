"""The world's Prometheus scrape endpoints (``fixloop.sandbox.prometheus``) with the sandbox clock controlled: the
exposition parses, counters only grow, their increase is the world's requests and errors, and the histogram's 95th
percentile (computed as ``histogram_quantile`` does) is the world's p95."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fixloop.sandbox.prometheus import ALERT, BUCKETS, alert_rules, error_ratio_threshold, scrape_targets
from fixloop.sandbox.world import SERVICES
from tests.sandbox.conftest import Running, start_sandbox  # noqa: F401  (the fixture)

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def scrape(sandbox: Running, env: str, svc: str) -> dict[str, list]:
    answer = httpx.get(f"{sandbox.url}/world/{env}/{svc}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(answer.text)}


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """``histogram_quantile``'s linear interpolation within the bucket holding rank ``q * count``."""
    total = buckets[-1][1]
    rank, prev_le, prev_n = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    raise AssertionError("no bucket holds the rank")


def test_counters_and_histogram_follow_the_world(start_sandbox: Callable[..., Running]) -> None:  # noqa: F811
    now = [T0]
    sandbox = start_sandbox("/world", clock=lambda: now[0])
    world = sandbox.sb.world
    assert all(s.value == 0 for s in scrape(sandbox, "production", "catalog")["http_requests"])  # a fresh process
    previous = {"200": 0.0, "500": 0.0}
    for minute in range(1, 4):
        now[0] = T0 + timedelta(minutes=minute)
        samples = scrape(sandbox, "production", "catalog")
        counts = {s.labels["code"]: s.value for s in samples["http_requests"]}
        assert all(counts[c] >= previous[c] for c in counts)  # counters never go down
        start = (now[0] - timedelta(minutes=1)).timestamp()
        hits = sum(v for _, v in world.series("catalog", "hits", start, now[0].timestamp() - 1, 1) if v)
        errors = sum(v for _, v in world.series("catalog", "errors", start, now[0].timestamp() - 1, 1) if v)
        assert abs((counts["200"] + counts["500"] - sum(previous.values())) / hits - 1) < 1e-6
        assert abs((counts["500"] - previous["500"]) / errors - 1) < 1e-6
        previous = counts
    hist = samples["http_request_duration_seconds"]
    buckets = [(float(s.labels["le"]), s.value) for s in hist if s.name.endswith("_bucket")]
    assert len(buckets) == len(BUCKETS) + 1 and buckets[-1][0] == float("inf")
    assert buckets[-1][1] == next(s.value for s in hist if s.name.endswith("_count")) == sum(previous.values())
    p95 = world.expected("catalog", "latency_p95", T0.timestamp(), 180) / 1000
    assert abs(quantile(0.95, buckets[:-1]) / p95 - 1) < 0.05


def test_unknown_services_are_404(start_sandbox: Callable[..., Running]) -> None:  # noqa: F811
    sandbox = start_sandbox("/world", clock=lambda: T0)
    assert httpx.get(f"{sandbox.url}/world/production/ghost/metrics").status_code == 404
    assert scrape(sandbox, "qa", "catalog") == {}  # an environment the world has no deploy in: no samples


_SEGMENT = st.text(min_size=1, max_size=30).filter(lambda x: x not in (".", ".."))  # a path segment, not a dot one


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(env=_SEGMENT, svc=_SEGMENT | st.sampled_from(sorted(SERVICES)))
def test_any_path_is_answered_without_a_crash(
    start_sandbox: Callable[..., Running],  # noqa: F811
    env: str,
    svc: str,
) -> None:
    sandbox = _shared(start_sandbox)
    answer = httpx.get(f"{sandbox.url}/world/{quote(env, safe='')}/{quote(svc, safe='')}/metrics")
    assert answer.status_code in (200, 404)
    assert answer.status_code == 404 or svc in SERVICES  # an unknown service is never served
    if env.isalnum() and svc in SERVICES:
        assert answer.status_code == 200


_RUNNING: dict[int, Running] = {}


def _shared(start: Callable[..., Running]) -> Running:
    return _RUNNING.setdefault(id(start), start("/world", clock=lambda: T0))


def test_rules_and_targets_cover_every_service() -> None:
    targets = scrape_targets("http://127.0.0.1:8900")
    assert len(targets) == 2 * len(SERVICES)
    paths = {t["labels"]["__metrics_path__"] for t in targets}
    assert "/world/staging/payments/metrics" in paths and {t["targets"][0] for t in targets} == {"127.0.0.1:8900"}
    rules = alert_rules(20)
    assert rules.count(f'"alert": "{ALERT}"') == len(SERVICES) and "[20s]" in rules
    # catalog's seeded error ratio (0.5 % x 2.5) is above its threshold, its healthy one below
    assert SERVICES["catalog"].error_ratio < error_ratio_threshold("catalog") < 2.5 * SERVICES["catalog"].error_ratio
