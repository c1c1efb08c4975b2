"""The world model behind the Datadog stand-in: deterministic, persistent, reacting to deploys."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fixloop.sandbox.app import Sandbox
from fixloop.sandbox.config import SandboxConfig
from fixloop.sandbox.world import CALLS, MONITORS, NOISE_CV, SERVICES, World, watches

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
BUSTER = "FROM debian:10.8\nRUN apt-get update\n"
BOOKWORM = "FROM debian:12.8-slim\nRUN apt-get update\n"


def open_sb(state_dir: Path, seed: int = 7) -> Sandbox:
    sb = Sandbox.open(SandboxConfig(state_dir=state_dir, world_seed=seed))
    sb.clock = lambda: NOW
    return sb


def test_series_are_deterministic_and_survive_a_restart(tmp_path: Path) -> None:
    sb = open_sb(tmp_path)
    sb.world.record_deploy(NOW - timedelta(hours=3), "abc", {"payments": {"app": "python:3.12-slim"}})
    first = sb.world.series("payments", "errors", NOW - timedelta(hours=6), NOW, 60)
    assert first == sb.world.series("payments", "errors", NOW - timedelta(hours=6), NOW, 60)

    again = open_sb(tmp_path)  # a restart: same state_dir, fresh objects
    assert again.world.deploys()[0]["revision"] == "abc"
    assert again.world.series("payments", "errors", NOW - timedelta(hours=6), NOW, 60) == first
    other_seed = open_sb(tmp_path, seed=8)
    assert other_seed.world.series("payments", "errors", NOW - timedelta(hours=6), NOW, 60) != first


def test_buckets_are_aligned_and_end_at_the_clock(tmp_path: Path) -> None:
    world = open_sb(tmp_path).world
    pts = world.series("catalog", "hits", NOW - timedelta(seconds=3601), NOW + timedelta(hours=1), 300)
    times = [t for t, _ in pts]
    assert times[0] == (NOW - timedelta(hours=1)).timestamp() * 1000
    assert times[-1] == NOW.timestamp() * 1000  # nothing from the future
    assert all(b - a == 300_000 for a, b in zip(times, times[1:], strict=False))
    assert world.series("no-such-service", "hits", NOW - timedelta(hours=1), NOW, 60) == []
    assert world.series("catalog", "no-such-metric", NOW - timedelta(hours=1), NOW, 60) == []


def test_noise_level_matches_the_documented_cv_and_values_are_plausible(tmp_path: Path) -> None:
    world = open_sb(tmp_path).world
    for svc, base in SERVICES.items():
        for metric in ("hits", "errors", "latency_p95"):
            pts = world.series(svc, metric, NOW - timedelta(hours=12), NOW, 60)
            ratios = [v / world.expected(svc, metric, t / 1000, 60) for t, v in pts]
            cv = statistics.pstdev(ratios)
            assert 0.7 * NOISE_CV[metric] < cv < 1.3 * NOISE_CV[metric], (svc, metric, cv)
            assert abs(statistics.fmean(ratios) - 1) < 0.02
        hits = [v for _, v in world.series(svc, "hits", NOW - timedelta(days=1), NOW, 300)]
        assert 0.75 * base.hits < min(hits) and max(hits) < 1.25 * base.hits
    # coarser buckets are smoother
    coarse = world.series("storefront", "hits", NOW - timedelta(days=2), NOW, 3600)
    ratios = [v / world.expected("storefront", "hits", t / 1000, 3600) for t, v in coarse]
    assert statistics.pstdev(ratios) < NOISE_CV["hits"] / 3


def test_a_breaking_deploy_raises_errors_and_latency_from_its_time_on(tmp_path: Path) -> None:
    world = open_sb(tmp_path).world
    deploy_at = NOW - timedelta(minutes=60)
    files = {"services/payments/requirements.txt": "requests==2.32.3\nurllib3==1.26.18\n"}
    world.record_deploy(NOW - timedelta(days=1), "r1", {"payments": {"app": "registry/payments:1.9.1"}}, files)
    bad = {"services/payments/requirements.txt": "requests==2.32.3\nurllib3==2.2.2\n", "README.md": "ignored"}
    world.record_deploy(deploy_at, "r2", {"payments": {"app": "registry/payments:1.9.2"}}, bad)
    assert "README.md" not in world.deploys()[-1]["files"]

    def mean(metric: str, a: datetime, b: datetime) -> float:
        return statistics.fmean(v for _, v in world.series("payments", metric, a, b, 60))

    before = mean("errors", deploy_at - timedelta(minutes=50), deploy_at - timedelta(minutes=1))
    after = mean("errors", deploy_at + timedelta(minutes=1), NOW)
    assert 2.5 < after / before < 3.5
    lat_ratio = mean("latency_p95", deploy_at + timedelta(minutes=1), NOW) / mean(
        "latency_p95", deploy_at - timedelta(minutes=50), deploy_at - timedelta(minutes=1)
    )
    assert 1.45 < lat_ratio < 1.75
    # a bucket the deploy falls into is time-weighted: half of it broken -> x2
    half = world.expected("payments", "errors", deploy_at - timedelta(minutes=5), 600)
    clean = world.expected("payments", "errors", deploy_at - timedelta(minutes=20), 600)
    assert 1.9 < half / clean < 2.1
    errors_monitor = next(m for m in MONITORS if m.service == "payments" and m.kind == "errors")
    assert world.monitor_state(errors_monitor) == "Alert"
    assert world.monitor_state(errors_monitor, at=deploy_at - timedelta(minutes=1)) == "OK"


def test_seeded_buster_alert_clears_when_a_bookworm_image_is_deployed(tmp_path: Path) -> None:
    sb = open_sb(tmp_path)
    world = sb.world
    mon = next(m for m in MONITORS if m.service == "legacy-api" and m.kind == "errors")
    assert world.monitor_state(mon) == "OK"  # no deploy recorded yet: baseline
    workloads = {"legacy-api": {"legacy-api": "registry.sandbox.local/shop/legacy-api:2.0.7"}}
    world.record_deploy(NOW - timedelta(hours=2), "seed", workloads, {"services/legacy-api/Dockerfile": BUSTER})
    assert world.monitor_state(mon) == "Alert"
    assert world.monitor_state(mon, at=NOW - timedelta(days=3)) == "Alert"  # the first state ran all along
    world.record_deploy(NOW - timedelta(minutes=30), "fix", workloads, {"services/legacy-api/Dockerfile": BOOKWORM})
    assert world.monitor_state(mon) == "OK"
    assert world.monitor_state(mon, at=NOW - timedelta(minutes=40)) == "Alert"
    # re-recording the same revision is a no-op
    world.record_deploy(NOW, "fix", workloads, {"services/legacy-api/Dockerfile": BOOKWORM})
    assert [d["revision"] for d in World(sb).deploys()] == ["seed", "fix"]


def test_every_monitor_is_ok_on_the_baseline_and_unknown_services_are_accepted(tmp_path: Path) -> None:
    world = open_sb(tmp_path).world
    world.record_deploy(NOW - timedelta(days=2), "x", {"unknown-svc": {"c": "busybox:1.36"}})
    for hours in range(0, 48, 3):
        at = NOW - timedelta(hours=hours)
        assert {world.monitor_state(m, at) for m in MONITORS} == {"OK"}, at
    assert watches("services/legacy-api/Dockerfile") and watches("services/payments/requirements-dev.txt")
    assert not watches("apps/base/payments/deployment.yaml")


SEED = Path(__file__).resolve().parents[2] / "sandbox" / "gitops_seed"
INVENTORY = "apps/base/inventory/deployment.yaml"


def test_the_world_calls_the_services_the_seeded_topology_names() -> None:
    from fixloop.core.topology import from_policy_text

    seeded = from_policy_text((SEED / "fixloop.yaml").read_text())
    assert {s: sorted(seeded.callees(s)) for s in SERVICES if seeded.callees(s)} == {
        s: sorted(c) for s, c in CALLS.items()
    }


def test_a_tiny_inventory_pool_breaks_inventory_and_spreads_to_its_callers_later_and_smaller(tmp_path: Path) -> None:
    """The person's change of the demo's incident: DB_POOL_SIZE 20 -> 2 in the seeded inventory Deployment. Inventory
    x8 errors / x4 p95 from the deploy on; catalog (calls inventory) half the excess 2 s later, storefront (calls
    catalog) half of that 4 s later; payments and legacy-api untouched; only inventory's file is watched."""
    sb = Sandbox.open(SandboxConfig(state_dir=tmp_path, monitor_window=20))
    sb.clock = lambda: NOW
    world = sb.world
    seeded = (SEED / INVENTORY).read_text()
    assert '- name: DB_POOL_SIZE\n              value: "20"\n' in seeded
    tiny = seeded.replace('value: "20"', 'value: "2"')
    assert watches(INVENTORY) and not watches("apps/base/catalog/deployment.yaml")
    images = {s: {s: f"registry.sandbox.local/shop/{s}:1"} for s in SERVICES}
    at = NOW - timedelta(seconds=60)
    world.record_deploy(NOW - timedelta(hours=1), "seed", images, {INVENTORY: seeded})
    world.record_deploy(NOW - timedelta(minutes=30), "five", images, {INVENTORY: seeded.replace('"20"', '"5"')})
    world.record_deploy(at, "tiny", images, {INVENTORY: tiny})
    t0 = at.timestamp()

    def x(service: str, metric: str, t: float) -> float:
        return world.expected(service, metric, t, 1) / world.expected(service, metric, t - 86400, 1)  # same load

    expect = {  # service -> (seconds after the deploy it starts, errors x, p95 x)
        "inventory": (0, 8.0, 4.0),
        "catalog": (2, 4.5, 2.5),
        "storefront": (4, 2.75, 1.75),
        "payments": (0, 1.0, 1.0),
        "legacy-api": (0, 1.0, 1.0),
    }
    for svc, (lag, ex, lx) in expect.items():
        before = t0 + lag - 1
        assert abs(x(svc, "errors", before) - 1) < 0.01 and abs(x(svc, "latency_p95", before) - 1) < 0.01, svc
        assert abs(x(svc, "errors", t0 + lag) / ex - 1) < 0.01, svc
        assert abs(x(svc, "latency_p95", t0 + lag) / lx - 1) < 0.01, svc
    alerting = {(m.service, m.kind) for m in MONITORS if world.monitor_state(m) == "Alert"}
    assert alerting == {(s, k) for s in ("inventory", "catalog", "storefront") for k in ("errors", "latency")}
    assert {world.monitor_state(m, at - timedelta(seconds=1)) for m in MONITORS} == {"OK"}
