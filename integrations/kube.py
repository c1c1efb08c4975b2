"""Kubernetes workloads: ``apps/v1`` Deployments and StatefulSets and the ``core/v1`` Pods they select, read with
lightkube (https://lightkube.readthedocs.io; on httpx, fixloop's HTTP library) for a rollout verdict
(``fixloop.core.rollout``).

Credentials, first found wins (``kube_config``):

1. ``FIXLOOP_KUBE_KUBECONFIG``: a kubeconfig file (``FIXLOOP_KUBE_CONTEXT``, else its ``current-context``), with any
   user lightkube supports: a token or token file, client certificates, basic auth, or an exec credential plugin
   (``users[].user.exec``, apiVersion ``client.authentication.k8s.io/v1beta1`` or ``v1alpha1``: the command prints
   an ``ExecCredential`` JSON whose ``status.token`` is the bearer token; client-go ``pkg/apis/clientauthentication``,
   Kubernetes docs "client-go credential plugins");
2. ``FIXLOOP_KUBE_TOKEN``: a bearer token for ``FIXLOOP_KUBE_API_URL`` (CA ``FIXLOOP_KUBE_CA_FILE``), as the Flux
   reads (``fixloop.integrations.flux.KubeClient``) take it;
3. in a cluster: the service account at ``/var/run/secrets/kubernetes.io/serviceaccount`` (``token``, re-read when
   the kubelet rotates it, ``ca.crt``, ``namespace``) and ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``
   (Kubernetes docs "Accessing the Kubernetes API from a Pod");
4. ``$KUBECONFIG`` (its first path) or ``~/.kube/config``.

Reads (Kubernetes API reference, ``apps/v1`` and ``core/v1``): ``GET /apis/apps/v1/namespaces/{ns}/deployments/
{name}`` (``statefulsets``), and ``GET /api/v1/namespaces/{ns}/pods?labelSelector=<spec.selector>`` (matchLabels and
matchExpressions, paged by ``limit``/``continue``, at most ``MAX_PODS``). Objects are handed on as the API's JSON
(dicts, camelCase). Errors are those of ``fixloop.integrations.errors`` with system ``"kubernetes"``: an API
``Status`` -> ``status_error`` (401/403 ``AuthError``, 404 ``NotFound``, ...; the Status message bounded, never a
token), no answer -> ``TransportError``, configuration (missing file, failing exec plugin) -> ``IntegrationError``.
No call is retried here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import httpx
from lightkube import ApiError, Client, ConfigError, KubeConfig
from lightkube import operators as op
from lightkube.config.kubeconfig import DEFAULT_KUBECONFIG
from lightkube.config.models import Cluster, User
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import Pod

from fixloop.integrations.errors import ExceptionMap, IntegrationError, TransportError, map_exceptions, status_error
from fixloop.integrations.flux import IN_CLUSTER, MAX_MESSAGE, FluxSettings

SYSTEM = "kubernetes"
MAX_PODS = 500  # pods read per workload (a verdict stays bounded; a larger workload is judged on these)
PAGE = 250
Kind = Literal["Deployment", "StatefulSet"]
_RESOURCES = {"Deployment": Deployment, "StatefulSet": StatefulSet}


def _api_error(e: ApiError, what: str) -> Exception:
    message = " ".join(str(e.status.message or e.status.reason or "error").split())[:MAX_MESSAGE]
    return status_error(SYSTEM, e.status.code or e.response.status_code, f"{what}: {message}")


_ERRORS: ExceptionMap = {
    ApiError: _api_error,
    ConfigError: lambda e, what: IntegrationError(SYSTEM, f"{what}: configuration: {str(e)[:MAX_MESSAGE]}"),
    httpx.TimeoutException: lambda e, what: TransportError(SYSTEM, f"timeout reading {what}"),
    httpx.HTTPError: lambda e, what: TransportError(SYSTEM, f"{type(e).__name__} reading {what}"),
    OSError: lambda e, what: IntegrationError(SYSTEM, f"{what}: {type(e).__name__}: {str(e)[:MAX_MESSAGE]}"),
    # an exec plugin's output that is not an ExecCredential with status.token (json.loads, ["status"]["token"])
    ValueError: lambda e, what: IntegrationError(SYSTEM, f"{what}: the credential plugin's answer is not JSON"),
    KeyError: lambda e, what: IntegrationError(SYSTEM, f"{what}: the credential plugin's answer has no status.token"),
}


def in_cluster(service_account: Path | None = None) -> bool:
    """Whether this process runs in a pod: ``KUBERNETES_SERVICE_HOST`` set and a service account token mounted."""
    account = service_account or IN_CLUSTER
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (account / "token").is_file()


def kube_config(settings: FluxSettings, service_account: Path | None = None) -> KubeConfig:
    """The lightkube ``KubeConfig`` for ``settings`` (the order is the module docstring's); ``service_account``
    replaces the in-cluster directory (tests). ``IntegrationError`` when none is found or a file does not parse."""
    account = service_account or IN_CLUSTER
    with map_exceptions(_ERRORS, "the Kubernetes configuration"):
        if settings.kubeconfig is not None:
            return KubeConfig.from_file(settings.kubeconfig)
        if settings.token is not None:
            ca = str(settings.ca_file) if settings.ca_file else None
            cluster = Cluster(server=settings.api_url, certificate_auth=ca, insecure=not settings.verify_tls)
            return KubeConfig.from_one(cluster=cluster, user=User(token=settings.token.get_secret_value()))
        if in_cluster(account):
            return KubeConfig.from_service_account(account)
        path = Path((os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or DEFAULT_KUBECONFIG).expanduser()
        if path.is_file():
            return KubeConfig.from_file(path)
    raise IntegrationError(
        SYSTEM,
        "no Kubernetes credentials: set FIXLOOP_KUBE_KUBECONFIG or FIXLOOP_KUBE_TOKEN, run in a cluster, "
        "or provide $KUBECONFIG / ~/.kube/config",
    )


def selector(workload: dict[str, Any]) -> dict[str, Any]:
    """lightkube's label selector of ``spec.selector`` (``matchLabels`` and ``matchExpressions`` with In, NotIn,
    Exists, DoesNotExist; metav1.LabelSelector). ``IntegrationError`` for a workload without one (apps/v1 requires
    it) or an unknown operator."""
    spec = workload.get("spec") if isinstance(workload.get("spec"), dict) else {}
    sel = spec.get("selector") if isinstance(spec.get("selector"), dict) else {}
    labels: dict[str, Any] = {str(k): str(v) for k, v in (sel.get("matchLabels") or {}).items()}
    ops = {"In": op.in_, "NotIn": op.not_in}
    for expr in sel.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if operator in ops:
            labels[key] = ops[operator]([str(v) for v in values])
        elif operator == "Exists":
            labels[key] = op.exists()
        elif operator == "DoesNotExist":
            labels[key] = op.not_exists()
        else:
            raise IntegrationError(SYSTEM, f"unknown label selector operator {str(operator)[:40]!r}")
    if not labels:
        raise IntegrationError(SYSTEM, "the workload has no spec.selector: its pods cannot be found")
    return labels


class WorkloadClient:
    """Reads workloads and their pods (lightkube ``Client``: TLS verified as the configuration says, ``timeout``
    seconds per request). Use as a context manager or ``close()``."""

    def __init__(self, config: KubeConfig, *, context: str | None = None, timeout: float = 10.0) -> None:
        with map_exceptions(_ERRORS, "the Kubernetes configuration"):
            single = config.get(context_name=context)
            if single is None:
                raise IntegrationError(SYSTEM, "the kubeconfig has no context to use (set FIXLOOP_KUBE_CONTEXT)")
            self._client = Client(single, timeout=httpx.Timeout(timeout), trust_env=False)

    @classmethod
    def from_settings(cls, settings: FluxSettings, service_account: Path | None = None) -> WorkloadClient:
        """A client for ``settings`` (``kube_config``); errors as ``kube_config``."""
        return cls(kube_config(settings, service_account), context=settings.context, timeout=settings.timeout)

    def __enter__(self) -> WorkloadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get_workload(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        """The ``apps/v1`` ``kind`` ``namespace/name`` as the API's JSON; errors as the module docstring says."""
        what = f"{kind.lower()}s/{namespace}/{name}"
        with map_exceptions(_ERRORS, what):
            obj = self._client.get(_RESOURCES[kind], name, namespace=namespace).to_dict()
        obj.setdefault("apiVersion", "apps/v1")
        obj.setdefault("kind", kind)
        return obj

    def pods_of(self, workload: dict[str, Any]) -> list[dict[str, Any]]:
        """The pods ``workload``'s ``spec.selector`` selects in its namespace (at most ``MAX_PODS``), as JSON."""
        meta = workload.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        labels = selector(workload)
        what = f"pods/{namespace} of {meta.get('name', '?')}"
        with map_exceptions(_ERRORS, what):
            pods: Iterator[Pod] = iter(self._client.list(Pod, namespace=namespace, labels=labels, chunk_size=PAGE))
            return [p.to_dict() for p in islice(pods, MAX_PODS)]
