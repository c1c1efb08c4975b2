"""The worker registers the activities of the external systems that are configured, and only those."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import activity

from fixloop.activities import deploy as flux
from fixloop.activities import investigate, verify
from fixloop.activities import merge_request as gitlab
from fixloop.activities import plan as change
from fixloop.activities import work_item as jira
from fixloop.activities.build import BUILD_STATE
from fixloop.activities.triage import GROUP_SIGNALS
from fixloop.app.worker import Integrations, activities
from fixloop.core.config import ConfigError
from fixloop.integrations.endoflife import EndOfLifeSettings
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.integrations.jira import JiraSettings
from fixloop.integrations.pypi import PypiSettings
from fixloop.integrations.registry import RegistrySettings

JIRA = {"FIXLOOP_JIRA_URL": "https://acme.atlassian.net", "FIXLOOP_JIRA_EMAIL": "bot@acme.test",
        "FIXLOOP_JIRA_API_TOKEN": "jira-secret"}  # fmt: skip
GITLAB = {"FIXLOOP_GITLAB_URL": "https://gitlab.acme.test", "FIXLOOP_GITLAB_TOKEN": "glpat-secret"}


def names(fns: list) -> list[str]:
    return sorted(activity._Definition.must_from_callable(fn).name for fn in fns)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("FIXLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env file
    return monkeypatch


def test_nothing_configured_registers_triage_only(clean_env: pytest.MonkeyPatch) -> None:
    public = Integrations(pypi=PypiSettings(), endoflife=EndOfLifeSettings())  # public defaults, no credentials
    assert Integrations.from_env() == public
    assert public.pypi is not None and public.pypi.url == "https://pypi.org" and public.pypi.enabled
    clean_env.setenv("FIXLOOP_PYPI_ENABLED", "false")
    assert Integrations.from_env().pypi == PypiSettings(enabled=False)
    assert names(activities()) == names(activities(integrations=Integrations.from_env())) == [GROUP_SIGNALS]


def test_configured_systems_register_their_activities(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in {**JIRA, **GITLAB}.items():
        clean_env.setenv(key, value)
    config = Integrations.from_env()
    assert config.jira is not None and config.gitlab is not None and config.registry is None
    assert names(activities(integrations=config)) == sorted(
        [
            GROUP_SIGNALS,
            jira.OPEN_WORK_ITEM,
            jira.COMMENT,
            jira.CLOSE_WORK_ITEM,
            jira.LINK,
            jira.SET_STATUS,
            jira.RENAME,
            change.PLAN_CHANGE,
            change.PLAN_REMEDIATION,
            change.PLAN_PROMOTION,
            change.PLAN_DEPENDENT,
            BUILD_STATE,
            gitlab.OPEN_MERGE_REQUEST,
            gitlab.MERGE_REQUEST_STATE,
            gitlab.NOTE,
            gitlab.DELETE_BRANCH,
            gitlab.OPEN_REVERT_MERGE_REQUEST,
            gitlab.CHECK_USER,
        ]
    )
    only_jira = Integrations(jira=JiraSettings(_env_file=None))  # type: ignore[call-arg]
    assert jira.LINK in names(activities(integrations=only_jira))
    assert change.PLAN_CHANGE not in names(activities(integrations=only_jira))
    with_registry = Integrations(
        gitlab=GitLabSettings(_env_file=None),  # type: ignore[call-arg]
        registry=RegistrySettings(_env_file=None, url="https://registry-1.docker.io"),  # type: ignore[call-arg]
    )
    assert change.PLAN_CHANGE in names(activities(integrations=with_registry))


def test_a_half_configured_system_is_a_config_error_naming_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FIXLOOP_GITLAB_URL", GITLAB["FIXLOOP_GITLAB_URL"])
    with pytest.raises(ConfigError, match="FIXLOOP_GITLAB_TOKEN"):
        Integrations.from_env()


def test_flux_and_datadog_register_the_deploy_and_verify_activities(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FIXLOOP_KUBE_API_URL", "https://kube.acme.test:6443")
    clean_env.setenv("FIXLOOP_KUBE_TOKEN", "kube-secret")
    clean_env.setenv("FIXLOOP_DATADOG_API_KEY", "dd-api-secret")
    clean_env.setenv("FIXLOOP_DATADOG_APP_KEY", "dd-app-secret")
    config = Integrations.from_env()
    assert config.flux is not None and config.datadog is not None and config.gitlab is None
    assert names(activities(integrations=config)) == sorted(
        [GROUP_SIGNALS, flux.DEPLOY_STATE, flux.ROLLOUT_STATE, verify.JUDGE]
    )


def test_gitlab_and_flux_register_the_culprit_activity(clean_env: pytest.MonkeyPatch) -> None:
    for k, v in GITLAB.items():
        clean_env.setenv(k, v)
    clean_env.setenv("FIXLOOP_KUBE_API_URL", "https://kube.acme.test:6443")
    clean_env.setenv("FIXLOOP_KUBE_TOKEN", "kube-secret")
    registered = names(activities(integrations=Integrations.from_env()))
    assert investigate.CULPRIT in registered and flux.DEPLOY_STATE in registered


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FIXLOOP_KUBE_API_URL": "https://kube.acme.test:6443"}, "FIXLOOP_KUBE_TOKEN"),
        ({"FIXLOOP_DATADOG_API_KEY": "dd-api-secret"}, "FIXLOOP_DATADOG_APP_KEY"),
    ],
)
def test_half_configured_flux_or_datadog_names_the_variable(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(ConfigError, match=variable) as e:
        Integrations.from_env()
    assert "secret" not in str(e.value)
