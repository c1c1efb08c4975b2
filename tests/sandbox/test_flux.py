"""The Flux stand-in (sandbox/flux/, sandbox/kustomize.py) against fixloop's Flux client (integrations/flux.py),
over plain HTTP; fidelity against recorded real Flux objects and notification events (tests/fixtures/recorded/flux)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from ruamel.yaml import YAML

from fixloop.app.ingest import decode
from fixloop.integrations.errors import AuthError, NotFound
from fixloop.integrations.flux import (
    FluxEventError,
    FluxSettings,
    KubeClient,
    parse_event,
    parse_revision,
    verify_signature,
)
from fixloop.sandbox.app import Sandbox, create_app
from fixloop.sandbox.config import SandboxConfig
from fixloop.sandbox.flux.reconciler import last_from
from fixloop.sandbox.kustomize import BuildError, PathNotFound, Snapshot, build
from fixloop.sandbox.repos import Action, Person
from fixloop.sandbox.server import bind, serve_in_thread
from tests.receiver import Receiver
from tests.sandbox.fidelity import RECORDED, assert_same_shape

PROJECT = "platform/gitops"
KS_PATH = "/kube/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations"
AUTHOR = Person(name="Test", email="test@example.com")
FLUX_DIR = RECORDED / "flux"

KS = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: apps-{env}
  namespace: flux-system
spec:
  interval: 10m0s
  timeout: 5m0s
  path: ./apps/{env}
  prune: true
  wait: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"""
OVERLAY = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: shop-{env}
resources:
  - ../base/legacy-api
images:
  - name: registry.sandbox.local/shop/legacy-api
    newTag: "{tag}"
"""
FILES = {
    "clusters/sandbox/flux-system.yaml": "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n"
    "  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m0s\n  ref:\n    branch: main\n"
    "  url: https://gitlab.sandbox.local/platform/gitops.git\n",
    "clusters/sandbox/apps.yaml": KS.format(env="staging") + "---\n" + KS.format(env="production"),
    "apps/base/legacy-api/kustomization.yaml": "resources:\n  - deployment.yaml\n  - service.yaml\n",
    "apps/base/legacy-api/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: legacy-api
spec:
  template:
    spec:
      containers:
        - name: legacy-api
          image: registry.sandbox.local/shop/legacy-api:latest
        - name: proxy
          image: envoyproxy/envoy:v1.29.1
""",
    "apps/base/legacy-api/service.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: legacy-api\n",
    "apps/staging/kustomization.yaml": OVERLAY.format(env="staging", tag="2.0.7"),
    "apps/production/kustomization.yaml": OVERLAY.format(env="production", tag="2.0.7"),
    "services/legacy-api/Dockerfile": "FROM golang:1.22 AS build\nRUN make\nFROM --platform=linux/amd64 "
    "debian:buster-slim\nCOPY --from=build /app /app\n",
}


def commit(sb: Sandbox, files: dict[str, str], message: str = "change", push: bool = True) -> str:
    """Commit ``files`` on main of platform/gitops (created on first use) and publish "git.push" as GitLab does."""
    repos = sb.repos
    if not repos.exists(PROJECT):
        repos.create(PROJECT)
    before = repos.branches(PROJECT).get("main")
    actions = [
        Action(action="update" if before and repos.read(PROJECT, "main", p) is not None else "create",
               file_path=p, content=text)
        for p, text in files.items()
    ]  # fmt: skip
    sha = repos.commit(PROJECT, "main", actions, message, AUTHOR, sb.clock()).id
    if push:
        sb.bus.publish("git.push", {"project": PROJECT, "branch": "main", "before": before, "after": sha})
    return sha


def client(url: str, sb: Sandbox, token: str | None = None) -> KubeClient:
    return KubeClient(f"{url}/kube", token or sb.credentials.kube_token, timeout=5)


def auth(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.credentials.kube_token.get_secret_value()}"}


