"""The build of a merged source change: ``GitLabClient.pipelines_for`` / ``pipeline`` / ``pipeline_jobs`` on
python-gitlab against the sandbox over HTTP, and ``build_outcome`` on recorded and sandbox answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fixloop.integrations.errors import IntegrationError, NotFound
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.gitlab.pipelines import MAX_FAILED, Pipeline, PipelineJob, build_outcome
from fixloop.sandbox.seed import seed_files
from tests.sandbox.conftest import Clock, Running, start_sandbox  # noqa: F401  (the fixture)

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded" / "gitlab"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DOCKERFILE = "services/catalog/Dockerfile"


def recorded(name: str) -> object:
    return json.loads((RECORDED / name).read_text())


def client(run: Running) -> GitLabClient:
    token = run.sb.credentials.gitlab_developer_token.get_secret_value()
    return GitLabClient(GitLabSettings(url=run.service("/gitlab"), token=token, project="platform/gitops"))


def job(name: str, status: str, allow_failure: bool = False) -> PipelineJob:
    return PipelineJob(id=len(name), name=name, status=status, allow_failure=allow_failure)


def pipeline(status: str) -> Pipeline:
    return Pipeline(id=1, sha="a" * 40, status=status)


def test_build_outcome_of_the_recorded_pipeline_and_jobs_is_success() -> None:
    (raw,) = recorded("renku-ui_list_pipelines_by_sha.json")  # type: ignore[misc]
    jobs = [PipelineJob.model_validate(j) for j in recorded("renku-ui_list_pipeline_jobs_success.json")]  # type: ignore[union-attr]
    outcome = build_outcome(Pipeline.model_validate(raw), jobs)
    assert (outcome.state, outcome.status, outcome.failed_jobs) == ("success", "success", ())
    assert jobs[0].name == "image_build" and jobs[0].failure_reason is None
    single = Pipeline.model_validate(recorded("gitlab-docs_get_pipeline.json"))
    assert single.finished_at == "2022-09-21T01:05:50.175Z" and build_outcome(single, []).state == "success"


@pytest.mark.parametrize(
    "status", ["created", "waiting_for_resource", "preparing", "pending", "running", "manual", "scheduled", "new"]
)
def test_a_pipeline_not_finished_or_unknown_is_running(status: str) -> None:
    assert build_outcome(pipeline(status), [job("build-catalog", "failed")]).state == "running"


def test_a_failed_pipeline_names_the_jobs_that_failed_it_not_allowed_failures() -> None:
    jobs = [
        job("lint", "failed", allow_failure=True),
        job("build-catalog", "failed"),
        job("build-payments", "success"),
        job("build-catalog", "failed"),  # listed twice (a retry): named once
        job("deploy", "skipped"),
    ]
    outcome = build_outcome(pipeline("failed"), jobs)
    assert (outcome.state, outcome.failed_jobs, outcome.failed_jobs_count) == ("failed", ("build-catalog",), 1)
    canceled = build_outcome(pipeline("canceled"), [job("build-catalog", "canceled"), job("test", "success")])
    assert (canceled.state, canceled.failed_jobs) == ("failed", ("build-catalog",))


def test_build_outcome_is_bounded_whatever_the_server_sends() -> None:
    jobs = [job(f"build-{i}-" + "x" * 400, "failed") for i in range(MAX_FAILED * 3)]
    outcome = build_outcome(pipeline("failed"), jobs)
    assert len(outcome.failed_jobs) == MAX_FAILED and outcome.failed_jobs_count == MAX_FAILED * 3
    assert all(len(n) <= 255 for n in outcome.failed_jobs)
    long = Pipeline.model_validate({"id": 1, "sha": "a" * 40, "status": "success", "web_url": "h" * 10_000})
    assert len(long.web_url) == 2048


def test_the_client_follows_a_merged_source_change_to_its_build(start_sandbox) -> None:  # noqa: F811
    clock = Clock(T0)
    run = start_sandbox("/gitlab", "/registry", clock=clock, ci_duration=20)
    gl = client(run)
    text = seed_files()[DOCKERFILE]
    sha = gl.commit_files(
        "main", {DOCKERFILE: text.replace("alpine:3.9.4", "alpine:3.9.6")}, "catalog: alpine 3.9.6"
    ).sha

    (running,) = gl.pipelines_for(sha, ref="main")
    assert running.sha == sha and running.ref == "main" and running.web_url.endswith(f"/-/pipelines/{running.id}")
    jobs = gl.pipeline_jobs(running.id)
    assert build_outcome(running, jobs).state == "running" and [j.name for j in jobs] == ["build-catalog"]

    clock.now = T0 + timedelta(seconds=20)
    done = gl.pipeline(running.id)
    assert build_outcome(done, gl.pipeline_jobs(running.id)).state == "success"
    assert done.finished_at is not None
    assert gl.pipelines_for(sha, ref="other") == [] and gl.pipelines_for("b" * 40) == []

    # a FROM the registry does not have: the build fails, naming its job
    bad = gl.commit_files("main", {DOCKERFILE: text.replace("alpine:3.9.4", "alpine:3.99.1")}, "catalog: typo").sha
    clock.now += timedelta(seconds=20)
    (failed,) = gl.pipelines_for(bad)
    outcome = build_outcome(failed, gl.pipeline_jobs(failed.id))
    assert (outcome.state, outcome.failed_jobs) == ("failed", ("build-catalog",))
    assert gl.pipeline_jobs(failed.id)[0].failure_reason == "script_failure"
    # newest first, bounded
    assert [p.sha for p in gl.pipelines_for(bad, limit=1)] == [bad]


def test_the_client_names_its_errors(start_sandbox) -> None:  # noqa: F811
    run = start_sandbox("/gitlab", clock=Clock(T0))
    gl = client(run)
    with pytest.raises(NotFound):
        gl.pipeline(4242)
    with pytest.raises(NotFound):
        gl.pipeline_jobs(4242)
    with pytest.raises(IntegrationError, match="is not a commit sha"):
        gl.pipelines_for("main")
    with pytest.raises(IntegrationError, match="limit 0 is not within 1..100"):
        gl.pipelines_for("a" * 40, limit=0)
    with pytest.raises(IntegrationError, match="limit 201 is not within"):
        gl.pipeline_jobs(1, limit=201)
