"""Flux: a Kustomization's status from the Kubernetes API, and notification-controller events.

Formats
  * Kustomization ``kustomize.toolkit.fluxcd.io/v1`` (fluxcd/kustomize-controller ``docs/spec/v1/kustomizations.md``,
    "Kustomization Status"): ``metadata.generation``, ``status.observedGeneration``, ``status.lastAppliedRevision``,
    ``status.lastAttemptedRevision`` and ``status.conditions[]`` (metav1.Condition: ``type``, ``status``
    "True"|"False"|"Unknown", ``reason``, ``message``, ``lastTransitionTime``). Read with
    ``GET {api}/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{ns}/kustomizations/{name}`` and a bearer token
    (Kubernetes API conventions; errors are ``Status`` objects ``{kind: Status, code, reason, message}``).
    ``spec.wait`` (bool) and ``spec.healthChecks[]`` (``{apiVersion, kind, name, namespace}``) are read too: with
    either, kustomize-controller health-checks what it applied (``wait``: every applied object; ``healthChecks``:
    those listed, e.g. a HelmRelease or a Deployment) within ``spec.timeout`` before it marks the Kustomization
    Ready=True (with a ``Healthy`` condition), and marks it Ready=False reason ``HealthCheckFailed`` otherwise; without
    either, Ready=True only means the manifests were applied, not that the workloads run
    (``kustomizations.md``, "Health checks").
  * HelmRelease ``helm.toolkit.fluxcd.io/v2`` (fluxcd/helm-controller ``docs/spec/v2/helmreleases.md``,
    "HelmRelease Status"; v2beta1/v2beta2 objects read the same way): read with
    ``GET {api}/apis/helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases/{name}`` and judged by
    ``fixloop.core.helmrelease.helmrelease`` (Ready, generations, ``history``, ``lastAttemptedRevision``).
  * Revisions (fluxcd/pkg ``apis/meta``, RFC-0005 "Artifact revision format"): ``<ref>@<algo>:<hash>`` since Flux
    2.0 (``main@sha1:<sha>``), ``<branch>/<sha>`` before (``master/<sha>``), or a bare ``sha1:<sha>`` / ``<sha>``.
  * Events (at most ``MAX_EVENT_BYTES``, decoded by the caller; fluxcd/notification-controller
    ``docs/spec/v1beta3/events.md`` "Event structure", posted by the ``generic`` / ``generic-hmac`` providers,
    ``providers.md``): ``{involvedObject{kind, namespace, name, uid,
    apiVersion, resourceVersion}, severity info|error, timestamp, message, reason, metadata{...},
    reportingController, reportingInstance}``; the revision is ``metadata["<api group>/revision"]`` since Flux 2.0
    and ``metadata["revision"]`` before. ``generic-hmac`` adds ``X-Signature: <hash function>=<hex HMAC of the
    body>`` keyed with the Provider secret's ``token``; the documented hash functions are sha224, sha256 (the
    default), sha384 and sha512.

Errors are those of ``fixloop.integrations.errors`` with system ``"flux"``; no call is retried here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.core.culprit import AppliedRevision
from fixloop.core.helmrelease import GROUP as HELM_GROUP
from fixloop.core.helmrelease import HelmReleaseVerdict, helmrelease
from fixloop.integrations.checks import CheckResult, Status, bounded, failed, hint
from fixloop.integrations.errors import (
    AuthError,
    ExceptionMap,
    IntegrationError,
    NotFound,
    TransportError,
    answer_error,
    map_exceptions,
    status_error,
)

SYSTEM = "flux"
KS_GROUP = "kustomize.toolkit.fluxcd.io"
MAX_EVENT_BYTES = 1 << 20  # notification-controller's own example reads at most 1 MiB
MAX_MESSAGE = 300  # chars of a server message kept in an error
MAX_HEALTH_CHECKS = 100  # spec.healthChecks entries kept in a KustomizationStatus
_HASHES: dict[str, Callable[..., Any]] = {
    "sha224": hashlib.sha224,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_SHA = re.compile(r"^[0-9a-f]{7,64}$")
IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class FluxSettings(BaseSettings):
    """``FIXLOOP_KUBE_API_URL`` (default the in-cluster ``https://kubernetes.default.svc``), ``FIXLOOP_KUBE_TOKEN``
    (else the in-cluster service account token file), ``FIXLOOP_KUBE_CA_FILE`` (PEM; in-cluster ``ca.crt`` when
    present), ``FIXLOOP_KUBE_VERIFY_TLS`` (default true), ``FIXLOOP_KUBE_TIMEOUT`` (seconds, default 10),
    ``FIXLOOP_KUBE_KUBECONFIG`` and ``FIXLOOP_KUBE_CONTEXT`` (the workload reads of ``fixloop.integrations.kube``),
    ``FIXLOOP_FLUX_HMAC_KEY``, the generic-hmac Provider's token that incoming events are verified with, and
    ``FIXLOOP_FLUX_KUSTOMIZATION``, the Kustomization (``namespace/name``, default ``flux-system/apps-production``)
    whose status tells whether a merge is deployed when the deploy stage names none."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_KUBE_", env_file=".env", extra="ignore")

    api_url: str = Field(
        default="https://kubernetes.default.svc", description="The Kubernetes API server Kustomizations are read from."
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token that may read Kustomizations (default: the in-cluster one)."
    )
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle of the API server (default: the in-cluster ca.crt when present)."
    )
    verify_tls: bool = Field(default=True, description="Verify the API server's TLS certificate.")
    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig file workloads and pods are read with (any user: token, certificates, exec plugin); "
        "default: FIXLOOP_KUBE_TOKEN, else in-cluster, else $KUBECONFIG or ~/.kube/config.",
    )
    context: str | None = Field(default=None, description="kubeconfig context (default: its current-context).")
    timeout: float = Field(default=10.0, gt=0, description="Seconds per HTTP request.")
    hmac_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FIXLOOP_FLUX_HMAC_KEY", "hmac_key"),
        description="Token of the generic-hmac Provider that incoming Flux events are verified with.",
    )
    kustomization: str = Field(
        default="flux-system/apps-production",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        validation_alias=AliasChoices("FIXLOOP_FLUX_KUSTOMIZATION", "kustomization"),
        description="namespace/name of the Kustomization that deploys a merge when the deploy stage names none.",
    )


