"""``fixloop config check``: validate the configuration, then try each configured endpoint, one line per check.

First every settings group (``fixloop.app.configref.GROUPS``) is read from the environment (and ``.env``); an invalid
variable is a ``FAIL config`` line naming it with pydantic's reason, never its value. Then each configured system
gets its cheapest authenticated call on its own typed client, bounded by ``timeout`` seconds per request:

=========  ===============================================================================================
temporal   connect (``fixloop.app.temporal.connect``: TLS, API key, mTLS files), ``DescribeNamespace``, and
           ``DescribeTaskQueue`` of the task queue (how many workers poll it: informative, never a failure)
jira       ``GET /myself`` (URL, email, API token), then a JQL search in the project (Jira refuses an
           unknown project with 400)
gitlab     ``GET /user`` (URL, token; the user must be ``FIXLOOP_GITLAB_BOT_USERNAME``, whose approvals
           never count), then ``GET /projects/:id`` (the project exists and the token sees it)
registry   ``GET /v2/`` (the OCI distribution API answers and takes the token)
flux       the Kustomization ``FIXLOOP_FLUX_KUSTOMIZATION`` on the Kubernetes API (``kustomize.toolkit
           .fluxcd.io/v1``), with its Ready condition and last applied revision
datadog    ``GET /api/v1/validate`` (API key), then a metric query over the last five minutes (the
           application key and the metrics-read permission verification needs)
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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from fixloop.app.configref import env_names
from fixloop.core.config import ConfigError, LlmSettings, TemporalSettings
from fixloop.integrations.datadog.api import DatadogSettings
from fixloop.integrations.errors import AuthError, IntegrationError, Invalid, NotFound, TransportError
from fixloop.integrations.flux import FluxSettings
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.integrations.jira import JiraSettings
from fixloop.integrations.registry import RegistrySettings

CHECK_TIMEOUT = 5.0  # seconds per request of a check
DATADOG_PROBE = "avg:datadog.estimated_usage.hosts{*}"  # a metric every Datadog org has; empty is fine
SYSTEMS = ("temporal", "jira", "gitlab", "registry", "flux", "datadog", "llm")
S = TypeVar("S", bound=BaseSettings)


class Status(StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class Line:
    """One check's result: ``status``, ``name`` (``config`` or a system of ``SYSTEMS``) and what was found."""

    status: Status
    name: str
    text: str

    def __str__(self) -> str:
        return f"{self.status.value:<4} {self.name:<9} {self.text}"


@dataclass
class Report:
    lines: list[Line]
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
    from fixloop.app.configref import GROUPS
    from fixloop.app.temporal import tls_config

    loaded = Loaded()
    systems = (TemporalSettings, JiraSettings, GitLabSettings, RegistrySettings, DatadogSettings, FluxSettings)
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


# -- the checks ---------------------------------------------------------------------------------------------------
def _hint(e: IntegrationError, hints: dict[type[IntegrationError], str], default: str) -> str:
    """The variables to look at for ``e``: the first of ``hints`` whose class ``e`` is, else ``default``."""
    return next((v for cls, v in hints.items() if isinstance(e, cls)), default)


def _fail(name: str, target: str, e: IntegrationError, check: str) -> Line:
    return Line(Status.FAIL, name, f"{target}: {e.message} (check {check})")


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


