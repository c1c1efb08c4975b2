"""``flux.deploy_state`` for a HelmRelease target against the sandbox (GitLab + the Flux stand-in): merge requests
that add or change a chart in the GitOps repository, merged through GitLab, reconciled through the sandbox's
reconcile endpoint (time-independent), read back through the Kubernetes API; ``helmrelease_state_of`` on the
recorded objects."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from fixloop.activities.deploy import helmrelease_state_of
from fixloop.core.helmrelease import helmrelease
from fixloop.integrations.flux import kustomization_status
from fixloop.workflows.contracts.deploy import DeployState, DeployStateInput
from tests.activities.test_flux_activity import SCOPE, World, start_world
from tests.sandbox.conftest import start_sandbox  # noqa: F401  (the fixture)
from tests.sandbox.test_flux import load_yaml
from tests.sandbox.test_helmreleases import VALUES, chart_files
from tests.test_helmrelease import UPGRADE_FAILED, v2_ready

TARGET = "shop/podinfo"


@pytest.fixture
def world(start_sandbox: Any) -> Iterator[World]:  # noqa: F811
    w = start_world(start_sandbox)
    yield w
    w.flux.close()


def reconcile(world: World) -> None:
    sb = world.run.sb
    token = sb.credentials.kube_token.get_secret_value()
    resp = httpx.post(f"{world.run.url}/kube/sandbox/reconcile", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200


async def state(world: World, sha: str, kustomization: str | None = None) -> DeployState:
    inp = DeployStateInput(scope=SCOPE, merge_sha=sha, kustomization=kustomization, helmrelease=TARGET)
    return await world.flux.deploy_state(inp)


async def test_helmrelease_ready_then_not_ready(world: World) -> None:
    merge = world.merge("feat/podinfo-chart", chart_files())
    reconcile(world)
    ok = await state(world, merge)
    assert ok.applied and not ok.failed and not ok.via_descendant
    assert (ok.ready, ok.reason) == (True, "InstallSucceeded")
    assert ok.helmrelease == TARGET and ok.kustomization is None, "the chart version's commit decides"
    assert (ok.chart_name, ok.chart_version, ok.app_version) == ("podinfo", f"6.6.1+{merge[:12]}", "6.6.1")
    assert ok.chart_sha == merge[:12] and ok.release_version == 1 and ok.release_status == "deployed"
    assert ok.values_digest is not None and ok.values_digest.startswith("sha256:")
    assert ok.message == f"Helm install succeeded for release shop/podinfo.v1 with chart podinfo@6.6.1+{merge[:12]}"
    assert DeployState.model_validate_json(ok.model_dump_json()) == ok

    # a later merge that breaks the chart: the release fails, the earlier merge stays deployed by an older release
    broken = world.merge("fix/podinfo-values", {"charts/podinfo/values.yaml": "- not\n- a map\n"})
    reconcile(world)
    bad = await state(world, broken)
    assert bad.failed and not bad.applied
    assert (bad.ready, bad.reason, bad.release_status) == (False, "UpgradeFailed", "failed")
    assert bad.revision == bad.last_attempted_revision == f"6.6.1+{broken[:12]}" and bad.chart_sha == broken[:12]
    assert bad.message is not None and "values are not a map" in bad.message
    earlier = await state(world, merge)
    assert not earlier.applied, "the last attempt failed: the release is not deployed"

    fixed = world.merge("fix/podinfo-values-again", {"charts/podinfo/values.yaml": VALUES})
    reconcile(world)
    again = await state(world, broken)
    assert again.applied and again.via_descendant and again.chart_sha == fixed[:12]
    assert (again.reason, again.release_version) == ("UpgradeSucceeded", 3)


async def test_chart_version_strategy_needs_the_kustomization(world: World) -> None:
    merge = world.merge("feat/podinfo-chart", chart_files(strategy="ChartVersion"))
    reconcile(world)
    ok = await state(world, merge)
    assert ok.applied and ok.chart_sha is None and ok.chart_version == "6.6.1"
    assert ok.kustomization == "flux-system/apps-production" and ok.kustomization_revision == f"main@sha1:{merge}"
    assert ok.health_checked, "the seeded apps-production has spec.wait: true"

    with pytest.raises(ApplicationError) as err:
        await world.flux.deploy_state(DeployStateInput(scope=SCOPE, merge_sha=merge, helmrelease="shop/absent"))
    assert err.value.type == "HelmReleaseNotFound" and err.value.non_retryable
    with pytest.raises(ApplicationError) as err:
        await world.flux.deploy_state(DeployStateInput(scope=SCOPE, merge_sha=merge, helmrelease="Not/A Name"))
    assert err.value.type == "InvalidInput"


async def test_kustomization_default_unchanged_reads_health_checks(world: World) -> None:
    head = world.run.sb.repos.branches(SCOPE)["main"]
    plain = await world.flux.deploy_state(DeployStateInput(scope=SCOPE, merge_sha=head))
    assert plain.applied and plain.helmrelease is None and plain.chart_version is None and plain.health_checked


def test_helmrelease_state_of_recorded_objects() -> None:
    ks_doc = copy.deepcopy(load_yaml("flux2-testdata_trace_deployment.yaml")[-2])  # Kustomization infrastructure
    assert ks_doc["kind"] == "Kustomization"
    ks_doc["status"]["lastAppliedRevision"] = "main@sha1:696f056df216eea4f9401adbee0ff744d4df390f"
    ks = kustomization_status(ks_doc)
    merge = "696f056df216eea4f9401adbee0ff744d4df390f"
    ok = helmrelease_state_of(helmrelease(v2_ready()), merge, ks)
    assert ok.applied and ok.chart_version == "6.6.1+0cc9a8446c95" and ok.chart_sha is None
    assert ok.workloads == ["Deployment/podinfo/podinfo"] and ok.release_version == 2 and not ok.health_checked
    assert ok.applied_at == datetime(2024, 5, 7, 4, 54, 55, tzinfo=UTC), "Helm's lastDeployed of the deployed release"

    failed = helmrelease_state_of(helmrelease(UPGRADE_FAILED), merge, ks)
    assert failed.failed and not failed.applied and failed.reason == "UpgradeFailed"
    assert failed.applied_at is None
    other = helmrelease_state_of(helmrelease(UPGRADE_FAILED), "ab" * 20, ks)
    assert not other.failed and not other.applied, "the Kustomization did not apply that merge"