def load_yaml(name: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe", pure=True).load_all((FLUX_DIR / name).read_text()) if d]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver("/flux")
    yield r
    r.close()


def events(requests: list[tuple[dict[str, str], bytes]], name: str, reason: str) -> list[tuple[dict[str, str], bytes]]:
    return [
        (h, b) for h, b in requests
        if json.loads(b)["involvedObject"]["name"] == name and json.loads(b)["reason"] == reason
    ]  # fmt: skip


# -- contract: reconcile, read back with the client ------------------------------------------------------------
def test_push_applies_the_revision_and_the_client_reads_it(start_sandbox: Any) -> None:
    run = start_sandbox("/kube")
    sb = run.sb
    sha = commit(sb, FILES, "initial layout")
    with client(run.url, sb) as kube:
        st = kube.get_kustomization("flux-system", "apps-production")
        assert st.ready is True and st.ready_reason == "ReconciliationSucceeded"
        assert st.last_applied_revision == st.last_attempted_revision == f"main@sha1:{sha}"
        assert st.observed_generation == st.generation == 1
        assert st.applied(sha) and not st.failed(sha)

        sha2 = commit(sb, {"README.md": "docs only\n"}, "docs")
        st = kube.get_kustomization("flux-system", "apps-production")
        assert st.last_applied_revision == f"main@sha1:{sha2}"
        assert not st.applied(sha), "without an ancestry check only the exact sha counts"
        assert st.applied(sha, lambda applied, merge: sb.repos.is_ancestor(PROJECT, merge, applied))

    obj = httpx.get(f"{run.url}{KS_PATH}/apps-production", headers=auth(sb)).json()
    assert obj["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1" and obj["kind"] == "Kustomization"
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]} == {"Ready": "True", "Healthy": "True"}
    assert obj["status"]["conditions"][0]["message"] == f"Applied revision: main@sha1:{sha2}"
    assert {"id": "shop-production_legacy-api_apps_Deployment", "v": "v1"} in obj["status"]["inventory"]["entries"]
    source = httpx.get(
        f"{run.url}/kube/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system",
        headers=auth(sb),
    ).json()
    assert source["status"]["artifact"]["revision"] == f"main@sha1:{sha2}"
    listed = httpx.get(KS_PATH.join([run.url, ""]), headers=auth(sb)).json()
    assert listed["kind"] == "KustomizationList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["apps-production", "apps-staging"]

    # the world got the production workloads, with the image CI builds from the Dockerfile's last FROM
    deploy = sb.world.deploys()[-1]
    assert deploy["revision"] == f"main@sha1:{sha2}"
    assert deploy["workloads"] == {
        "legacy-api": {
            "legacy-api": "registry.sandbox.local/shop/legacy-api:2.0.7",
            "proxy": "envoyproxy/envoy:v1.29.1",
            "base-image": "debian:buster-slim",
        }
    }
    assert "services/legacy-api/Dockerfile" in deploy["files"]


def test_broken_kustomization_fails_then_a_fix_recovers(start_sandbox: Any) -> None:
    run = start_sandbox("/kube")
    sb = run.sb
    good = commit(sb, FILES)
    bad = commit(
        sb, {"apps/production/kustomization.yaml": "resources:\n  - ../base/legacy-api\n images: [\n"}, push=False
    )
    resp = httpx.post(f"{run.url}/kube/sandbox/reconcile", headers=auth(sb))  # `flux reconcile source git`
    assert resp.status_code == 200 and resp.json()["revision"] == f"main@sha1:{bad}"
    with client(run.url, sb) as kube:
        st = kube.get_kustomization("flux-system", "apps-production")
        assert st.ready is False and st.ready_reason == "BuildFailed" and st.reconciling
        assert "kustomize build failed" in (st.ready_message or "")
        assert st.last_attempted_revision == f"main@sha1:{bad}"
        assert st.last_applied_revision == f"main@sha1:{good}"
        assert st.failed(bad) and not st.applied(bad) and not st.failed(good)
        staging = kube.get_kustomization("flux-system", "apps-staging")
        assert staging.applied(bad), "the other Kustomization builds and applies the same revision"

        missing = commit(sb, {"apps/production/kustomization.yaml": "resources:\n  - ../base/nope\n"})
        st = kube.get_kustomization("flux-system", "apps-production")
        assert st.ready_reason == "BuildFailed" and "nope" in (st.ready_message or "")
        assert st.failed(missing) and st.last_applied_revision == f"main@sha1:{good}"

        fixed = commit(sb, {"apps/production/kustomization.yaml": OVERLAY.format(env="production", tag="2.0.8")})
        st = kube.get_kustomization("flux-system", "apps-production")
        assert st.applied(fixed) and st.ready_reason == "ReconciliationSucceeded" and not st.reconciling
    assert sb.world.deploys()[-1]["workloads"]["legacy-api"]["legacy-api"].endswith(":2.0.8")
    history = httpx.get(f"{run.url}/kube/sandbox/state", headers=auth(sb)).json()["history"]
    assert [h["revision"] for h in history["flux-system/apps-production"]] == [
        f"main@sha1:{good}",
        f"main@sha1:{fixed}",
    ]


