"""The fixloop worker: every workflow and every implemented activity on one task queue.

Activities that hold clients are methods of classes built once here. The activities of an external system are
registered when its settings are given (``Integrations``; ``Integrations.from_env()`` reads them from the
``FIXLOOP_*`` variables): Jira (``jira.*``), GitLab (``gitlab.*``, and with it ``change.plan``, which also uses the
registry when configured), Flux (``flux.deploy_state``, on the Kubernetes API; with GitLab also
``investigate.culprit``) and Datadog or Prometheus (``verify.judge``, with Alertmanager for alert recovery).
Those not configured are not registered: a loop reaching them waits in the Temporal UI on "activity not
registered" rather than pretending.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from temporalio import activity
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from fixloop.activities.build import BuildActivities
from fixloop.activities.deploy import DeployActivities
from fixloop.activities.investigate import InvestigateActivities
from fixloop.activities.merge_request import MergeRequestActivities
from fixloop.activities.plan import PlanActivities
from fixloop.activities.triage import TriageActivities
from fixloop.activities.verify import VerifyActivities
from fixloop.activities.work_item import WorkItemActivities
from fixloop.app.logs import LogContext
from fixloop.core.config import ConfigError, LlmSettings, load
from fixloop.core.metrics import bucket_overrides
from fixloop.integrations.alertmanager.api import AlertmanagerSettings
from fixloop.integrations.datadog.api import DatadogSettings
from fixloop.integrations.endoflife import EndOfLifeSettings
from fixloop.integrations.flux import FluxSettings
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.integrations.jira import JiraSettings
from fixloop.integrations.prometheus import PrometheusSettings
from fixloop.integrations.pypi import PypiSettings
from fixloop.integrations.registry import RegistrySettings
from fixloop.workflows.intake import IntakeWorkflow
from fixloop.workflows.remediation import RemediationWorkflow

WORKFLOWS = (IntakeWorkflow, RemediationWorkflow)
S = TypeVar("S", bound=BaseSettings)


def _optional(cls: type[S], key: str = "url") -> S | None:
    """``cls`` from the environment; None when its ``key`` (e.g. ``url``) is not set at all (the system is not
    configured). Anything else missing or invalid raises ``fixloop.core.config.ConfigError`` naming the variable."""
    try:
        return cls()
    except ValidationError as e:
        if any(err["type"] == "missing" and tuple(err["loc"]) == (key,) for err in e.errors()):
            return None
        return load(cls)  # raises ConfigError naming the variable, never its value


IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _flux() -> FluxSettings | None:
    """Flux is configured by ``FIXLOOP_KUBE_API_URL`` or ``FIXLOOP_KUBE_TOKEN``, or by running in a cluster (the
    service account token)."""
    if not (
        os.environ.get("FIXLOOP_KUBE_API_URL") or os.environ.get("FIXLOOP_KUBE_TOKEN") or IN_CLUSTER_TOKEN.exists()
    ):
        return None
    settings = load(FluxSettings)
    if settings.token is None and not IN_CLUSTER_TOKEN.exists():
        raise ConfigError("FIXLOOP_KUBE_TOKEN: required outside a cluster (a token that may read Kustomizations)")
    return settings


@dataclass(frozen=True)
class Integrations:
    """The external systems the worker's activities talk to; None: not configured (its activities are not
    registered)."""

    jira: JiraSettings | None = None
    gitlab: GitLabSettings | None = None
    registry: RegistrySettings | None = None
    flux: FluxSettings | None = None
    datadog: DatadogSettings | None = None
    prometheus: PrometheusSettings | None = None  # a verification provider (FIXLOOP_PROMETHEUS_URL)
    alertmanager: AlertmanagerSettings | None = None  # alert recovery of Alertmanager alerts (FIXLOOP_ALERTMANAGER_URL)
    pypi: PypiSettings | None = None  # release dates and changelog links in MRs; None: not looked up
    endoflife: EndOfLifeSettings | None = None  # end of life of scanned and bumped images; None: not looked up

    def settings(self) -> list[BaseSettings]:
        """The settings of every configured system (to mask their secrets in the logs)."""
        return [s for s in (getattr(self, f.name) for f in fields(self)) if isinstance(s, BaseSettings)]

    @classmethod
    def from_env(cls) -> Integrations:
        """Each system configured by its ``FIXLOOP_<SYSTEM>_URL`` (and the rest of its variables); a system whose
        URL is set but another variable is missing or invalid raises ``ConfigError``. PyPI and endoflife.date have
        public defaults: they are looked up unless ``FIXLOOP_PYPI_ENABLED`` / ``FIXLOOP_ENDOFLIFE_ENABLED`` is false."""
        return cls(
            jira=_optional(JiraSettings),
            gitlab=_optional(GitLabSettings),
            registry=_optional(RegistrySettings),
            flux=_flux(),
            datadog=_optional(DatadogSettings, "api_key"),
            prometheus=_optional(PrometheusSettings),
            alertmanager=_optional(AlertmanagerSettings),
            pypi=load(PypiSettings),
            endoflife=load(EndOfLifeSettings),
        )


def activities(llm: LlmSettings | None = None, integrations: Integrations | None = None) -> list[Callable[..., Any]]:
    """The activity callables, built once."""
    config = integrations or Integrations()
    triage = TriageActivities(llm, gitlab=config.gitlab, datadog=config.datadog, endoflife=config.endoflife)
    out: list[Callable[..., Any]] = [triage.group_signals]
    if config.jira is not None:
        j = WorkItemActivities(config.jira)
        out += [j.open_work_item, j.comment, j.close_work_item, j.link, j.set_status, j.rename]
    if config.gitlab is not None:
        jira_url = str(config.jira.url).rstrip("/") if config.jira is not None else None
        change = PlanActivities(
            config.gitlab,
            config.registry,
            jira_url=jira_url,
            llm=llm,
            datadog=config.datadog,
            pypi=config.pypi,
            endoflife=config.endoflife,
        )
        g = MergeRequestActivities(config.gitlab)
        out += [change.plan, change.plan_remediation, change.plan_promotion, change.plan_dependent]
        out += [g.open_merge_request, g.merge_request_state, g.note]
        out.append(BuildActivities(config.gitlab, config.registry).build_state)
        out.append(g.delete_branch)
        out += [g.open_revert_merge_request, g.check_user]
    if config.flux is not None:
        deploy = DeployActivities(config.flux, config.gitlab)
        out += [deploy.deploy_state, deploy.rollout_state]
        if config.gitlab is not None:
            out.append(InvestigateActivities(config.gitlab, config.flux).culprit)
    if config.datadog is not None or config.prometheus is not None:
        out.append(VerifyActivities(config.datadog, config.prometheus, config.alertmanager).judge)
    return out


def metrics_runtime(address: str) -> Runtime:
    """A Temporal runtime that serves the SDK's metrics and fixloop's business metrics (``fixloop.core.metrics``,
    its histograms with their own buckets) in the Prometheus text format at ``http://<address>/metrics``
    (``address``: ``<ip>:<port>``, ``FIXLOOP_WORKER_METRICS_ADDRESS``); the port is bound here, before any client
    connects. Give it to the worker's client (``fixloop.app.temporal.connect(..., runtime=)``). Raises ``ValueError``
    when the address is not ``<ip>:<port>`` or cannot be bound. A process creates few runtimes: build one."""
    prometheus = PrometheusConfig(bind_address=address, histogram_bucket_overrides=bucket_overrides())
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))


def _name(fn: Callable[..., Any]) -> str | None:
    defn = activity._Definition.from_callable(fn)
    return defn.name if defn is not None else None


def build_worker(
    client: Client,
    task_queue: str,
    *,
    extra_activities: Sequence[Callable[..., Any]] = (),
    llm: LlmSettings | None = None,
    integrations: Integrations | None = None,
) -> Worker:
    """A worker for ``task_queue`` running all workflows and the activities (``activities``) of the configured
    ``integrations`` (None: none), plus ``extra_activities``, e.g. test or sandbox implementations of the
    external-system activities; an extra activity replaces a built-in one of the same name."""
    extra_names = {_name(fn) for fn in extra_activities}
    built = [fn for fn in activities(llm, integrations) if _name(fn) not in extra_names]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[*built, *extra_activities],
        interceptors=[LogContext()],  # the work item and Jira key of each activity, for the logs
    )
