"""Every stand-in together, driven only through fixloop's integration clients configured from the FIXLOOP_*
variables ``fixloop sandbox up`` prints: a merge request approved by a human and merged is reconciled by Flux (which
changes nothing that runs: the Dockerfile is source), CI builds the next tag, and the Datadog world reacts once that
tag is deployed."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import pytest
from pydantic_settings import BaseSettings

from fixloop.integrations.datadog.api import DatadogClient, DatadogSettings
from fixloop.integrations.flux import FluxSettings, KubeClient
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.jira import JiraClient, JiraSettings
from fixloop.integrations.registry import RegistryClient, RegistrySettings
from fixloop.sandbox.server import endpoints
from fixloop.sandbox.world import MONITORS
from tests.sandbox.conftest import Clock, Running

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
ERRORS = "sum:trace.http.request.errors{service:legacy-api,env:production}.as_rate()"
OVERLAYS = ("apps/staging/kustomization.yaml", "apps/production/kustomization.yaml")


def settings(cls: type[BaseSettings], run: Running, monkeypatch: pytest.MonkeyPatch, **env: str) -> BaseSettings:
    for key, value in {**endpoints(run.sb), **env}.items():
        monkeypatch.setenv(key, value)
    return cls()


def mean_errors(dd: DatadogClient, start: datetime, end: datetime) -> float:
    (series,) = dd.query_metrics(ERRORS, start, end)
    return statistics.fmean(v for _, v in series.points if v is not None)


def test_approved_merge_is_deployed_by_flux_and_the_world_reacts(start_sandbox, monkeypatch) -> None:
    clock = Clock(T0)
    run = start_sandbox(clock=clock)
    bot = GitLabClient(settings(GitLabSettings, run, monkeypatch))
    reviewer = GitLabClient(
        settings(GitLabSettings, run, monkeypatch,
                 FIXLOOP_GITLAB_TOKEN=run.sb.credentials.gitlab_reviewer_token.get_secret_value())
    )  # fmt: skip
    jira = JiraClient(settings(JiraSettings, run, monkeypatch))
    dd = DatadogClient(settings(DatadogSettings, run, monkeypatch))
    kube = KubeClient.from_settings(settings(FluxSettings, run, monkeypatch))
    registry = RegistryClient(settings(RegistrySettings, run, monkeypatch))

    # the seeded world: legacy-api runs on Debian buster and its error monitor is alerting
    before = kube.get_kustomization("flux-system", "apps-production")
    assert before.ready is True and before.last_applied_revision.startswith("main@sha1:")
    assert "10.13" in registry.tags("debian")
    monitor = next(m.id for m in MONITORS if m.service == "legacy-api" and m.kind == "errors")
    assert dd.get_monitor(monitor).overall_state == "Alert"

    summary, text = "Rebuild legacy-api on Debian bookworm", "legacy-api runs on an end-of-life base image."
    issue = jira.find_or_create_issue("wi-legacy-api-base", summary, text, ["security"], "Task")
    path = "services/legacy-api/Dockerfile"
    old = bot.read_file(path, "main")
    assert old is not None and old.startswith("FROM debian:10.2\n")
    bot.ensure_branch("fixloop/wi-legacy-api-base", "main")
    bot.commit_files("fixloop/wi-legacy-api-base", {path: old.replace("debian:10.2", "debian:12.8", 1)},
                     f"Rebuild legacy-api on debian:12.8\n\nRefs {issue.key}", expected={path: old})  # fmt: skip
    mr = bot.find_or_create_merge_request("fixloop/wi-legacy-api-base", "main", "Rebuild legacy-api on debian:12.8",
                                          f"Jira: {issue.key}", ["fixloop"])  # fmt: skip
    assert bot.approvals(mr.iid).human_approvers(run.sb.credentials.gitlab_bot_username) == []

    clock.now = T0 + timedelta(minutes=30)
    reviewer.gl.projects.get("platform/gitops").mergerequests.get(mr.iid).approve(sha=mr.sha)
    assert bot.approvals(mr.iid).human_approvers(run.sb.credentials.gitlab_bot_username) == ["reviewer"]
    reviewer.gl.projects.get("platform/gitops").mergerequests.get(mr.iid).merge(sha=mr.sha)
    merged = bot.get_merge_request(mr.iid)
    assert merged.state == "merged" and merged.merged_commit_sha

    # Flux applied exactly the merge commit, which changed nothing that runs: legacy-api still runs 2.0.7
    after = kube.get_kustomization("flux-system", "apps-production")
    assert after.last_applied_revision == f"main@sha1:{merged.merged_commit_sha}"
    assert after.applied(merged.merged_commit_sha) and after.ready is True
    clock.now = T0 + timedelta(minutes=40)
    assert dd.get_monitor(monitor).overall_state == "Alert"

    # CI built the merge commit into 2.0.8; deploying that tag (both environments) heals legacy-api
    assert "2.0.8" in registry.tags("shop/legacy-api")
    for overlay in OVERLAYS:
        text = bot.read_file(overlay, "main") or ""
        bot.commit_files("main", {overlay: text.replace('newTag: "2.0.7"', 'newTag: "2.0.8"')}, "legacy-api 2.0.8",
                         expected={overlay: text})  # fmt: skip
    deploy = clock.now
    clock.now = deploy + timedelta(minutes=60)
    errors_before = mean_errors(dd, deploy - timedelta(minutes=30), deploy)
    errors_after = mean_errors(dd, deploy + timedelta(minutes=5), deploy + timedelta(minutes=35))
    assert errors_after < errors_before / 2, (errors_before, errors_after)
    assert dd.get_monitor(monitor).overall_state == "OK"

    link = jira.add_remote_link(issue.key, merged.web_url, f"!{merged.iid}")
    done = jira.transition(issue.key, "Done")
    assert link.created and done.status == "Done"
    for client in (dd, kube, registry):
        client.close()