async def check_temporal(s: TemporalSettings, timeout: float) -> Line:
    """Connect, ``DescribeNamespace``, ``DescribeTaskQueue`` (workflow pollers of the task queue)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
    from temporalio.service import RPCError, RPCStatusCode

    from fixloop.app.temporal import connect

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
        return Line(Status.FAIL, "temporal", f"{target}: no answer within {timeout:g} s (check {hint})")
    except RPCError as e:
        if e.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            hint = auth_vars
        elif e.status is RPCStatusCode.NOT_FOUND:
            hint = "FIXLOOP_TEMPORAL_NAMESPACE"
        else:
            hint = "FIXLOOP_TEMPORAL_ADDRESS"
        reason = " ".join(e.message.split())[:200]
        return Line(Status.FAIL, "temporal", f"{target}: {e.status.name}: {reason} (check {hint})")
    except RuntimeError as e:  # the SDK's "Failed client connect: ..." (refused, DNS, TLS handshake, auth)
        reason, hint = _temporal_failure(e)
        return Line(Status.FAIL, "temporal", f"{target}: cannot connect: {reason} (check {hint})")
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
    return Line(Status.OK, "temporal", f"{target} namespace {s.namespace}{tls} (task queue {s.task_queue}: {polling})")


def _bounded(settings: S, timeout: float) -> S:
    """``settings`` with its per-request ``timeout`` at most ``timeout``."""
    return settings.model_copy(update={"timeout": min(float(getattr(settings, "timeout", timeout)), timeout)})


def check_jira(s: JiraSettings, timeout: float) -> Line:
    from fixloop.integrations.jira import JiraClient

    target = str(s.url).rstrip("/")
    client = JiraClient(_bounded(s, timeout))
    try:
        me = client.check()
    except IntegrationError as e:
        auth = "FIXLOOP_JIRA_EMAIL and FIXLOOP_JIRA_API_TOKEN"
        return _fail("jira", target, e, _hint(e, {AuthError: auth}, "FIXLOOP_JIRA_URL"))
    try:
        client.find_issue("config-check")  # JQL on the project: Jira answers 400 for one that does not exist
    except IntegrationError as e:
        hints = {AuthError: "the user's permissions in FIXLOOP_JIRA_PROJECT", Invalid: "FIXLOOP_JIRA_PROJECT"}
        return _fail("jira", target, e, _hint(e, hints, "FIXLOOP_JIRA_URL"))
    who = me.display_name or me.email or me.account_id or "?"
    return Line(Status.OK, "jira", f"{target} as {who}, project {s.project}")


def check_gitlab(s: GitLabSettings, timeout: float) -> Line:
    from fixloop.integrations.gitlab.api import GitLabClient

    target = str(s.url).rstrip("/")
    client = GitLabClient(_bounded(s, timeout))
    try:
        user = client.check()
    except IntegrationError as e:
        return _fail("gitlab", target, e, _hint(e, {AuthError: "FIXLOOP_GITLAB_TOKEN"}, "FIXLOOP_GITLAB_URL"))
    if user.username != s.bot_username:
        return Line(
            Status.FAIL,
            "gitlab",
            f"{target}: the token is {user.username}'s but FIXLOOP_GITLAB_BOT_USERNAME is {s.bot_username}: "
            "fixloop's own approvals would count as a human's (check FIXLOOP_GITLAB_BOT_USERNAME)",
        )
    try:
        branch = client.default_branch()
    except IntegrationError as e:
        hints = {NotFound: "FIXLOOP_GITLAB_PROJECT", AuthError: "the token's access to FIXLOOP_GITLAB_PROJECT"}
        return _fail("gitlab", target, e, _hint(e, hints, "FIXLOOP_GITLAB_URL"))
    return Line(Status.OK, "gitlab", f"{target} as {user.username}, project {s.project} (default branch {branch})")


def check_registry(s: RegistrySettings, timeout: float) -> Line:
    from fixloop.integrations.registry import RegistryClient

    target = s.url.rstrip("/")
    try:
        with RegistryClient(_bounded(s, timeout)) as client:
            client.check()
    except IntegrationError as e:
        return _fail("registry", target, e, _hint(e, {AuthError: "FIXLOOP_REGISTRY_TOKEN"}, "FIXLOOP_REGISTRY_URL"))
    return Line(Status.OK, "registry", f"{target} (/v2/ answered)")


def check_flux(s: FluxSettings, timeout: float) -> Line:
    from fixloop.integrations.flux import KubeClient

    target = s.api_url.rstrip("/")
    namespace, _, name = s.kustomization.partition("/")
    hints: dict[type[IntegrationError], str] = {
        AuthError: "FIXLOOP_KUBE_TOKEN, which must read kustomizations.kustomize.toolkit.fluxcd.io",
        NotFound: "FIXLOOP_FLUX_KUSTOMIZATION",
        TransportError: "FIXLOOP_KUBE_API_URL, FIXLOOP_KUBE_CA_FILE",
    }
    try:
        with KubeClient.from_settings(_bounded(s, timeout)) as client:
            status = client.get_kustomization(namespace, name)
    except IntegrationError as e:
        return _fail("flux", target, e, _hint(e, hints, "FIXLOOP_KUBE_API_URL"))
    ready = {True: "Ready", False: f"not Ready ({status.ready_reason or '?'})", None: "Ready unknown"}[status.ready]
    applied = status.last_applied_revision or "nothing applied yet"
    return Line(Status.OK, "flux", f"{target} kustomization {s.kustomization}: {ready}, {applied}")


def check_datadog(s: DatadogSettings, timeout: float) -> Line:
    from fixloop.integrations.datadog.api import DatadogClient

    target = s.base_url
    with DatadogClient(_bounded(s, timeout)) as client:
        try:
            client.check()
        except IntegrationError as e:
            keys = "FIXLOOP_DATADOG_API_KEY and FIXLOOP_DATADOG_SITE/_HOST"
            return _fail("datadog", target, e, _hint(e, {AuthError: keys}, "FIXLOOP_DATADOG_SITE/_HOST"))
        now = time.time()
        try:
            client.query_metrics(DATADOG_PROBE, now - 300, now)
        except IntegrationError as e:
            keys = "FIXLOOP_DATADOG_APP_KEY, which must read metrics"
            return _fail("datadog", target, e, _hint(e, {AuthError: keys}, "FIXLOOP_DATADOG_SITE/_HOST"))
    return Line(Status.OK, "datadog", f"{target} (API key valid, application key reads metrics)")


def check_llm(s: LlmSettings, timeout: float) -> Line:
    import openai

    assert s.base_url and s.model and s.api_key  # load_settings checked them (LlmSettings.require)
    target = str(s.base_url).rstrip("/")
    try:
        with openai.OpenAI(
            base_url=str(s.base_url),
            api_key=s.api_key.get_secret_value(),
            timeout=min(s.timeout, timeout),
            max_retries=0,
        ) as client:
            models = [m.id for m in client.models.list().data]
    except openai.APITimeoutError:
        return Line(Status.FAIL, "llm", f"{target}: no answer within {min(s.timeout, timeout):g} s")
    except openai.APIConnectionError as e:
        cause = type(e.__cause__).__name__ if e.__cause__ else "connection error"
        return Line(Status.FAIL, "llm", f"{target}: cannot connect ({cause}) (check FIXLOOP_LLM_BASE_URL)")
    except openai.APIStatusError as e:
        hints = {401: "OPENAI_API_KEY", 403: "OPENAI_API_KEY", 404: "FIXLOOP_LLM_BASE_URL, up to and including /v1"}
        hint = hints.get(e.status_code, "FIXLOOP_LLM_BASE_URL")
        return Line(Status.FAIL, "llm", f"{target}: HTTP {e.status_code} (check {hint})")
    except (openai.OpenAIError, TypeError, AttributeError, ValueError) as e:  # a 200 that is no model list
        return Line(Status.FAIL, "llm", f"{target}: not a model list ({type(e).__name__}) (check FIXLOOP_LLM_BASE_URL)")
    listed = "listed" if s.model in models else f"not among the {len(models)} models it lists"
    return Line(Status.OK, "llm", f"{target} model {s.model} ({listed})")


_SYNC_CHECKS: dict[str, Callable[[Any, float], Line]] = {
    "jira": check_jira,
    "gitlab": check_gitlab,
    "registry": check_registry,
    "flux": check_flux,
    "datadog": check_datadog,
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
    lines = [Line(Status.FAIL, "config", error) for error in loaded.errors]
    if not loaded.errors:
        configured = [name for name in SYSTEMS if getattr(loaded, name) is not None]
        env_file = " and ./.env" if Path(".env").is_file() else ""
        lines.append(
            Line(
                Status.OK,
                "config",
                f"settings valid (environment{env_file}); configured: {', '.join(configured) or 'none'}",
            )
        )

    async def one(name: str) -> Line:
        settings = getattr(loaded, name)
        if settings is None:
            why = "invalid configuration (see the config lines)" if name in loaded.invalid else loaded.skipped[name]
            return Line(Status.SKIP, name, why)
        try:
            if name == "temporal":
                return await check_temporal(settings, timeout)
            # the clients bound each request by `timeout`; a check makes two or three requests
            return await asyncio.wait_for(asyncio.to_thread(_SYNC_CHECKS[name], settings, timeout), 4 * timeout)
        except TimeoutError:
            return Line(Status.FAIL, name, f"no answer within {4 * timeout:g} s")

    results = await asyncio.gather(*(one(name) for name in SYSTEMS))
    secrets = loaded.secrets()
    lines += [Line(r.status, r.name, _mask(r.text, secrets)) for r in results]
    return Report(lines=[Line(x.status, x.name, _mask(x.text, secrets)) for x in lines], invalid=bool(loaded.errors))
