"""The sandbox's apps/v1 Deployments and core/v1 Pods (sandbox/flux/workloads.py) read with fixloop's workload
client (integrations/kube.py: lightkube) through a kubeconfig whose user is an exec credential plugin and through
in-cluster configuration over TLS; their shapes against recorded objects; the status during an OOM cycle; the
``kubernetes.rollout_state`` activity."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from fixloop.activities.deploy import DeployActivities
from fixloop.core.rollout import RolloutState, rollout
from fixloop.integrations.errors import AuthError, IntegrationError, NotFound
from fixloop.integrations.flux import FluxSettings, KubeClient
from fixloop.integrations.kube import WorkloadClient, kube_config
from fixloop.sandbox import flux as flux_stand_in
from fixloop.sandbox.seed import seed_gitops
from fixloop.sandbox.server import bind
from fixloop.workflows.contracts.deploy import RolloutStateInput
from tests.sandbox.conftest import Clock, Running
from tests.sandbox.fidelity import assert_same_shape
from tests.sandbox.test_world_kube import CATALOG, T0, head_text, push, reconcile
from tests.test_rollout import CRASHING, DEADLINE, RUNNING

NS = "shop-production"


@pytest.fixture
def shop(start_sandbox: Callable[..., Running]) -> tuple[Running, Clock]:
    clock = Clock(T0)
    run = start_sandbox("/kube", clock=clock)
    seed_gitops(run.sb.repos, clock())
    reconcile(run)
    return run, clock


def exec_kubeconfig(tmp_path: Path, server: str, token: str) -> Path:
    """A kubeconfig whose user is an exec plugin: a script printing an ExecCredential with ``token``."""
    plugin = tmp_path / "credential-plugin"
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": token}}  # fmt: skip
    plugin.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({credential!r}))\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": server}}],
        "users": [{"name": "plugin", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                         "command": str(plugin), "interactiveMode": "Never"}}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "plugin", "namespace": NS}}],
        "current-context": "sandbox",
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


def workloads(run: Running, tmp_path: Path, token: str | None = None) -> WorkloadClient:
    path = exec_kubeconfig(tmp_path, f"{run.url}/kube", token or run.sb.credentials.kube_token.get_secret_value())
    return WorkloadClient.from_settings(FluxSettings(kubeconfig=path, timeout=5))


def test_exec_plugin_kubeconfig_reads_deployments_and_pods(shop: tuple[Running, Clock], tmp_path: Path) -> None:
    run, _ = shop
    with workloads(run, tmp_path) as client:
        deployment = client.get_workload("Deployment", NS, "catalog")
        pods = client.pods_of(deployment)
    assert deployment["metadata"]["name"] == "catalog" and deployment["status"]["readyReplicas"] == 2
    assert [p["metadata"]["labels"]["pod-template-hash"] for p in pods] == [pods[0]["metadata"]["labels"]
                                                                           ["pod-template-hash"]] * 2  # fmt: skip
    assert all(p["metadata"]["name"].startswith("catalog-") for p in pods)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert rollout(deployment, pods, image).state is RolloutState.COMPLETE
    # the Flux reads keep working beside it
    with KubeClient(f"{run.url}/kube", run.sb.credentials.kube_token, timeout=5) as flux:
        assert flux.get_kustomization("flux-system", "apps-production").ready is True


def test_errors_of_the_workload_client(shop: tuple[Running, Clock], tmp_path: Path) -> None:
    run, _ = shop
    with workloads(run, tmp_path) as client, pytest.raises(NotFound, match="nope"):
        client.get_workload("Deployment", NS, "nope")
    with workloads(run, tmp_path / "..", token="wrong") as client, pytest.raises(AuthError):
        client.get_workload("Deployment", NS, "catalog")
    with pytest.raises(IntegrationError, match="not found"):
        kube_config(FluxSettings(kubeconfig=tmp_path / "missing"))


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the in-cluster test's certificate")
    cert, key = tmp_path / "ca.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_api(shop: tuple[Running, Clock], tls: tuple[Path, Path]) -> Iterator[int]:
    """The Kubernetes API stand-in alone at the root of an HTTPS server (as an API server is), on a free port."""
    run, _ = shop
    sock = bind()
    server = uvicorn.Server(
        uvicorn.Config(flux_stand_in.build_app(run.sb, flux_stand_in.Flux(run.sb)), log_level="warning",
                       ssl_certfile=str(tls[0]), ssl_keyfile=str(tls[1]))
    )  # fmt: skip
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    while not server.started and thread.is_alive():
        started.wait(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)


def test_in_cluster_service_account_reaches_the_api(
    shop: tuple[Running, Clock], tls: tuple[Path, Path], https_api: int, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    run, _ = shop
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(run.sb.credentials.kube_token.get_secret_value() + "\n")
    (account / "namespace").write_text(NS)
    shutil.copy(tls[0], account / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(https_api))
    monkeypatch.setattr("fixloop.integrations.kube.IN_CLUSTER", account)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    settings = FluxSettings(_env_file=None, token=None, kubeconfig=None)
    with WorkloadClient.from_settings(settings) as client:
        deployment = client.get_workload("Deployment", NS, "inventory")
        assert len(client.pods_of(deployment)) == 2
    (account / "token").write_text("rotated-and-wrong")
    with WorkloadClient.from_settings(settings) as client, pytest.raises(AuthError):
        client.get_workload("Deployment", NS, "inventory")


def test_shapes_match_recorded_objects(shop: tuple[Running, Clock], tmp_path: Path) -> None:
    run, clock = shop
    with workloads(run, tmp_path) as client:
        deployment = client.get_workload("Deployment", NS, "catalog")
        pods = client.pods_of(deployment)
    # all pods ready: the API omits unavailableReplicas (a zero count), which the recording has (1)
    real = {**DEADLINE, "status": {k: v for k, v in DEADLINE["status"].items() if k != "unavailableReplicas"}}
    assert_same_shape(real, deployment, only=["apiVersion", "kind", "status"])
    assert_same_shape(DEADLINE["metadata"], deployment["metadata"], only=["generation", "name", "namespace", "uid"])
    assert_same_shape(RUNNING["metadata"], pods[0]["metadata"], only=["name", "namespace", "uid", "creationTimestamp"])
    # OOM-cycling pods: one running after a restart (RUNNING), one backing off (CRASHING)
    push(run.sb, CATALOG, head_text(run.sb, CATALOG).replace('value: "64"', 'value: "160"'), "cache 160 MB")
    found: dict[str, dict[str, Any]] = {}
    with workloads(run, tmp_path) as client:
        for s in range(40, 200, 2):
            clock.now = T0 + timedelta(seconds=s)
            for p in client.pods_of(deployment):
                cs = p["status"]["containerStatuses"][0]
                if cs["restartCount"] and "running" in cs["state"]:
                    found.setdefault("running", p)
                if "waiting" in cs["state"]:
                    found.setdefault("waiting", p)
    assert_same_shape(RUNNING, found["running"], only=["apiVersion", "kind", "status"])
    assert_same_shape(CRASHING, found["waiting"], only=["apiVersion", "kind", "status"])


def test_oom_cycle_shows_crashloopbackoff_and_restart_growth(shop: tuple[Running, Clock], tmp_path: Path) -> None:
    run, clock = shop
    push(run.sb, CATALOG, head_text(run.sb, CATALOG).replace('value: "64"', 'value: "160"'), "cache 160 MB")
    seen: dict[str, Any] = {}
    previous: dict[str, int] = {}
    states: list[str] = []
    with workloads(run, tmp_path) as client:
        for s in range(0, 120, 3):
            clock.now = T0 + timedelta(seconds=1 + s)
            deployment = client.get_workload("Deployment", NS, "catalog")
            pods = client.pods_of(deployment)
            v = rollout(deployment, pods, None, previous)
            previous = v.restarts
            states.append(v.state)
            for p in pods:
                for cs in p["status"]["containerStatuses"]:
                    if "waiting" in cs["state"]:
                        seen["waiting"] = (cs["state"]["waiting"]["reason"], deployment["status"])
                    if "terminated" in cs["state"]:
                        seen["terminated"] = cs["state"]["terminated"]["reason"]
    assert seen["terminated"] == "OOMKilled"
    reason, status = seen["waiting"]
    assert reason == "CrashLoopBackOff" and status.get("readyReplicas", 0) < 2 and status["unavailableReplicas"] >= 1
    assert status["observedGeneration"] == 2 and status["updatedReplicas"] == 2
    assert RolloutState.STUCK in states and max(previous.values()) >= 2


async def test_rollout_state_activity(shop: tuple[Running, Clock], tmp_path: Path) -> None:
    run, _ = shop
    flux = FluxSettings(api_url=f"{run.url}/kube", token=SecretStr(run.sb.credentials.kube_token.get_secret_value()))
    acts = DeployActivities(flux, workloads=workloads(run, tmp_path))
    try:
        state = await acts.rollout_state(RolloutStateInput(scope="s", namespace=NS, name="inventory"))
        assert state.workload == "Deployment/shop-production/inventory" and state.pods == 2
        assert state.verdict.state is RolloutState.COMPLETE and len(state.verdict.restarts) == 2
        wrong = await acts.rollout_state(
            RolloutStateInput(scope="s", namespace=NS, name="inventory", expected_image="registry.sandbox.local/x:9")
        )
        assert wrong.verdict.state is RolloutState.STUCK
        from temporalio.exceptions import ApplicationError

        with pytest.raises(ApplicationError, match="not found") as e:
            await acts.rollout_state(RolloutStateInput(scope="s", namespace=NS, name="nope"))
        assert e.value.type == "WorkloadNotFound" and e.value.non_retryable
    finally:
        acts.close()


# -- rollouts per environment ------------------------------------------------------------------------------------------
STAGING_NS = "shop-staging"
STAGING = "apps/staging/kustomization.yaml"


def set_staging_tag(run: Running, tag: str) -> None:
    text = head_text(run.sb, STAGING)
    push(run.sb, STAGING, text.replace('newTag: "1.4.2"', f'newTag: "{tag}"', 1), f"staging: catalog {tag}")


def verdict(client: WorkloadClient, ns: str, image: str | None) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    deployment = client.get_workload("Deployment", ns, "catalog")
    pods = client.pods_of(deployment)
    return rollout(deployment, pods, image), deployment, pods


def test_a_new_tag_rolls_out_in_staging_within_the_ready_time(shop: tuple[Running, Clock], tmp_path: Path) -> None:
    """A tag the registry has (pushed as CI pushes it) set in apps/staging: the new ReplicaSet's pods are created at
    the apply and Ready ``rollout_ready_s`` (2 s) later; until then the rollout is progressing (old pods still
    there), then complete with the new image; production is untouched."""
    from fixloop.sandbox.registry import push_tag, registry_store

    run, clock = shop
    image = "registry.sandbox.local/shop/catalog:1.4.3"
    seed = run.sb.repos.branches("platform/gitops")["main"]
    push_tag(registry_store(run.sb), "registry.sandbox.local/shop/catalog", "1.4.3", clock(), source=seed)
    ready_s = run.sb.config.rollout_ready_s
    assert ready_s == 2.0
    with workloads(run, tmp_path) as client:
        before, old, _ = verdict(client, STAGING_NS, None)
        assert before.state is RolloutState.COMPLETE and old["metadata"]["namespace"] == STAGING_NS
        clock.now = T0 + timedelta(minutes=1)
        applied = clock.now
        set_staging_tag(run, "1.4.3")
        v, deployment, pods = verdict(client, STAGING_NS, image)
        assert v.state is RolloutState.PROGRESSING, v.reasons
        assert deployment["metadata"]["generation"] == 2 and deployment["status"]["observedGeneration"] == 2
        assert deployment["status"]["replicas"] == 4 and deployment["status"]["updatedReplicas"] == 2
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
        new = [p for p in pods if p["status"]["containerStatuses"][0]["image"] == image]
        assert len(new) == 2 and not any(p["status"]["containerStatuses"][0]["ready"] for p in new)
        clock.now = applied + timedelta(seconds=ready_s)
        v, deployment, pods = verdict(client, STAGING_NS, image)
        assert v.state is RolloutState.COMPLETE, v.reasons
        assert {p["status"]["containerStatuses"][0]["image"] for p in pods} == {image} and len(pods) == 2
        progressing = next(c for c in deployment["status"]["conditions"] if c["type"] == "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
        prod, production, _ = verdict(client, NS, "registry.sandbox.local/shop/catalog:1.4.2")
        assert prod.state is RolloutState.COMPLETE and production["metadata"]["generation"] == 1


def test_a_tag_the_registry_lacks_backs_off_pulling_and_the_rollout_is_stuck(
    shop: tuple[Running, Clock], tmp_path: Path
) -> None:
    """apps/staging set to a tag nobody pushed: the new pods wait in ErrImagePull, then ImagePullBackOff, never Ready;
    the old pods keep serving (the world's staging catalog is unchanged); core.rollout says stuck, and after the
    progress deadline (600 s) the Deployment says ProgressDeadlineExceeded."""
    run, clock = shop
    image = "registry.sandbox.local/shop/catalog:9.9.9"
    clock.now = T0 + timedelta(minutes=1)
    applied = clock.now
    set_staging_tag(run, "9.9.9")
    assert run.sb.world.deploys("staging")[-1]["unpulled"] == {"catalog": image}
    with workloads(run, tmp_path) as client:
        clock.now = applied + timedelta(seconds=1)
        v, deployment, pods = verdict(client, STAGING_NS, image)
        waiting = [
            p["status"]["containerStatuses"][0] for p in pods if p["status"]["containerStatuses"][0]["image"] == image
        ]
        assert len(waiting) == 2 and {w["state"]["waiting"]["reason"] for w in waiting} == {"ErrImagePull"}
        assert v.state is RolloutState.STUCK and any("ErrImagePull" in r for r in v.reasons)
        clock.now = applied + timedelta(seconds=60)
        v, deployment, pods = verdict(client, STAGING_NS, image)
        waiting = [
            p["status"]["containerStatuses"][0] for p in pods if p["status"]["containerStatuses"][0]["image"] == image
        ]
        assert {w["state"]["waiting"]["reason"] for w in waiting} == {"ImagePullBackOff"}
        assert not any(w["ready"] for w in waiting) and all(w["imageID"] == "" for w in waiting)
        assert v.state is RolloutState.STUCK and any("ImagePullBackOff" in r for r in v.reasons)
        assert deployment["status"]["readyReplicas"] == 2 and deployment["status"]["updatedReplicas"] == 2
        progressing = next(c for c in deployment["status"]["conditions"] if c["type"] == "Progressing")
        assert progressing["reason"] == "ReplicaSetUpdated"
        clock.now = applied + timedelta(seconds=601)
        v, deployment, _ = verdict(client, STAGING_NS, image)
        progressing = next(c for c in deployment["status"]["conditions"] if c["type"] == "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
        assert v.state is RolloutState.STUCK and any("progress deadline exceeded" in r for r in v.reasons)
    world = run.sb.world
    t = clock.now.timestamp() - 30
    assert world.expected("catalog", "errors", t, 1, "staging") == pytest.approx(
        world.expected("catalog", "errors", t - 86400, 1, "staging")
    )  # the old pods serve: nothing changed
    assert world.expected("catalog", "errors", t, 1, "staging") == pytest.approx(
        world.expected("catalog", "errors", t, 1, "production")
    )
