"""``fixloop config check``: validate the configuration, then try each configured endpoint, one line per check.

First every settings group (``fixloop.app.configref.GROUPS``) is read from the environment (and ``.env``); an invalid
variable is a ``FAIL config`` line naming it with pydantic's reason, never its value. Then each configured system
gets its cheapest authenticated call on its own typed client, bounded by ``timeout`` seconds per request (Temporal's
check is here; each integration's is its module's ``check(settings, timeout)``, answering a
``fixloop.integrations.checks.CheckResult``):

=========  ===============================================================================================
temporal   connect (``fixloop.app.temporal.connect``: TLS, API key, mTLS files), ``DescribeNamespace``, and
           ``DescribeTaskQueue`` of the task queue (how many workers poll it: informative, never a failure)
search     fixloop's search attributes in that namespace (``ListSearchAttributes``; missing ones fail the check:
           a loop that sets one stalls), naming the missing and the command that registers them
jira       ``GET /myself`` (URL, email, API token), then a JQL search in the project (Jira refuses an
           unknown project with 400)
gitlab     ``GET /user`` (URL, token; the user must be ``FIXLOOP_GITLAB_BOT_USERNAME``, whose approvals
           never count), then ``GET /projects/:id`` (the project exists and the token sees it)
registry   ``GET /v2/`` (the OCI distribution API answers and takes the token)
flux       the Kustomization ``FIXLOOP_FLUX_KUSTOMIZATION`` on the Kubernetes API (``kustomize.toolkit
           .fluxcd.io/v1``), with its Ready condition and last applied revision
datadog    ``GET /api/v1/validate`` (API key), then a metric query over the last five minutes (the
           application key and the metrics-read permission verification needs)
prometheus ``GET /api/v1/status/buildinfo`` (the version), then the instant query ``vector(1)``
alertmanager ``GET /api/v2/status`` (version, cluster), then ``GET /api/v2/alerts`` with an ``alertname``
           filter (the filters alert recovery sends are taken)
llm        ``GET {base_url}/models`` on the OpenAI-compatible endpoint (``openai``), and whether the model
           is listed (informative: some providers list deployments under other names)
=========  ===============================================================================================

A system that is not configured is a ``skip`` line saying which variable enables it. Failures are the
integrations' mapped errors (``fixloop.integrations.errors``: status, the server's short reason) with the variable to
check; no stack trace, and every configured secret is masked in every line in case a server echoes one.

Exit status (``Report.exit_code``): 0 when every configured check passed, 1 when one failed, 2 when the
configuration is invalid.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from fixloop.app.configref import GROUPS, env_names
from fixloop.app.temporal import connect, search_attributes, tls_config
from fixloop.core.config import ConfigError, LlmSettings, TemporalSettings
from fixloop.integrations.alertmanager.api import AlertmanagerSettings
from fixloop.integrations.alertmanager.api import check as check_alertmanager
from fixloop.integrations.checks import CheckResult, Status
from fixloop.integrations.datadog.api import DatadogSettings
from fixloop.integrations.datadog.api import check as check_datadog
from fixloop.integrations.flux import FluxSettings
from fixloop.integrations.flux import check as check_flux
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.integrations.gitlab.api import check as check_gitlab
from fixloop.integrations.jira import JiraSettings
from fixloop.integrations.jira import check as check_jira
from fixloop.integrations.llm import check as check_llm
from fixloop.integrations.prometheus import PrometheusSettings
from fixloop.integrations.prometheus import check as check_prometheus
from fixloop.integrations.registry import RegistrySettings
from fixloop.integrations.registry import check as check_registry
from fixloop.workflows.options import SEARCH_ATTRIBUTES

CHECK_TIMEOUT = 5.0  # seconds per request of a check
SYSTEMS = ("temporal", "jira", "gitlab", "registry", "flux", "datadog", "prometheus", "alertmanager", "llm")
SETUP = "fixloop temporal setup"
S = TypeVar("S", bound=BaseSettings)


@dataclass
class Report:
    lines: list[CheckResult]
    invalid: bool  # a settings group did not validate

    @property
    def exit_code(self) -> int:
        """2: invalid configuration; 1: a check failed; 0: every configured check passed."""
        if self.invalid:
            return 2
        return 1 if any(line.status is Status.FAIL for line in self.lines) else 0

    def failed(self) -> list[str]:
        """The names with a ``FAIL`` line."""
        return [line.name for line in self.lines if line.status is Status.FAIL]

    def __str__(self) -> str:
        return "\n".join(str(line) for line in self.lines)


# -- reading the settings ---------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """Each group as read; a system's settings are None when it is not configured (``skipped[name]`` says why) or
    invalid (``errors`` says why, one ``VARIABLE: reason`` each)."""

    temporal: TemporalSettings | None = None
    jira: JiraSettings | None = None
    gitlab: GitLabSettings | None = None
    registry: RegistrySettings | None = None
    flux: FluxSettings | None = None
    datadog: DatadogSettings | None = None
    prometheus: PrometheusSettings | None = None
    alertmanager: AlertmanagerSettings | None = None
    llm: LlmSettings | None = None
    errors: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)  # systems whose settings did not validate
    read: list[BaseSettings] = field(default_factory=list)  # every group that validated

    def secrets(self) -> list[str]:
        """Every secret value read (to mask it in output)."""
        out = []
        for s in self.read:
            for name in type(s).model_fields:
                value = getattr(s, name)
                if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
                    out.append(value.get_secret_value())
        return out


def variable_errors(cls: type[BaseSettings], e: ValidationError) -> list[str]:
    """``VARIABLE: reason`` per error of ``e`` (raised by ``cls()``), never the value."""
    out = []
    for err in e.errors(include_url=False, include_input=False):
        loc = str(err["loc"][0]) if err.get("loc") else ""
        f = cls.model_fields.get(loc)
        name = env_names(cls, loc, f)[0] if f is not None else (loc or "*")  # an alias is the variable
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(f"{name}: {reason}")
    return out


def _read(loaded: Loaded, cls: type[S], system: str | None = None, key: str | None = None) -> S | None:
    """``cls()``; None (recorded in ``loaded``) when ``key`` is missing (the system is not configured) or when
    anything is invalid."""
    try:
        settings = cls()
    except ValidationError as e:
        if key is not None and any(
            err["type"] == "missing" and tuple(err["loc"]) == (key,) for err in e.errors(include_input=False)
        ):
            assert system is not None
            loaded.skipped[system] = f"not configured ({env_names(cls, key, cls.model_fields[key])[0]} unset)"
            return None
        loaded.errors += variable_errors(cls, e)
        if system:
            loaded.invalid.add(system)
        return None
    loaded.read.append(settings)
    return settings


IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def load_settings() -> Loaded:
    """Every settings group from the environment, as the commands read them (systems configured as the worker
    decides: ``fixloop.app.worker.Integrations.from_env``)."""
    loaded = Loaded()
    systems = (
        TemporalSettings,
        JiraSettings,
        GitLabSettings,
        RegistrySettings,
        DatadogSettings,
        PrometheusSettings,
        AlertmanagerSettings,
        FluxSettings,
    )
    for group in GROUPS:  # the groups without an endpoint (intake, gateway, worker, ...): validated only
        cls = group.load_class()
        if cls not in (*systems, LlmSettings):
            _read(loaded, cls)
    loaded.temporal = _read(loaded, TemporalSettings, "temporal")
    if loaded.temporal is not None:
        try:
            tls_config(loaded.temporal)  # the TLS files must be readable
        except ConfigError as e:
            loaded.errors.append(str(e))
            loaded.invalid.add("temporal")
            loaded.temporal = None
    loaded.jira = _read(loaded, JiraSettings, "jira", "url")
    loaded.gitlab = _read(loaded, GitLabSettings, "gitlab", "url")
    loaded.registry = _read(loaded, RegistrySettings, "registry", "url")
    loaded.datadog = _read(loaded, DatadogSettings, "datadog", "api_key")
    loaded.prometheus = _read(loaded, PrometheusSettings, "prometheus", "url")
    loaded.alertmanager = _read(loaded, AlertmanagerSettings, "alertmanager", "url")
    flux = _read(loaded, FluxSettings, "flux")
    if flux is not None:
        if not ({"api_url", "token"} & flux.model_fields_set or IN_CLUSTER_TOKEN.exists()):
            loaded.skipped["flux"] = "not configured (FIXLOOP_KUBE_API_URL and FIXLOOP_KUBE_TOKEN unset)"
        elif flux.token is None and not IN_CLUSTER_TOKEN.exists():
            loaded.errors.append(
                "FIXLOOP_KUBE_TOKEN: required outside a cluster (a token that may read Kustomizations)"
            )
            loaded.invalid.add("flux")
        else:
            loaded.flux = flux
    llm = _read(loaded, LlmSettings, "llm")
    if llm is not None:
        if not {"base_url", "model"} & llm.model_fields_set:
            loaded.skipped["llm"] = "not configured (FIXLOOP_LLM_BASE_URL unset)"
        else:
            try:
                llm.require()
                loaded.llm = llm
            except ConfigError as e:
                loaded.errors.append(str(e))
                loaded.invalid.add("llm")
    return loaded


# -- the checks: Temporal's here, each integration's in its module (``check(settings, timeout)``) ----------------
_CONNECT_FAILURES = (  # (pattern of the SDK core's error, what it means or None to quote it, variables to check)
    (
        r"InvalidContentType|WrongVersion|CorruptMessage",
        "TLS handshake failed: the server does not speak TLS",
        "FIXLOOP_TEMPORAL_TLS (TLS is also implied by FIXLOOP_TEMPORAL_API_KEY and the TLS files)",
    ),
    (r"(?i)UnknownIssuer|certificate|BadSignature|NotValidForName", None, "FIXLOOP_TEMPORAL_TLS_CA"),
    (
        r"(?i)unauthenticated|permission|unauthori",
        None,
        "FIXLOOP_TEMPORAL_API_KEY, FIXLOOP_TEMPORAL_TLS_CERT and FIXLOOP_TEMPORAL_TLS_KEY",
    ),
    (
        r"(?i)connection reset|broken pipe|h2 protocol|frame",
        None,
        "FIXLOOP_TEMPORAL_ADDRESS and FIXLOOP_TEMPORAL_TLS (a TLS server refuses a plain connection)",
    ),
)


def _temporal_failure(e: BaseException) -> tuple[str, str]:
    """``(reason, variables to check)`` of a failed connect; the core's message is a Rust debug string, so the
    reason is its quoted ``message``, else the text after the SDK's prefixes, bounded."""
    text = " ".join(str(e).split())
    found = re.search(r'message: "([^"]{1,200})"', text)
    quoted = found.group(1) if found else None
    if quoted is None:
        quoted = text.removeprefix("Failed client connect: ").removeprefix("Server connection error: ")[:200]
    for pattern, meaning, check in _CONNECT_FAILURES:
        if re.search(pattern, text):
            return meaning or quoted, check
    return quoted or type(e).__name__, "FIXLOOP_TEMPORAL_ADDRESS"