def test_generic_hmac_events_are_signed_and_parse(start_sandbox: Any, receiver: Receiver) -> None:
    run = start_sandbox("/kube", flux_webhook_url=receiver.url, flux_provider="generic-hmac")
    sb = run.sb
    sha = commit(sb, FILES)
    got = receiver.wait_until(lambda r: len(events(r, "apps-production", "ReconciliationSucceeded")) == 1)
    headers, body = events(got, "apps-production", "ReconciliationSucceeded")[0]
    key = sb.credentials.flux_hmac_key
    assert headers["content-type"] == "application/json" and headers["gotk-component"] == "kustomize-controller"
    assert headers["x-signature"] == "sha256=" + hmac.new(key.get_secret_value().encode(), body, "sha256").hexdigest()
    assert verify_signature(body, headers["x-signature"], key)
    assert not verify_signature(body, headers["x-signature"], "another key")
    assert not verify_signature(body + b" ", headers["x-signature"], key)
    event = parse_event(decode(body, "body"))
    assert (event.ref, event.sha, event.revision) == ("main", sha, f"main@sha1:{sha}")
    assert event.severity == "info" and event.involvedObject.kind == "Kustomization"
    progressing = events(got, "apps-production", "Progressing")[0][1]
    assert "Deployment/shop-production/legacy-api created" in parse_event(decode(progressing, "body")).message

    bad = commit(sb, {"apps/production/kustomization.yaml": "resources: [\n"})
    got = receiver.wait_until(lambda r: len(events(r, "apps-production", "BuildFailed")) == 1)
    failed = parse_event(decode(events(got, "apps-production", "BuildFailed")[0][1], "body"))
    assert failed.severity == "error" and failed.sha == bad

    # fidelity: the event body has every key (same JSON types) of real kustomize-controller events
    # (the 2022 capture predates Flux 2.0's "<group>/revision" metadata key and carries an Alert's summary)
    ours = json.loads(body)
    old = json.loads((FLUX_DIR / "captured_notification-sink_kustomization_progressing.json").read_text())
    assert_same_shape(old, ours, only=[k for k in old if k != "metadata"])
    assert_same_shape(
        json.loads((FLUX_DIR / "nc-docs-v1beta3_generic-webhook-body_kustomization.json").read_text()), ours
    )

    def delivered(_: Any) -> bool:
        state = httpx.get(f"{run.url}/kube/sandbox/state", headers=auth(sb)).json()
        return all(d["state"] == "delivered" for d in state["deliveries"])

    receiver.wait_until(delivered)


def test_generic_provider_sends_no_signature(start_sandbox: Any, receiver: Receiver) -> None:
    run = start_sandbox("/kube", flux_webhook_url=receiver.url, flux_provider="generic")
    commit(run.sb, FILES)
    got = receiver.wait_until(lambda r: len(events(r, "apps-staging", "ReconciliationSucceeded")) == 1)
    assert all("x-signature" not in h for h, _ in got)


