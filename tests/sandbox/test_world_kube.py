"""The world's reaction to remediations, through the Flux stand-in applying commits of the seeded repository and
the Datadog stand-in serving what a product reads: a revert of the person's culprit heals inventory and its callers;
a cache raised past the memory limit OOMKills catalog's containers until a memory MR raises the limit above the
observed peak (sandbox/containers.py, sandbox/world.py "Pods")."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.metrics_api import MetricsApi
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from fixloop.sandbox import containers as kube
from fixloop.sandbox.app import Sandbox
from fixloop.sandbox.registry import registry_store
from fixloop.sandbox.repos import Action, Person
from fixloop.sandbox.seed import GITOPS_PROJECT, seed_gitops
from fixloop.sandbox.world import MONITORS, SERVICES
from tests.sandbox.conftest import Clock, Running, with_env
from tests.sandbox.fidelity import assert_same_shape, recorded

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
DANA = Person(name="Dana", email="dana@example.com")
INVENTORY = "apps/base/inventory/deployment.yaml"
CATALOG = "apps/base/catalog/deployment.yaml"
SEED = Path(__file__).resolve().parents[2] / "sandbox" / "gitops_seed"
MIB = 1024 * 1024
PEAK_QUERY = "max:kubernetes.memory.usage{kube_deployment:catalog,kube_container_name:catalog}.rollup(max, 60)"
PROD = "env:production"  # the kubelet series of production only (staging runs the same apps/base changes)


def monitor(service: str, kind: str) -> int:
    return next(m.id for m in MONITORS if m.service == service and m.kind == kind)


@pytest.fixture
def shop(start_sandbox: Callable[..., Running]) -> tuple[Running, Clock]:
    """The Flux and Datadog stand-ins over the seeded repository, applied at T0."""
    clock = Clock(T0)
    run = start_sandbox("/kube", "/datadog", clock=clock)
    seed_gitops(run.sb.repos, clock())
    reconcile(run)
    return run, clock


def reconcile(run: Running) -> None:
    headers = {"Authorization": f"Bearer {run.sb.credentials.kube_token.get_secret_value()}"}
    httpx.post(f"{run.url}/kube/sandbox/reconcile", headers=headers, timeout=10).raise_for_status()


def push(sb: Sandbox, path: str, text: str, message: str) -> str:
    """A commit on main of the seeded repository, published as GitLab publishes a push (Flux applies it)."""
    before = sb.repos.branches(GITOPS_PROJECT)["main"]
    action = Action(action="update", file_path=path, content=text)
    sha = sb.repos.commit(GITOPS_PROJECT, "main", [action], message, DANA, sb.clock()).id
    sb.bus.publish("git.push", {"project": GITOPS_PROJECT, "branch": "main", "before": before, "after": sha})
    return sha


def head_text(sb: Sandbox, path: str) -> str:
    raw = sb.repos.read(GITOPS_PROJECT, "main", path)
    assert raw is not None
    return raw.decode()


def dd_get(run: Running, path: str, **params: Any) -> Any:
    creds = run.sb.credentials
    headers = {
        "DD-API-KEY": creds.datadog_api_key.get_secret_value(),
        "DD-APPLICATION-KEY": creds.datadog_app_key.get_secret_value(),
    }
    resp = httpx.get(f"{run.url}/datadog{path}", headers=headers, params=params, timeout=10)
    resp.raise_for_status()
    return resp.json()


def state(run: Running, service: str, kind: str) -> str:
    return dd_get(run, f"/api/v1/monitor/{monitor(service, kind)}")["overall_state"]


def query(run: Running, q: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return dd_get(run, "/api/v1/query", query=q, **{"from": int(start.timestamp()), "to": int(end.timestamp())})[
        "series"
    ]


# -- revert of the person's culprit ---------------------------------------------------------------------------------
def test_reverting_the_culprit_commit_heals_inventory_and_its_callers(shop: tuple[Running, Clock]) -> None:
    run, clock = shop
    sb = run.sb
    clock.now = T0 + timedelta(minutes=10)
    seeded = head_text(sb, INVENTORY)
    culprit = push(sb, INVENTORY, seeded.replace('value: "20"', 'value: "2"'), "inventory: smaller DB pool")
    broken_at = clock.now
    clock.now = T0 + timedelta(minutes=20)
    affected = [(s, k) for s in ("inventory", "catalog", "storefront") for k in ("errors", "latency")]
    affected.remove(("catalog", "errors"))  # alerting all along: the seeded alpine 3.9.4 (sandbox/world.py)
    assert {m: state(run, *m) for m in affected} == {m: "Alert" for m in affected}

    reverted = sb.repos.revert(GITOPS_PROJECT, culprit, "main", DANA, clock())
    sb.bus.publish("git.push", {"project": GITOPS_PROJECT, "branch": "main", "before": culprit, "after": reverted.id})
    fixed_at = clock.now
    assert head_text(sb, INVENTORY) == seeded  # DB_POOL_SIZE "20" again, by a new commit
    assert sb.world.deploys()[-1]["revision"] == f"main@sha1:{reverted.id}"
    clock.now = T0 + timedelta(minutes=30)
    assert {m: state(run, *m) for m in affected} == {m: "OK" for m in affected}
    assert state(run, "catalog", "errors") == "Alert"

    # the error rate is back to its level before the culprit (within the noise), x8 while it ran
    q = "sum:trace.http.request.errors{service:inventory}.as_rate()"
    (series,) = query(run, q, T0, clock.now)
    points = [(t / 1000, v) for t, v in series["pointlist"]]

    def mean(a: datetime, b: datetime) -> float:
        return statistics.fmean(v for t, v in points if a.timestamp() <= t and t + series["interval"] <= b.timestamp())

    before, during, after = (
        mean(T0, broken_at),
        mean(broken_at, fixed_at),
        mean(fixed_at + timedelta(seconds=20), clock.now),
    )
    assert 6.5 < during / before < 9.5 and 0.85 < after / before < 1.15
    world = sb.world
    for svc in SERVICES:  # noise-free: exactly the baseline at the same load a day earlier
        t = (fixed_at + timedelta(seconds=10)).timestamp()
        assert world.expected(svc, "errors", t, 1) == pytest.approx(world.expected(svc, "errors", t - 86400, 1))


# -- OOMKilled and the memory MR ------------------------------------------------------------------------------------
def test_a_cache_past_the_limit_oomkills_catalog_until_a_memory_mr_raises_the_limit(
    shop: tuple[Running, Clock],
) -> None:
    run, clock = shop
    sb = run.sb
    seeded = head_text(sb, CATALOG)
    assert (
        '- name: CACHE_SIZE_MB\n              value: "64"' in seeded
        and "limits:\n              cpu: 500m\n              memory: 256Mi" in seeded
    )
    clock.now = T0 + timedelta(minutes=10)
    push(sb, CATALOG, seeded.replace('value: "64"', 'value: "160"'), "catalog: cache more products")
    broken_at = clock.now.timestamp()
    clock.now = T0 + timedelta(minutes=20)
    assert state(run, "catalog", "oom") == "Alert"
    assert state(run, "catalog", "errors") == "Alert" and state(run, "catalog", "latency") == "Alert"
    others = [m for m in MONITORS if m.service != "catalog" and m.service != "legacy-api"]
    assert {state(run, m.service, m.kind) for m in others} == {"OK"}  # no spreading

    # the numbers: demand 140 + 160 = 300 MiB > 256 MiB; fill 14.5 s, stall 15 s, down 15 s: a 44.5 s cycle
    pods = [c for c in sb.world.pods("catalog") if c.end == math.inf]
    assert len(pods) == 2 and all(c.start == broken_at and c.demand_mib == 300 for c in pods)
    assert pods[0].period == pytest.approx(44.5)
    c0 = pods[0]
    assert c0.state(broken_at + 14.5 + 1) == ("running", 256 * MIB, 0, False)  # stalled at the limit
    assert c0.state(broken_at + 30) == ("terminated", 0.0, 0, True)  # OOMKilled at 29.5 s
    assert c0.state(broken_at + 36) == ("waiting", 0.0, 0, True)  # CrashLoopBackOff from 34.5 s
    assert c0.state(broken_at + 44.5 + 1)[2:] == (1, True)  # restarted
    t = clock.now.timestamp()
    expect_restarts = sum(math.floor((t - broken_at + c.index * 44.5 / 2) / 44.5) for c in pods)
    q = f"sum:kubernetes.containers.restarts{{kube_deployment:catalog,{PROD}}}"
    (restarts,) = query(run, q, clock.now, clock.now)
    assert restarts["pointlist"][-1][1] == expect_restarts == 26  # 600 s: 13 + 13 cycles
    (both,) = query(run, "sum:kubernetes.containers.restarts{kube_deployment:catalog}", clock.now, clock.now)
    assert both["pointlist"][-1][1] == 2 * 26  # no env term: staging's (the same base change) added
    # errors x (1 + 12 x 15/44.5), p95 x (1 + 2 x 15/44.5) over whole cycles (44.5 s x 4 = 178 s)
    w = sb.world
    # (and more: while a pod is down the other serves all requests, 90 % of its CPU limit, and is throttled)
    errors_x, p95_x = w._oom_multipliers("catalog", t - 178, t)
    assert errors_x == pytest.approx(1 + 12 * 15 / 44.5, rel=0.03) and p95_x > 1 + 2 * 15 / 44.5

    # what the product reads: the peak and the limit through the metrics API (datadog-api-client, /api/v1/query)
    creds = sb.credentials
    cfg = Configuration(
        host=f"{run.url}/datadog",
        api_key={
            "apiKeyAuth": creds.datadog_api_key.get_secret_value(),
            "appKeyAuth": creds.datadog_app_key.get_secret_value(),
        },
    )
    lookback = (clock.now - timedelta(hours=1), clock.now)
    with ApiClient(cfg) as api:
        peak = MetricsApi(api).query_metrics(
            _from=int(lookback[0].timestamp()), to=int(lookback[1].timestamp()), query=PEAK_QUERY
        )
    (series,) = peak.series
    assert series.scope == "kube_deployment:catalog,kube_container_name:catalog" and series.unit[0].name == "byte"
    values = [p.value[1] for p in series.pointlist]
    assert max(values) == 256 * MIB  # the limit the containers were killed at
    assert min(values) == pytest.approx(204 * MIB, rel=0.05)  # before the change: 140 + 64 MiB, steady
    (limit,) = query(run, "max:kubernetes.memory.limits{kube_deployment:catalog}", *lookback)
    assert {v for _, v in limit["pointlist"]} == {256 * MIB}
    by_pod = query(run, f"max:kubernetes.containers.last_state.terminated{{service:catalog,{PROD}}} by {{pod_name}}",
                   *lookback)  # fmt: skip
    assert sorted(s["tag_set"][0] for s in by_pod) == sorted(f"pod_name:{c.pod}" for c in sb.world.pods("catalog"))
    terminated = f"sum:kubernetes.containers.state.terminated{{reason:oomkilled,service:catalog,{PROD}}}"
    (avg,) = query(run, terminated, *lookback)
    (most,) = query(run, terminated + ".rollup(max)", *lookback)
    assert avg["interval"] == most["interval"] == 20
    assert max(v for _, v in avg["pointlist"]) == 0.25 and max(v for _, v in most["pointlist"]) == 1  # 5 s of 20

    # the memory MR: limit = peak x 1.3 = 332.8 MiB -> 333Mi, above the 300 MiB the containers ask for
    clock.now = T0 + timedelta(minutes=21)
    new_limit = math.ceil(max(values) * 1.3 / MIB)
    assert new_limit == 333
    text = head_text(sb, CATALOG).replace(
        "cpu: 500m\n              memory: 256Mi", f"cpu: 500m\n              memory: {new_limit}Mi"
    )
    push(sb, CATALOG, text, "catalog: memory limit 333Mi")
    fixed_at = clock.now.timestamp()
    new = [c for c in sb.world.pods("catalog") if c.end == math.inf]
    assert len(new) == 2 and not any(c.ooms for c in new) and {c.pod for c in new}.isdisjoint(c.pod for c in pods)
    assert new[0].state(fixed_at + 10) == ("running", (140 + 80) * MIB, 0, False)  # filling at 8 MiB/s
    assert new[0].state(fixed_at + 60) == ("running", 300 * MIB, 0, False)  # warm, below the limit
    clock.now = T0 + timedelta(minutes=27)  # 5 min window past the fix
    assert state(run, "catalog", "oom") == "OK"
    assert state(run, "catalog", "latency") == "OK"
    (restarts,) = query(run, "sum:kubernetes.containers.restarts{kube_deployment:catalog}", clock.now, clock.now)
    assert restarts["pointlist"][-1][1] == 0
    ready = sb.config.rollout_ready_s  # the old pods serve until the new ones are Ready
    assert w._oom_multipliers("catalog", fixed_at + ready + 1, clock.now.timestamp()) == (1.0, 1.0)


def test_the_oom_rule_holds_for_any_workload_and_replicas_change_the_pods(tmp_path: Path) -> None:
    from fixloop.sandbox.config import SandboxConfig

    sb = Sandbox.open(SandboxConfig(state_dir=tmp_path, monitor_window=20))
    now = T0 + timedelta(hours=1)
    sb.clock = lambda: now
    spec = kube.spec_of(YAML(typ="safe").load(with_env((SEED / "apps/base/payments/deployment.yaml").read_text(),
                                                      {"CACHE_SIZE_MB": '"200"'})))  # fmt: skip
    assert spec["containers"]["payments"]["env"]["CACHE_SIZE_MB"] == "200"
    at = now - timedelta(minutes=2)
    sb.world.record_deploy(T0, "seed", {}, {}, {"payments": kube.default_spec("payments")})
    sb.world.record_deploy(at, "cache", {}, {}, {"payments": spec})
    assert sb.world.monitor_state(sb.world.monitor(monitor("payments", "oom"))) == "Alert"
    assert sb.world.monitor_state(sb.world.monitor(monitor("payments", "errors"))) == "Alert"
    three = {**spec, "replicas": 3, "containers": {"payments": {**spec["containers"]["payments"], "env": {}}}}
    sb.world.record_deploy(at + timedelta(seconds=60), "three", {}, {}, {"payments": three})
    live = [c for c in sb.world.pods("payments") if c.end == math.inf]
    assert len(live) == 3 and len({c.pod for c in live}) == 3 and all(c.pod.startswith("payments-") for c in live)
    one = {**three, "replicas": 1}
    sb.world.record_deploy(at + timedelta(seconds=90), "one", {}, {}, {"payments": one})
    (kept,) = [c for c in sb.world.pods("payments") if c.end == math.inf]
    assert kept.pod == live[0].pod and kept.start == live[0].start  # same template: the pod stays
    assert sb.world.monitor_state(sb.world.monitor(monitor("payments", "oom"))) == "OK"


# -- the seed, quantities, fidelity ---------------------------------------------------------------------------------
def test_the_seeded_deployments_are_the_default_specs_and_none_ooms() -> None:
    for svc in SERVICES:
        doc = YAML(typ="safe").load((SEED / f"apps/base/{svc}/deployment.yaml").read_text())
        assert kube.spec_of(doc) == kube.default_spec(svc), svc
        c, other = kube.containers(svc, [(-math.inf, kube.default_spec(svc))], 7)
        assert c.pod != other.pod and c.replica_set == other.replica_set
        assert not c.ooms and c.demand_mib * MIB < 0.85 * (c.limit_bytes or 0), svc


@pytest.mark.parametrize(
    ("text", "value"),
    [("256Mi", 256 * MIB), ("1Gi", 1024 * MIB), ("100m", 0.1), ("2", 2.0), ("1.5G", 1.5e9), ("128974848", 128974848.0),
     ("129e6", 129e6), ("0.5Ki", 512.0), ("12x", None), ("", None), (None, None), ("Mi", None)],
)  # fmt: skip
def test_quantities(text: Any, value: float | None) -> None:
    assert kube.quantity(text) == value


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["Ki", "Mi", "Gi", "k", "M", "G", "m", ""]))
def test_quantity_suffixes_scale_integers(n: int, suffix: str) -> None:
    factor = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3, "": 1}[suffix]
    assert kube.quantity(f"{n}{suffix}") == pytest.approx(n * factor)


def test_fidelity_kubernetes_series(shop: tuple[Running, Clock]) -> None:
    run, clock = shop
    real = recorded("datadog", "v1_query_timeseries_points_ok__rec2022-01.interactions.json")[0]["response"]["body"]
    clock.now = T0 + timedelta(days=1)
    ours = dd_get(
        run,
        "/api/v1/query",
        query="avg:kubernetes.memory.usage{kube_namespace:shop-production} by {kube_deployment}",  # production
        **{"from": int(T0.timestamp()), "to": int(clock.now.timestamp())},
    )
    assert_same_shape(real, ours, only=[k for k in real if k != "series"])
    assert sorted(s["tag_set"][0] for s in ours["series"]) == sorted(f"kube_deployment:{s}" for s in SERVICES)
    for s in ours["series"]:
        assert_same_shape(real["series"][0], s, only=[k for k in real["series"][0] if k != "unit"])
        assert s["interval"] == 300 and s["length"] == 289
    assert len(query(run, "avg:kubernetes.memory.usage{env:production}", T0, clock.now)) == 1
    assert query(run, "avg:kubernetes.memory.usage{env:sandbox}", T0, clock.now) == []
    assert query(run, "avg:kubernetes.memory.usage{kube_deployment:nope}", T0, clock.now) == []
    assert query(run, "avg:kubernetes.memory.usage{*} by {no_such_tag}", T0, clock.now) == []


# -- CPU saturation and replicas ------------------------------------------------------------------------------------
def test_one_replica_saturates_payments_cpu_and_more_replicas_lower_it(shop: tuple[Running, Clock]) -> None:
    """payments: 40 req/s x 12 ms = 0.48 cores at mean load; limit 500m. Two pods: 0.24 each (48 %, no throttling);
    one pod: 96 % -> 2.5 x (0.96 - 0.6) = 90 % of CFS periods throttled, p95 x (1 + 2 x 0.9); three pods: 32 %
    (at 2 AM, load x0.855: one pod 82 %, 55 % throttled)."""
    run, clock = shop
    sb = run.sb
    seeded = head_text(sb, "apps/base/payments/deployment.yaml")
    assert "replicas: 2\n" in seeded and "cpu: 500m" in seeded
    t = T0.timestamp() + 60
    load = sb.world.load(t)
    (c, _) = [p for p in sb.world.pods("payments") if p.end == math.inf]
    assert sb.world.cpu_demand(c, t) == pytest.approx(40 * load * 0.012 / 2)
    assert sb.world._oom_multipliers("payments", t, t + 1) == (1.0, 1.0)

    clock.now = T0 + timedelta(minutes=10)
    push(sb, "apps/base/payments/deployment.yaml", seeded.replace("replicas: 2", "replicas: 1"), "payments: 1 pod")
    one_at = clock.now.timestamp()
    clock.now = T0 + timedelta(minutes=20)
    assert state(run, "payments", "latency") == "Alert" and state(run, "payments", "errors") == "OK"
    u = 40 * sb.world.load(one_at + 60.5) * 0.012 / 0.5  # the bucket's one sample, at its midpoint
    assert sb.world._oom_multipliers("payments", one_at + 60, one_at + 61) == pytest.approx(
        (1.0, 1 + 2 * min(1.0, 2.5 * (u - 0.6)))
    )
    window = (clock.now - timedelta(minutes=5), clock.now)
    (usage,) = query(run, f"sum:kubernetes.cpu.usage.total{{kube_deployment:payments,{PROD}}}", *window)
    (limit,) = query(run, f"sum:kubernetes.cpu.limits{{kube_deployment:payments,{PROD}}}", *window)
    assert {v for _, v in limit["pointlist"]} == {0.5} and usage["unit"][0]["name"] == "nanocore"
    at_2am = 40 * sb.world.load(clock.now.timestamp()) * 0.012  # 0.41 cores: 2 AM, load x0.855
    assert statistics.fmean(v for _, v in usage["pointlist"]) == pytest.approx(at_2am * 1e9, rel=0.01)
    throttled = query(run, f"sum:kubernetes.cpu.cfs.throttled.periods{{service:payments,{PROD}}}", *window)[0][
        "pointlist"
    ]
    share = 2.5 * (at_2am / 0.5 - 0.6)  # 0.55 of the 10 CFS periods a second
    assert statistics.fmean(v for _, v in throttled) == pytest.approx(10 * share, rel=0.02)

    push(sb, "apps/base/payments/deployment.yaml", seeded.replace("replicas: 2", "replicas: 3"), "payments: 3 pods")
    three_at = clock.now.timestamp()
    assert len([p for p in sb.world.pods("payments") if p.end == math.inf]) == 3
    ready = sb.config.rollout_ready_s  # the new pods take their share once Ready
    assert sb.world._oom_multipliers("payments", three_at + ready + 1, three_at + ready + 2) == (1.0, 1.0)
    clock.now = T0 + timedelta(minutes=26)
    assert state(run, "payments", "latency") == "OK"


# -- deployed means running: source changes, CI-built tags, environments ----------------------------------------------
CATALOG_DOCKERFILE = "services/catalog/Dockerfile"
STAGING = "apps/staging/kustomization.yaml"


def catalog_errors(run: Running, env: str, start: datetime, end: datetime) -> float:
    (series,) = query(run, f"sum:trace.http.request.errors{{service:catalog,env:{env}}}.as_rate()", start, end)
    assert series["scope"] == f"service:catalog,env:{env}"
    return statistics.fmean(v for _, v in series["pointlist"])


def test_a_dockerfile_merge_changes_nothing_until_the_ci_built_tag_runs_in_staging(
    start_sandbox: Callable[..., Running],
) -> None:
    """The catalog's alpine 3.9.4 errors (x2.5) in both environments. A merged FROM alpine:3.9.6 is applied by Flux
    but runs nowhere: both still error. CI builds it into 1.4.3; that tag in apps/staging heals staging only;
    production errors on (its monitor, production's, stays Alert) until its own tag changes."""
    clock = Clock(T0)
    run = start_sandbox(clock=clock, ci_duration=10)  # every stand-in: GitLab (and its CI) seeds repo and registry
    sb = run.sb
    assert sb.world.environments() == ["production", "staging"]
    clock.now = T0 + timedelta(minutes=10)
    dockerfile = head_text(sb, CATALOG_DOCKERFILE)
    merged = push(sb, CATALOG_DOCKERFILE, dockerfile.replace("alpine:3.9.4", "alpine:3.9.6"), "catalog: alpine 3.9.6")
    merged_at = clock.now
    for env in ("production", "staging"):
        last = sb.world.deploys(env)[-1]
        assert last["revision"] == f"main@sha1:{merged}"  # applied...
        assert "alpine:3.9.4" in last["files"][CATALOG_DOCKERFILE]  # ...but what runs was built from the seed
        assert last["workloads"]["catalog"]["base-image"] == "alpine:3.9.4"
    clock.now = merged_at + timedelta(minutes=8)
    baseline = SERVICES["catalog"].hits * SERVICES["catalog"].error_ratio  # 0.45 errors/s at mean load
    for env in ("production", "staging"):
        assert catalog_errors(run, env, merged_at + timedelta(minutes=1), clock.now) > 1.8 * baseline * 0.85, env
    assert state(run, "catalog", "errors") == "Alert"

    sb.bus.publish("registry.read", {"name": "shop/catalog"})  # CI finishes what is due on a registry read
    pushed = registry_store(sb).data["pushed"]["shop/catalog"]
    assert pushed["1.4.3"]["source"] == merged
    text = head_text(sb, STAGING)
    push(sb, STAGING, text.replace('newTag: "1.4.2"', 'newTag: "1.4.3"', 1), "staging: catalog 1.4.3")
    tagged_at = clock.now
    staging = sb.world.deploys("staging")[-1]
    assert staging["workloads"]["catalog"]["base-image"] == "alpine:3.9.6" and not staging["unpulled"]
    assert sb.world.deploys("production")[-1]["workloads"]["catalog"]["base-image"] == "alpine:3.9.4"
    clock.now = tagged_at + timedelta(minutes=10)
    window = (tagged_at + timedelta(minutes=1), clock.now)
    healed, broken = catalog_errors(run, "staging", *window), catalog_errors(run, "production", *window)
    assert 0.8 < healed / (baseline * 0.85) < 1.2  # 2 AM: load x0.855
    assert 2.0 < broken / healed < 3.1
    both = query(run, "sum:trace.http.request.errors{service:catalog}.as_rate()", *window)[0]["pointlist"]
    assert statistics.fmean(v for _, v in both) == pytest.approx(healed + broken, rel=0.01)  # Datadog's space sum
    assert state(run, "catalog", "errors") == "Alert"  # the monitors are production's
    (by_env,) = [query(run, "avg:kubernetes.memory.limits{kube_deployment:catalog} by {env}", *window)]
    assert sorted(s["tag_set"][0] for s in by_env) == ["env:production", "env:staging"]