async def check_temporal(s: TemporalSettings, timeout: float) -> CheckResult:
    """Connect, ``DescribeNamespace``, ``DescribeTaskQueue`` (workflow pollers of the task queue)."""
    return (await _check_temporal(s, timeout))[0]


async def check_temporal_and_search_attributes(s: TemporalSettings, timeout: float) -> list[CheckResult]:
    """The ``temporal`` line, then the ``search`` line (skipped when Temporal could not be checked)."""
    line, client = await _check_temporal(s, timeout)
    if client is None:
        return [line, CheckResult(Status.SKIP, "search", "not checked (see the temporal line)")]
    return [line, await check_search_attributes(client, s, timeout)]


async def check_search_attributes(client: Client, s: TemporalSettings, timeout: float) -> CheckResult:
    """Whether every ``Fixloop*`` search attribute is registered in ``s.namespace`` as Keyword."""
    where = f"namespace {s.namespace}"
    try:
        found = await asyncio.wait_for(search_attributes(client, s.namespace, timeout), timeout)
    except TimeoutError:
        return CheckResult(Status.FAIL, "search", f"{where}: no answer to ListSearchAttributes within {timeout:g} s")
    except RPCError as e:
        reason = " ".join(e.message.split())[:200]
        return CheckResult(Status.FAIL, "search", f"{where}: cannot list search attributes: {e.status.name}: {reason}")
    if found.conflicting:
        types = ", ".join(f"{name} is {kind}" for name, kind in found.conflicting.items())
        return CheckResult(Status.FAIL, "search", f"{where}: not Keyword: {types} (remove them, then run {SETUP})")
    if found.missing:
        listed = ", ".join(found.missing)
        return CheckResult(Status.FAIL, "search", f"{where}: search attributes not registered: {listed} (run {SETUP})")
    return CheckResult(Status.OK, "search", f"{where}: fixloop's {len(SEARCH_ATTRIBUTES)} search attributes registered")