def test_auth_and_not_found_are_kubernetes_status_objects(start_sandbox: Any) -> None:
    run = start_sandbox("/kube")
    sb = run.sb
    commit(sb, FILES)
    unauthorized = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}  # fmt: skip
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        resp = httpx.get(f"{run.url}{KS_PATH}/apps-production", headers=headers)
        assert resp.status_code == 401 and resp.json() == unauthorized
    with pytest.raises(AuthError) as e, client(run.url, sb, token="wrong") as kube:
        kube.get_kustomization("flux-system", "apps-production")
    assert "wrong" not in str(e.value) and e.value.retryable is False

    resp = httpx.get(f"{run.url}{KS_PATH}/nope", headers=auth(sb))
    assert resp.status_code == 404
    assert resp.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'kustomizations.kustomize.toolkit.fluxcd.io "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "kustomize.toolkit.fluxcd.io", "kind": "kustomizations"}, "code": 404,
    }  # fmt: skip
    with pytest.raises(NotFound, match='"nope" not found'), client(run.url, sb) as kube:
        kube.get_kustomization("flux-system", "nope")
    resp = httpx.get(f"{run.url}/kube/apis/example.com/v1/namespaces/x/widgets/y", headers=auth(sb))
    assert resp.status_code == 404 and resp.json()["reason"] == "NotFound" and resp.json()["kind"] == "Status"
    groups = httpx.get(f"{run.url}/kube/apis", headers=auth(sb)).json()
    assert groups["kind"] == "APIGroupList" and "kustomize.toolkit.fluxcd.io" in [g["name"] for g in groups["groups"]]
    resp = httpx.delete(f"{run.url}{KS_PATH}/apps-production", headers=auth(sb))
    assert resp.status_code == 405 and resp.json()["reason"] == "MethodNotAllowed"


def test_restart_keeps_status_and_does_not_reapply(tmp_path: Path, receiver: Receiver) -> None:
    cfg = dict(state_dir=tmp_path / "state", flux_webhook_url=receiver.url)

    def serve() -> tuple[Sandbox, Any, Any]:
        sock = bind()
        sb = Sandbox.open(SandboxConfig(public_url=f"http://127.0.0.1:{sock.getsockname()[1]}", **cfg))
        return sb, serve_in_thread(create_app(sb, (("/kube", "fixloop.sandbox.flux"),)), sock), sock

    sb, server, _ = serve()
    with server as url:
        sha = commit(sb, FILES)
        before = httpx.get(f"{url}{KS_PATH}/apps-production", headers=auth(sb)).json()
        receiver.wait_until(lambda r: len(events(r, "apps-staging", "ReconciliationSucceeded")) == 1)
        state = httpx.get(f"{url}/kube/sandbox/state", headers=auth(sb)).json()
    sent = len(receiver.requests)

    sb, server, _ = serve()
    with server as url:
        after = httpx.get(f"{url}{KS_PATH}/apps-production", headers=auth(sb)).json()
        assert after == before and after["status"]["lastAppliedRevision"] == f"main@sha1:{sha}"
        again = httpx.get(f"{url}/kube/sandbox/state", headers=auth(sb)).json()
        assert again["history"] == state["history"]
        assert len(again["deliveries"]) == len(state["deliveries"])
        assert len(receiver.requests) == sent
        assert len(sb.world.deploys("production")) == len(sb.world.deploys("staging")) == 1
        # a new head after the restart is applied as usual
        sha2 = commit(sb, {"README.md": "x\n"})
        with client(url, sb) as kube:
            assert kube.get_kustomization("flux-system", "apps-production").applied(sha2)


def test_interval_check_picks_up_a_head_without_push(start_sandbox: Any) -> None:
    run = start_sandbox("/kube", flux_interval=30)
    now = [run.sb.clock()]
    run.sb.clock = lambda: now[0]
    first = commit(run.sb, FILES)
    second = commit(run.sb, {"README.md": "no push event\n"}, push=False)
    with client(run.url, run.sb) as kube:
        assert kube.get_kustomization("flux-system", "apps-staging").applied(first)
        now[0] += timedelta(seconds=30)
        assert kube.get_kustomization("flux-system", "apps-staging").applied(second)


def test_last_from_follows_stages() -> None:
    assert last_from("FROM golang:1.22 AS build\nFROM --platform=$BUILDPLATFORM alpine:3.19\n") == "alpine:3.19"
    assert last_from("FROM debian:bookworm AS base\nRUN x\nFROM base\n") == "debian:bookworm"
    assert last_from("# no image\n") is None