def parse_revision(value: str) -> tuple[str | None, str]:
    """``(ref, sha)`` of a Flux source revision: ``main@sha1:<sha>`` -> ``("main", sha)``, ``master/<sha>`` ->
    ``("master", sha)``, ``sha1:<sha>`` and ``<sha>`` -> ``(None, sha)``; ``refs/heads/`` is dropped from the ref
    and the sha is lower-cased. ``ValueError`` for anything else."""
    text = value.strip()
    ref: str | None = None
    if "@" in text:
        ref, _, text = text.rpartition("@")
    elif "/" in text:
        ref, _, text = text.rpartition("/")
    algo, sep, digest = text.partition(":")
    if not sep:
        algo, digest = "", algo
    if algo not in ("", "sha1", "sha256") or not _SHA.match(digest.lower()) or ref == "":
        raise ValueError(f"not a Flux revision: {value[:100]!r}")
    if ref is not None:
        ref = ref.removeprefix("refs/heads/")
    return ref, digest.lower()


def _same_sha(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a == b or (min(len(a), len(b)) >= 7 and (a.startswith(b) or b.startswith(a)))


class Condition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: datetime | None = None
    observedGeneration: int | None = None


class HealthCheck(BaseModel):
    """A ``spec.healthChecks[]`` entry of a Kustomization (meta.NamespacedObjectKindReference)."""

    model_config = ConfigDict(extra="ignore")

    apiVersion: str | None = Field(default=None, max_length=300)
    kind: str = Field(max_length=100)
    name: str = Field(max_length=253)
    namespace: str | None = Field(default=None, max_length=63)


class KustomizationStatus(BaseModel):
    """What fixloop reads of a Kustomization. ``ready``: the Ready condition (``None`` when absent or Unknown);
    ``ready_since`` its ``lastTransitionTime`` (kustomize-controller moves Ready to Unknown at the start of each
    reconciliation, so after an apply it is when that reconciliation ended).
    ``wait`` / ``health_checks``: its ``spec.wait`` and ``spec.healthChecks`` (at most ``MAX_HEALTH_CHECKS``);
    ``health_checked`` says Ready=True includes kustomize-controller's health check of the applied workloads."""

    name: str
    namespace: str
    generation: int | None = None
    observed_generation: int | None = None
    ready: bool | None = None
    ready_reason: str | None = None
    ready_message: str | None = None
    ready_since: datetime | None = None  # the Ready condition's lastTransitionTime (timezone-aware)
    reconciling: bool = False
    last_applied_revision: str | None = None
    last_attempted_revision: str | None = None
    conditions: list[Condition] = []
    wait: bool = False
    health_checks: list[HealthCheck] = []

    @property
    def health_checked(self) -> bool:
        """``spec.wait`` or ``spec.healthChecks``: Ready=True then means the applied objects (``wait``) or the
        listed ones were healthy within ``spec.timeout``; Ready=False ``HealthCheckFailed`` when they were not."""
        return self.wait or bool(self.health_checks)

    @property
    def current(self) -> bool:
        """The status describes the current spec (``observedGeneration >= generation``; true when either is absent)."""
        return (
            self.generation is None or self.observed_generation is None or self.observed_generation >= self.generation
        )

    def _holds(self, revision: str | None, merge_sha: str, is_descendant: Callable[[str, str], bool] | None) -> bool:
        if not revision:
            return False
        try:
            _, sha = parse_revision(revision)
        except ValueError:
            return False
        return _same_sha(sha, merge_sha) or bool(is_descendant and is_descendant(sha, merge_sha))

    def applied(self, merge_sha: str, is_descendant: Callable[[str, str], bool] | None = None) -> bool:
        """Whether the merge is deployed: Ready=True, the status is current, and ``lastAppliedRevision`` holds
        ``merge_sha`` or (with ``is_descendant(applied_sha, merge_sha)``, e.g. a git ancestry check) a commit that
        descends from it. A later commit on the branch deploys the merge too; without ``is_descendant`` only the
        exact sha counts."""
        return bool(self.ready) and self.current and self._holds(self.last_applied_revision, merge_sha, is_descendant)

    def failed(self, merge_sha: str, is_descendant: Callable[[str, str], bool] | None = None) -> bool:
        """Whether Flux tried the merge (or a descendant) and failed: Ready=False, ``lastAttemptedRevision`` holds
        it, and it is not applied. Flux retries at ``retryInterval``; a later fix on the branch may still recover."""
        return (
            self.ready is False
            and self._holds(self.last_attempted_revision, merge_sha, is_descendant)
            and not self._holds(self.last_applied_revision, merge_sha, is_descendant)
        )


def kustomization_status(obj: dict[str, Any]) -> KustomizationStatus:
    """The ``KustomizationStatus`` of a Kustomization object (a dict as the API serves it)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
    ready = next((c for c in conditions if c.type == "Ready"), None)
    checks = spec.get("healthChecks") if isinstance(spec.get("healthChecks"), list) else []
    return KustomizationStatus(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        generation=meta.get("generation"),
        observed_generation=status.get("observedGeneration"),
        ready=None if ready is None or ready.status == "Unknown" else ready.status == "True",
        ready_reason=ready.reason if ready else None,
        ready_message=ready.message if ready else None,
        ready_since=_aware(ready.lastTransitionTime) if ready and ready.lastTransitionTime else None,
        reconciling=any(c.type == "Reconciling" and c.status == "True" for c in conditions),
        last_applied_revision=status.get("lastAppliedRevision"),
        last_attempted_revision=status.get("lastAttemptedRevision"),
        conditions=conditions,
        wait=spec.get("wait") is True,
        health_checks=[HealthCheck.model_validate(c) for c in checks[:MAX_HEALTH_CHECKS]],
    )


# httpx's exceptions as ``fixloop.integrations.errors`` (``map_exceptions``; ``what`` is resource/namespace/name).
_TRANSPORT_ERRORS: ExceptionMap = {
    httpx.TimeoutException: lambda e, what: TransportError(SYSTEM, f"timeout reading {what}"),
    httpx.HTTPError: lambda e, what: TransportError(SYSTEM, f"{type(e).__name__} reading {what}"),
}
_BODY_ERRORS: ExceptionMap = {ValueError: answer_error(SYSTEM, "the answer is not JSON")}


class KubeClient:
    """Reads Flux objects from a Kubernetes API server over HTTPS with a bearer token (httpx, TLS verified unless
    ``verify=False`` is asked for; ``verify`` may be a CA bundle path). Use as a context manager or ``close()``."""

    def __init__(
        self,
        api_url: str,
        token: SecretStr | str,
        *,
        verify: bool | str = True,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._http = httpx.Client(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"},
            verify=verify,
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: FluxSettings) -> KubeClient:
        """A client for ``settings``; without a token, the in-cluster service account (token and CA) is used.
        ``IntegrationError`` if there is no token at all."""
        token = settings.token
        ca = settings.ca_file
        if token is None and (IN_CLUSTER / "token").is_file():
            token = SecretStr((IN_CLUSTER / "token").read_text().strip())
            ca = ca or ((IN_CLUSTER / "ca.crt") if (IN_CLUSTER / "ca.crt").is_file() else None)
        if token is None:
            raise IntegrationError(SYSTEM, "no Kubernetes API token (set FIXLOOP_KUBE_TOKEN)")
        verify: bool | str = str(ca) if (ca and settings.verify_tls) else settings.verify_tls
        return cls(settings.api_url, token, verify=verify, timeout=settings.timeout)

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get_object(self, group: str, version: str, resource: str, namespace: str, name: str) -> dict[str, Any]:
        """``GET /apis/{group}/{version}/namespaces/{namespace}/{resource}/{name}`` as a dict. ``AuthError``
        (401/403), ``NotFound`` (404), other ``HttpStatusError``s, ``TransportError``; messages carry the API
        server's ``Status.message`` (bounded), never the token."""
        path = f"/apis/{group}/{version}/namespaces/{namespace}/{resource}/{name}"
        what = f"{resource}/{namespace}/{name}"
        with map_exceptions(_TRANSPORT_ERRORS, what):
            resp = self._http.get(path)
        if not resp.is_success:
            raise status_error(SYSTEM, resp.status_code, _status_message(resp))
        with map_exceptions(_BODY_ERRORS, what):
            body = resp.json()
        if not isinstance(body, dict):
            raise IntegrationError(SYSTEM, f"{what}: the answer is not an object")
        return body

    def get_kustomization(self, namespace: str, name: str) -> KustomizationStatus:
        """The status of Kustomization ``namespace/name`` (``kustomize.toolkit.fluxcd.io/v1``); errors as
        ``get_object``, plus ``IntegrationError`` for an object whose status does not parse."""
        obj = self.get_object(KS_GROUP, "v1", "kustomizations", namespace, name)
        try:
            return kustomization_status(obj)
        except ValidationError as e:
            raise IntegrationError(
                SYSTEM, f"kustomization {namespace}/{name}: bad status ({e.error_count()} errors)"
            ) from None

    def get_helmrelease(self, namespace: str, name: str, version: str = "v2") -> HelmReleaseVerdict:
        """The verdict of HelmRelease ``namespace/name`` (``helm.toolkit.fluxcd.io/<version>``, ``v2`` by default;
        ``fixloop.core.helmrelease``, which reads any object without raising); errors as ``get_object``."""
        return helmrelease(self.get_object(HELM_GROUP, version, "helmreleases", namespace, name))


def _status_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        message = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return " ".join(str(message or resp.reason_phrase or "error").split())[:MAX_MESSAGE]


class InvolvedObject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None
    apiVersion: str | None = None
    resourceVersion: str | None = None


class FluxEvent(BaseModel):
    """A Flux event (``events.md`` "Event structure"). ``revision``/``ref``/``sha`` come from the metadata."""

    model_config = ConfigDict(extra="ignore")

    involvedObject: InvolvedObject
    severity: str
    timestamp: datetime
    message: str = ""
    reason: str
    metadata: dict[str, str] = {}
    reportingController: str
    reportingInstance: str | None = None

    @property
    def revision(self) -> str | None:
        """``metadata["<group of involvedObject.apiVersion>/revision"]`` (Flux >= 2.0), else any
        ``<group>/revision``, else ``metadata["revision"]`` (older controllers)."""
        group = (self.involvedObject.apiVersion or "").split("/")[0]
        if group and f"{group}/revision" in self.metadata:
            return self.metadata[f"{group}/revision"]
        for key, value in self.metadata.items():
            if key.endswith("/revision"):
                return value
        return self.metadata.get("revision")

    @property
    def ref(self) -> str | None:
        return self._parsed[0]

    @property
    def sha(self) -> str | None:
        return self._parsed[1]

    @property
    def _parsed(self) -> tuple[str | None, str | None]:
        try:
            return parse_revision(self.revision) if self.revision else (None, None)
        except ValueError:
            return None, None


class FluxEventError(ValueError):
    """The body is not a Flux event; ``str(e)`` says why (bounded, no body)."""


def parse_event(doc: object) -> FluxEvent:
    """The ``FluxEvent`` of a generic(-hmac) provider's decoded JSON body (the caller decodes it once, with its
    size and nesting limits, e.g. ``fixloop.app.ingest.decode``: this does no JSON parsing); ``FluxEventError`` if it
    is not an event."""
    try:
        return FluxEvent.model_validate(doc)
    except ValidationError as e:
        fields = ", ".join(".".join(map(str, err["loc"])) for err in e.errors()[:5])
        raise FluxEventError(f"not a Flux event (invalid: {fields})") from None


def verify_signature(body: bytes, header: str | None, key: SecretStr | str | bytes) -> bool:
    """Whether ``header`` (``X-Signature: <sha224|sha256|sha384|sha512>=<hex>``) is the HMAC of ``body`` with
    ``key``; constant-time compare. A missing or malformed header, or another hash function, is ``False``."""
    if not header:
        return False
    algo, sep, given = header.strip().partition("=")
    digest = _HASHES.get(algo.strip().lower())
    if not sep or digest is None or not given:
        return False
    raw = key.get_secret_value() if isinstance(key, SecretStr) else key
    raw_key = raw.encode() if isinstance(raw, str) else raw
    expected = hmac.new(raw_key, body, digest).hexdigest()
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def applied_revisions(
    status: KustomizationStatus | None, events: Iterable[FluxEvent] = (), kustomization: str | None = None
) -> list[AppliedRevision]:
    """What Flux applied and when, from what real Flux offers (no history is kept on the object itself):

    * the Kustomization's status: ``lastAppliedRevision`` at its ``Ready=True`` condition's ``lastTransitionTime``,
      when the status is current. kustomize-controller marks Ready Unknown at the start of every reconciliation,
      so that time is when the last reconciliation ended Ready: the revision was applied then or earlier (an upper
      bound);
    * notification-controller events of the Kustomization (``kustomization``: ``namespace/name``, None: any) the
      gateway received: severity ``info``, reason ``ReconciliationSucceeded``, with a revision: applied at the
      event's ``timestamp``.

    Sorted by time, then sha, duplicates removed; events without a parsable revision are skipped."""
    out: set[tuple[datetime, str, str, str]] = set()
    if status is not None and status.ready and status.current and status.last_applied_revision:
        ready = next((c for c in status.conditions if c.type == "Ready" and c.status == "True"), None)
        try:
            _, sha = parse_revision(status.last_applied_revision)
        except ValueError:
            sha = None
        if ready is not None and ready.lastTransitionTime is not None and sha:
            out.add((_aware(ready.lastTransitionTime), sha, status.last_applied_revision[:300], "status"))
    for e in events:
        obj = e.involvedObject
        if obj.kind != "Kustomization" or e.reason != "ReconciliationSucceeded" or e.severity.lower() != "info":
            continue
        if kustomization is not None and f"{obj.namespace or ''}/{obj.name}" != kustomization:
            continue
        if e.sha is not None and e.revision:
            out.add((_aware(e.timestamp), e.sha, e.revision[:300], "event"))
    return [AppliedRevision(at=at, sha=sha, revision=rev, source=src) for at, sha, rev, src in sorted(out)]


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def check(settings: FluxSettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s flux line: the Kustomization FIXLOOP_FLUX_KUSTOMIZATION on the Kubernetes API
    (``kustomize.toolkit.fluxcd.io/v1``), with its Ready condition and last applied revision; bounded by
    ``timeout`` seconds."""
    target = settings.api_url.rstrip("/")
    namespace, _, name = settings.kustomization.partition("/")
    hints: dict[type[IntegrationError], str] = {
        AuthError: "FIXLOOP_KUBE_TOKEN, which must read kustomizations.kustomize.toolkit.fluxcd.io",
        NotFound: "FIXLOOP_FLUX_KUSTOMIZATION",
        TransportError: "FIXLOOP_KUBE_API_URL, FIXLOOP_KUBE_CA_FILE",
    }
    try:
        with KubeClient.from_settings(bounded(settings, timeout)) as client:
            status = client.get_kustomization(namespace, name)
    except IntegrationError as e:
        return failed("flux", target, e, hint(e, hints, "FIXLOOP_KUBE_API_URL"))
    ready = {True: "Ready", False: f"not Ready ({status.ready_reason or '?'})", None: "Ready unknown"}[status.ready]
    applied = status.last_applied_revision or "nothing applied yet"
    return CheckResult(Status.OK, "flux", f"{target} kustomization {settings.kustomization}: {ready}, {applied}")