async def _check_temporal(s: TemporalSettings, timeout: float) -> tuple[CheckResult, Client | None]:
    """``check_temporal``'s line, and the client when the namespace answered (None: the line is a failure)."""
    target = s.address
    auth_vars = "FIXLOOP_TEMPORAL_API_KEY, FIXLOOP_TEMPORAL_TLS_CERT and FIXLOOP_TEMPORAL_TLS_KEY"
    rpc_timeout = timedelta(seconds=timeout)
    try:
        client = await asyncio.wait_for(connect(s), timeout)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=s.namespace), timeout=rpc_timeout
        )
    except TimeoutError:
        hint = "FIXLOOP_TEMPORAL_ADDRESS and FIXLOOP_TEMPORAL_TLS"
        return CheckResult(Status.FAIL, "temporal", f"{target}: no answer within {timeout:g} s (check {hint})"), None
    except RPCError as e:
        if e.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            hint = auth_vars
        elif e.status is RPCStatusCode.NOT_FOUND:
            hint = "FIXLOOP_TEMPORAL_NAMESPACE"
        else:
            hint = "FIXLOOP_TEMPORAL_ADDRESS"
        reason = " ".join(e.message.split())[:200]
        return CheckResult(Status.FAIL, "temporal", f"{target}: {e.status.name}: {reason} (check {hint})"), None
    except RuntimeError as e:  # the SDK's "Failed client connect: ..." (refused, DNS, TLS handshake, auth)
        reason, hint = _temporal_failure(e)
        return CheckResult(Status.FAIL, "temporal", f"{target}: cannot connect: {reason} (check {hint})"), None
    try:  # informative only: a key allowed to run workflows may not be allowed to describe task queues
        queue = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=s.namespace,
                task_queue=TaskQueue(name=s.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=rpc_timeout,
        )
        pollers = len(queue.pollers)
        polling = f"{pollers} worker{'s' if pollers != 1 else ''} polling" if pollers else "no worker polling"
    except RPCError as e:
        polling = f"not described ({e.status.name})"
    tls = ", TLS" if s.uses_tls else ""
    text = f"{target} namespace {s.namespace}{tls} (task queue {s.task_queue}: {polling})"
    return CheckResult(Status.OK, "temporal", text), client