def test_seeded_repository_applies(start_sandbox: Any) -> None:
    from fixloop.sandbox.seed import seed_files, seed_gitops

    run = start_sandbox("/kube")
    sha = seed_gitops(run.sb.repos, run.sb.clock())
    httpx.post(f"{run.url}/kube/sandbox/reconcile", headers=auth(run.sb)).raise_for_status()
    with client(run.url, run.sb) as kube:
        for name in ("apps-staging", "apps-production"):
            assert kube.get_kustomization("flux-system", name).applied(sha), name
    workloads = run.sb.world.deploys()[-1]["workloads"]
    assert workloads["legacy-api"]["legacy-api"] == "registry.sandbox.local/shop/legacy-api:2.0.7"
    dockerfile = seed_files().get("services/legacy-api/Dockerfile")
    if dockerfile:
        assert workloads["legacy-api"]["base-image"].startswith("debian:")


# -- fidelity of objects ----------------------------------------------------------------------------------------
def test_objects_have_the_shape_of_real_flux_objects(start_sandbox: Any) -> None:
    run = start_sandbox("/kube")
    commit(run.sb, FILES)
    ours = httpx.get(f"{run.url}{KS_PATH}/apps-production", headers=auth(run.sb)).json()
    compared = 0
    for name in ("flux2-testdata_get_kustomization_only.yaml", "flux2-testdata_tree_kustomizations.yaml",
                 "flux2-testdata_trace_deployment.yaml"):  # fmt: skip
        for real in load_yaml(name):
            if real.get("kind") != "Kustomization":
                continue
            assert_same_shape(real, ours, only=["apiVersion", "kind", "metadata", "spec", "status"])
            real_ready = next(c for c in real["status"]["conditions"] if c["type"] == "Ready")
            our_ready = next(c for c in ours["status"]["conditions"] if c["type"] == "Ready")
            assert_same_shape(real_ready, our_ready)
            compared += 1
    assert compared == 5
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp"):
        assert key in ours["metadata"]
    source = httpx.get(
        f"{run.url}/kube/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system",
        headers=auth(run.sb),
    ).json()
    real = next(o for o in load_yaml("flux2-testdata_get_status_objects.yaml") if o["metadata"]["name"] == "gr-ready")
    real["spec"].pop("secretRef")  # the sandbox repository is public
    real["status"]["artifact"].pop("checksum", None)
    assert_same_shape(real, source)


# -- the client's parsers ---------------------------------------------------------------------------------------
def test_parse_every_recorded_event() -> None:
    old, new = (
        ("master", "71ea786475aba31c801435d840819f14a2cc0ef2"),
        ("main", "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"),
    )
    expected = {
        "captured_notification-sink_gitrepository_newartifact.json": old,
        "captured_notification-sink_kustomization_progressing.json": old,
        "nc-docs-v1beta3_event_kustomization_validationfailed.json": new,
        "nc-docs-v1beta3_generic-webhook-body_kustomization.json": new,
        "nc-docs-v1beta1_generic-webhook-body_gitrepository_info.repaired.json": (None, None),  # no metadata
    }  # fmt: skip
    seen = set()
    for path in sorted(FLUX_DIR.glob("*.json")):
        body = path.read_bytes()
        if path.name == "nc-docs-v1beta3_event_metadata_fragment.json":
            with pytest.raises(FluxEventError):
                parse_event(decode(body, "body"))
            continue
        event = parse_event(decode(body, "body"))
        assert (event.ref, event.sha) == expected[path.name], path.name
        seen.add(path.name)
    assert seen == set(expected)
    validation = parse_event(
        decode((FLUX_DIR / "nc-docs-v1beta3_event_kustomization_validationfailed.json").read_bytes(), "body")
    )
    assert validation.severity == "error" and validation.reportingInstance is None
    assert validation.revision == "main/731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"
    for bad in (None, [], {}, "x", {"involvedObject": []}):  # decoded documents that are not events
        with pytest.raises(FluxEventError):
            parse_event(bad)


