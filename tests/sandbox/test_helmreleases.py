"""The HelmRelease stand-in (sandbox/flux/helmreleases.py) over HTTP: a HelmRelease declared in clusters/sandbox with
a chart folder in the repository, its status derived at each reconciliation, compared with the recorded
helm-controller objects (tests/fixtures/recorded/flux); Kustomizations' spec.wait / spec.healthChecks read back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fixloop.core.helmrelease import HelmReleaseState
from fixloop.integrations.errors import NotFound
from fixloop.sandbox.app import Sandbox
from tests.sandbox.conftest import Running
from tests.sandbox.fidelity import assert_same_shape
from tests.sandbox.test_flux import FILES, auth, client, commit, load_yaml

HR_PATH = "/kube/apis/helm.toolkit.fluxcd.io/v2/namespaces/shop/helmreleases"
HELMRELEASE = """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: shop
spec:
  interval: 10m
  chart:
    spec:
      chart: ./charts/podinfo
      reconcileStrategy: {strategy}
      sourceRef:
        kind: GitRepository
        name: flux-system
        namespace: flux-system
  values:
    replicaCount: {replicas}
"""
CHART = "apiVersion: v2\nname: podinfo\nversion: {version}\nappVersion: 6.6.1\n"
VALUES = "replicaCount: 1\nimage:\n  repository: ghcr.io/stefanprodan/podinfo\n"


def chart_files(replicas: int = 2, version: str = "6.6.1", strategy: str = "Revision") -> dict[str, str]:
    return {
        "clusters/sandbox/podinfo.yaml": HELMRELEASE.format(strategy=strategy, replicas=replicas),
        "charts/podinfo/Chart.yaml": CHART.format(version=version),
        "charts/podinfo/values.yaml": VALUES,
    }


def reconcile(run: Running) -> dict[str, Any]:
    resp = httpx.post(f"{run.url}/kube/sandbox/reconcile", headers=auth(run.sb))
    assert resp.status_code == 200
    return resp.json()


def get(run: Running, name: str = "podinfo") -> dict[str, Any]:
    resp = httpx.get(f"{run.url}{HR_PATH}/{name}", headers=auth(run.sb))
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture
def run(start_sandbox: Any) -> Running:
    return start_sandbox("/kube")


def test_install_then_upgrade_with_history(run: Running) -> None:
    sb: Sandbox = run.sb
    first = commit(sb, {**FILES, **chart_files()}, push=False)
    reconcile(run)
    obj = get(run)
    status = obj["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "InstallSucceeded")
    assert (
        ready["message"] == f"Helm install succeeded for release shop/podinfo.v1 with chart podinfo@6.6.1+{first[:12]}"
    )
    assert [(h["version"], h["status"], h["action"]) for h in status["history"]] == [(1, "deployed", "install")]
    assert status["lastAttemptedRevision"] == f"6.6.1+{first[:12]}" and status["observedGeneration"] == 1

    # the shapes of the recorded objects: the v2 history entry and the v2 object of the flux CLI's testdata
    # (testHooks only with spec.test.enable, ociDigest only for a chart from an OCI registry)
    recorded = load_yaml("helm-controller-docs-v2_helmrelease-status_history.yaml")[0]["status"]["history"][0]
    assert_same_shape({k: v for k, v in recorded.items() if k not in ("testHooks", "ociDigest")}, status["history"][0])
    assert_same_shape(
        load_yaml("flux2-testdata_trace_helmrelease-oci.yaml")[2], obj, only=["apiVersion", "kind", "metadata"]
    )
    assert_same_shape(
        {k: v for k, v in load_yaml("flux2-testdata_trace_helmrelease-oci.yaml")[2]["status"].items()
         if k in ("conditions", "helmChart", "lastAttemptedRevision")},
        status,
    )  # fmt: skip

    second = commit(sb, chart_files(replicas=3), push=False)
    reconcile(run)
    status = get(run)["status"]
    assert [(h["version"], h["status"]) for h in status["history"]] == [(2, "deployed"), (1, "superseded")]
    assert status["history"][0]["chartVersion"] == f"6.6.1+{second[:12]}"
    assert status["history"][0]["configDigest"] != status["history"][1]["configDigest"], "the values changed"
    assert get(run)["metadata"]["generation"] == 2, "the declared spec changed"
    with client(run.url, sb) as kube:
        verdict = kube.get_helmrelease("shop", "podinfo")
    assert verdict.state is HelmReleaseState.DEPLOYED and verdict.ready_reason == "UpgradeSucceeded"
    assert verdict.deployed_sha() == second[:12] and verdict.latest is not None and verdict.latest.version == 2


def test_a_chart_that_does_not_parse_fails_the_upgrade_and_a_fix_recovers(run: Running) -> None:
    sb = run.sb
    commit(sb, {**FILES, **chart_files()}, push=False)
    reconcile(run)
    broken = commit(sb, {"charts/podinfo/values.yaml": "- not\n- a map\n"}, push=False)
    reconcile(run)
    status = get(run)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "UpgradeFailed")
    assert ready["message"].startswith(
        f"Helm upgrade failed for release shop/podinfo with chart podinfo@6.6.1+{broken[:12]}: "
    )
    assert [(h["version"], h["status"]) for h in status["history"]] == [(2, "failed"), (1, "deployed")]
    assert (status["failures"], status["upgradeFailures"]) == (1, 1)
    reconcile(run)
    assert get(run)["status"]["failures"] == 1, "the same revision is not attempted again"

    fixed = commit(sb, {"charts/podinfo/values.yaml": VALUES}, push=False)
    reconcile(run)
    status = get(run)["status"]
    assert [(h["version"], h["status"]) for h in status["history"]] == [
        (3, "deployed"),
        (2, "failed"),
        (1, "superseded"),
    ]
    assert status["lastAttemptedRevision"] == f"6.6.1+{fixed[:12]}" and "failures" not in status


def test_first_install_failure_missing_chart_and_not_found(run: Running) -> None:
    sb = run.sb
    commit(sb, {**FILES, **chart_files(version="not-a-version")}, push=False)
    reconcile(run)
    ready = next(c for c in get(run)["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InstallFailed")
    assert "chart.metadata.version 'not-a-version' is invalid" in ready["message"]

    commit(sb, {"clusters/sandbox/podinfo.yaml": HELMRELEASE.format(strategy="ChartVersion", replicas=2)
                .replace("./charts/podinfo", "./charts/absent")}, push=False)  # fmt: skip
    reconcile(run)
    status = get(run)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ArtifactFailed")
    assert len(status["history"]) == 1, "no Helm action without a chart"

    listed = httpx.get(f"{run.url}/kube/apis/helm.toolkit.fluxcd.io/v2/helmreleases", headers=auth(sb)).json()
    assert listed["kind"] == "HelmReleaseList" and [i["metadata"]["name"] for i in listed["items"]] == ["podinfo"]
    with client(run.url, sb) as kube, pytest.raises(NotFound, match='helmreleases.helm.toolkit.fluxcd.io "nope"'):
        kube.get_helmrelease("shop", "nope")


def test_kustomization_wait_and_health_checks_are_read(run: Running) -> None:
    sb = run.sb
    checks = (
        "  healthChecks:\n    - apiVersion: helm.toolkit.fluxcd.io/v2\n      kind: HelmRelease\n"
        "      name: podinfo\n      namespace: shop\n"
    )
    apps = FILES["clusters/sandbox/apps.yaml"]
    staging, production = apps.split("---\n")
    files = {**FILES, "clusters/sandbox/apps.yaml": staging.replace("  wait: true\n", checks) + "---\n" + production}
    commit(sb, files, push=False)
    reconcile(run)
    with client(run.url, sb) as kube:
        staged = kube.get_kustomization("flux-system", "apps-staging")
        prod = kube.get_kustomization("flux-system", "apps-production")
    assert not staged.wait and staged.health_checked
    assert [(c.kind, c.namespace, c.name, c.apiVersion) for c in staged.health_checks] == [
        ("HelmRelease", "shop", "podinfo", "helm.toolkit.fluxcd.io/v2")
    ]
    assert prod.wait and prod.health_checks == [] and prod.health_checked