_SYNC_CHECKS: dict[str, Callable[[Any, float], CheckResult]] = {
    "jira": check_jira,
    "gitlab": check_gitlab,
    "registry": check_registry,
    "flux": check_flux,
    "datadog": check_datadog,
    "prometheus": check_prometheus,
    "alertmanager": check_alertmanager,
    "llm": check_llm,
}


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


async def run_checks(timeout: float = CHECK_TIMEOUT) -> Report:
    """Read the configuration and check every configured endpoint (concurrently, blocking clients in threads);
    the report lists ``config`` first, then ``SYSTEMS`` in order."""
    loaded = load_settings()
    lines = [CheckResult(Status.FAIL, "config", error) for error in loaded.errors]
    if not loaded.errors:
        configured = [name for name in SYSTEMS if getattr(loaded, name) is not None]
        env_file = " and ./.env" if Path(".env").is_file() else ""
        lines.append(
            CheckResult(
                Status.OK,
                "config",
                f"settings valid (environment{env_file}); configured: {', '.join(configured) or 'none'}",
            )
        )

    async def one(name: str) -> list[CheckResult]:
        settings = getattr(loaded, name)
        if settings is None:
            why = "invalid configuration (see the config lines)" if name in loaded.invalid else loaded.skipped[name]
            skipped = [CheckResult(Status.SKIP, name, why)]
            if name == "temporal":
                skipped.append(CheckResult(Status.SKIP, "search", "not checked (see the temporal line)"))
            return skipped
        if name == "temporal":
            return await check_temporal_and_search_attributes(settings, timeout)
        try:  # the clients bound each request by `timeout`; a check makes two or three requests
            return [await asyncio.wait_for(asyncio.to_thread(_SYNC_CHECKS[name], settings, timeout), 4 * timeout)]
        except TimeoutError:
            return [CheckResult(Status.FAIL, name, f"no answer within {4 * timeout:g} s")]

    results = [r for found in await asyncio.gather(*(one(name) for name in SYSTEMS)) for r in found]
    secrets = loaded.secrets()
    lines += [CheckResult(r.status, r.name, _mask(r.text, secrets)) for r in results]
    masked = [CheckResult(x.status, x.name, _mask(x.text, secrets)) for x in lines]
    return Report(lines=masked, invalid=bool(loaded.errors))