def test_verify_signature_hash_functions() -> None:
    body, key = b'{"reason":"ReconciliationSucceeded"}', "s3cret"
    for algo in ("sha224", "sha256", "sha384", "sha512"):
        sig = hmac.new(key.encode(), body, getattr(hashlib, algo)).hexdigest()
        assert verify_signature(body, f"{algo}={sig}", key)
        assert verify_signature(body, f"{algo}={sig.upper()}", SecretStr(key))
        assert not verify_signature(body, f"{algo}={sig[:-1]}0" if sig[-1] != "0" else f"{algo}={sig[:-1]}1", key)
    sha1 = hmac.new(key.encode(), body, hashlib.sha1).hexdigest()
    for header in (None, "", "sha256", "sha256=", f"sha1={sha1}", f"md5={sha1}", "=abc"):
        assert not verify_signature(body, header, key)


def test_parse_revision_formats() -> None:
    sha = "696f056df216eea4f9401adbee0ff744d4df390f"
    assert parse_revision(f"main@sha1:{sha}") == ("main", sha)
    assert parse_revision(f"refs/heads/release/1.x@sha1:{sha}") == ("release/1.x", sha)
    assert parse_revision(f"master/{sha}") == ("master", sha)
    assert parse_revision(f"sha1:{sha}") == (None, sha)
    assert parse_revision(sha.upper()) == (None, sha)
    for bad in ("", "main@", "main@sha1:xyz", f"/{sha}", f"main@md5:{sha}", "6.3.5"):
        with pytest.raises(ValueError):
            parse_revision(bad)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIXLOOP_KUBE_API_URL", "https://kube.example:6443")
    monkeypatch.setenv("FIXLOOP_KUBE_TOKEN", "tok-123")
    monkeypatch.setenv("FIXLOOP_FLUX_HMAC_KEY", "hk")
    s = FluxSettings(_env_file=None)
    assert (s.api_url, s.token.get_secret_value(), s.hmac_key.get_secret_value()) == (
        "https://kube.example:6443",
        "tok-123",
        "hk",
    )
    assert s.verify_tls is True and "tok-123" not in repr(s)


# -- the kustomize subset -----------------------------------------------------------------------------------------
def test_kustomize_subset() -> None:
    files = {
        "base/kustomization.yaml": "resources: [deploy.yaml, ns.yaml]\nimages:\n  - name: app\n    newTag: '1'\n",
        "base/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n"
        "    spec:\n      initContainers: [{name: init, image: 'busybox:1.36'}]\n"
        "      containers: [{name: app, image: 'app:0@sha256:aaa'}, {name: side, image: 'reg:5000/side'}]\n",
        "base/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        "env/kustomization.yaml": "namespace: shop\nresources: [../base]\nimages:\n"
        "  - {name: app, newName: reg.example/app, digest: 'sha256:bbb'}\n  - {name: reg:5000/side, newTag: '2'}\n"
        "  - {name: busybox, newName: mirror/busybox}\n",
        "plain/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n",
    }
    objs = build(Snapshot.from_files(files), "./env")
    deploy = next(o for o in objs if o["kind"] == "Deployment")
    images = [c["image"] for c in deploy["spec"]["template"]["spec"]["initContainers"]]
    images += [c["image"] for c in deploy["spec"]["template"]["spec"]["containers"]]
    assert images == ["mirror/busybox:1.36", "reg.example/app@sha256:bbb", "reg:5000/side:2"]
    assert deploy["metadata"]["namespace"] == "shop"
    assert "namespace" not in next(o for o in objs if o["kind"] == "Namespace")["metadata"]
    assert [o["metadata"]["name"] for o in build(Snapshot.from_files(files), "plain")] == ["a"]
    for path, extra, error in (
        ("nope", {}, PathNotFound),
        ("bad", {"bad/kustomization.yaml": "resources: [https://github.com/x/y]\n"}, BuildError),
        ("bad", {"bad/kustomization.yaml": "resources: [../../etc]\n"}, BuildError),
        ("bad", {"bad/kustomization.yaml": "resources: [a.yaml, a.yaml]\n", "bad/a.yaml": files["plain/a.yaml"]},
         BuildError),
        ("bad", {"bad/kustomization.yaml": "resources: [a.yaml]\n", "bad/a.yaml": "kind: X\nmetadata: {}\n"},
         BuildError),
    ):  # fmt: skip
        with pytest.raises(error):
            build(Snapshot.from_files({**files, **extra}), path)
