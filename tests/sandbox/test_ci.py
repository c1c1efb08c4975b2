"""The CI stand-in over HTTP: a push to main touching an image's source runs a pipeline that, after the delay on the
sandbox clock, pushes the next tag to the registry; a FROM the registry does not have fails the build job; the
pipeline and job JSON have the shapes of recorded GitLab responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from fixloop.sandbox.gitlab.ci import from_images, has_image, parse_chain
from fixloop.sandbox.registry import registry_store
from fixloop.sandbox.seed import seed_files
from tests.sandbox.chain import BASE_DOCKERFILE, chain_files, seed_chain
from tests.sandbox.conftest import Clock, Running
from tests.sandbox.fidelity import assert_same_shape, recorded
from tests.sandbox.test_registry import pull

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
PROJECT = "platform%2Fgitops"
DOCKERFILE = "services/catalog/Dockerfile"


class Api:
    def __init__(self, run: Running) -> None:
        self.base = run.service("/gitlab") + f"/api/v4/projects/{PROJECT}"
        self.h = {"PRIVATE-TOKEN": run.sb.credentials.gitlab_developer_token.get_secret_value()}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.base + path, headers=self.h, params=params)

    def commit(self, files: dict[str, str], branch: str = "main") -> str:
        actions = [{"action": "update", "file_path": p, "content": t} for p, t in files.items()]
        body = {"branch": branch, "commit_message": "change", "actions": actions}
        if branch != "main":
            body["start_branch"] = "main"
        r = httpx.post(self.base + "/repository/commits", headers=self.h, json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def catalog_from(image: str) -> dict[str, str]:
    return {DOCKERFILE: seed_files()[DOCKERFILE].replace("FROM alpine:3.9.4", f"FROM {image}", 1)}


def built(start_sandbox: Any, image: str) -> tuple[Running, Api, list[dict[str, Any]]]:
    """A sandbox (5 s builds) after a push of the catalog Dockerfile with ``FROM image`` and the build's delay: the
    pipelines of that commit."""
    clock = Clock(T0)
    run = start_sandbox("/gitlab", "/registry", clock=clock, ci_duration=5)
    api = Api(run)
    sha = api.commit(catalog_from(image))
    clock.now = T0 + timedelta(seconds=5)
    return run, api, api.get("/pipelines", sha=sha).json()


def registry_tags(run: Running, name: str) -> list[str]:
    base = run.service("/registry")
    r = httpx.get(base + f"/v2/{name}/tags/list", headers=pull(base, name))
    assert r.status_code == 200, r.text
    return r.json()["tags"]


def test_the_registry_has_the_tags_the_environments_run_before_any_pipeline(start_sandbox) -> None:
    run = start_sandbox("/gitlab", "/registry", clock=Clock(T0))
    assert registry_tags(run, "shop/catalog") == ["1.4.2"]
    assert registry_tags(run, "shop/inventory") == ["0.8.3"]
    base = run.service("/registry")
    assert httpx.get(base + "/v2/shop/search/tags/list", headers=pull(base, "shop/search")).status_code == 404
    assert Api(run).get("/pipelines").json() == []  # the seed commit runs no pipeline


def test_a_source_change_runs_a_pipeline_that_pushes_the_next_tag_after_the_delay(start_sandbox) -> None:
    clock = Clock(T0)
    run = start_sandbox("/gitlab", "/registry", clock=clock, ci_duration=30)
    api = Api(run)
    sha = api.commit(catalog_from("alpine:3.9.6"))

    (listed,) = api.get("/pipelines", sha=sha).json()
    assert (listed["sha"], listed["ref"], listed["status"], listed["source"]) == (sha, "main", "running", "push")
    pipeline = api.get(f"/pipelines/{listed['id']}").json()
    assert pipeline["finished_at"] is None and pipeline["detailed_status"]["group"] == "running"
    (job,) = api.get(f"/pipelines/{listed['id']}/jobs").json()
    assert (job["name"], job["stage"], job["status"]) == ("build-catalog", "build", "running")
    assert registry_tags(run, "shop/catalog") == ["1.4.2"]  # nothing pushed while it runs

    clock.now = T0 + timedelta(seconds=29)
    assert api.get(f"/pipelines/{listed['id']}").json()["status"] == "running"
    clock.now = T0 + timedelta(seconds=30)
    assert registry_tags(run, "shop/catalog") == ["1.4.2", "1.4.3"]  # a registry read finishes what is due
    done = api.get(f"/pipelines/{listed['id']}").json()
    assert done["status"] == "success" and done["duration"] == 30.0 and done["detailed_status"]["group"] == "success"
    (job,) = api.get(f"/pipelines/{listed['id']}/jobs").json()
    assert job["status"] == "success" and "failure_reason" not in job
    pushed = registry_store(run.sb).data["pushed"]["shop/catalog"]["1.4.3"]
    assert pushed["digest"].startswith("sha256:") and len(pushed["digest"]) == 71

    # a second change before the tag is deployed: the next free patch, not 1.4.3 again
    second = api.commit(catalog_from("alpine:3.9.5"))
    clock.now += timedelta(seconds=30)
    assert api.get("/pipelines", sha=second).json()[0]["status"] == "success"
    assert registry_tags(run, "shop/catalog") == ["1.4.2", "1.4.3", "1.4.4"]
    assert [p["sha"] for p in api.get("/pipelines").json()] == [second, sha]  # newest first
    assert [p["sha"] for p in api.get("/pipelines", sort="asc").json()] == [sha, second]


def test_a_from_the_registry_does_not_have_fails_the_build_job(start_sandbox) -> None:
    run, api, (pipeline,) = built(start_sandbox, "alpine:3.9.99")
    assert pipeline["status"] == "failed"
    (job,) = api.get(f"/pipelines/{pipeline['id']}/jobs").json()
    assert (job["name"], job["status"], job["failure_reason"]) == ("build-catalog", "failed", "script_failure")
    assert api.get(f"/pipelines/{pipeline['id']}/jobs", scope="failed").json()[0]["id"] == job["id"]
    assert api.get(f"/pipelines/{pipeline['id']}/jobs", scope="success").json() == []
    assert registry_tags(run, "shop/catalog") == ["1.4.2"]  # nothing pushed


def test_a_base_image_is_built_on_the_tag_its_dependents_from(start_sandbox, tmp_path) -> None:
    """A base image runs in no environment: the registry has the tag its dependents FROM before any pipeline, its
    build pushes that tag's patch + 1, and a dependent then builds FROM the new tag (not FROM one never built)."""
    seed_chain(tmp_path / "sandbox", T0)
    clock = Clock(T0)
    run = start_sandbox("/gitlab", "/registry", state_dir=tmp_path / "sandbox", clock=clock, ci_duration=5)
    api = Api(run)
    assert registry_tags(run, "shop/base-python") == ["1.3.0"]  # what legacy-api and payments FROM
    assert api.get("/pipelines").json() == []  # the seeded chain runs no pipeline
    base = api.commit({BASE_DOCKERFILE: chain_files()[BASE_DOCKERFILE].replace("debian:10.2", "debian:10.13")})
    clock.now += timedelta(seconds=5)
    (pipeline,) = api.get("/pipelines", sha=base).json()
    assert pipeline["status"] == "success"
    assert registry_tags(run, "shop/base-python") == ["1.3.0", "1.3.1"]
    legacy = chain_files()["services/legacy-api/Dockerfile"]
    rebuilt = api.commit({"services/legacy-api/Dockerfile": legacy.replace(":1.3.0", ":1.3.1")})
    unbuilt = api.commit({"services/payments/Dockerfile": legacy.replace(":1.3.0", ":1.3.9")})
    clock.now += timedelta(seconds=5)
    assert [api.get("/pipelines", sha=sha).json()[0]["status"] for sha in (rebuilt, unbuilt)] == ["success", "failed"]
    assert registry_tags(run, "shop/legacy-api") == ["2.0.7", "2.0.8"] and registry_tags(run, "shop/payments") == [
        "1.9.1"
    ]  # fmt: skip


def test_only_source_changes_on_main_run_pipelines(start_sandbox) -> None:
    run = start_sandbox("/gitlab", "/registry", clock=Clock(T0))
    api = Api(run)
    seed = seed_files()
    manifest = "apps/staging/kustomization.yaml"
    tag_bump = api.commit({manifest: seed[manifest].replace('"1.4.2"', '"1.4.3"', 1)})
    on_branch = api.commit(catalog_from("alpine:3.9.6"), branch="fixloop/wi-1")
    assert api.get("/pipelines", sha=tag_bump).json() == [] and api.get("/pipelines", sha=on_branch).json() == []
    # two images in one push: one pipeline, one job each
    both = api.commit(
        catalog_from("alpine:3.9.6")
        | {"services/payments/requirements.txt": seed["services/payments/requirements.txt"] + "idna==3.7\n"}
    )
    (pipeline,) = api.get("/pipelines", sha=both).json()
    names = [j["name"] for j in api.get(f"/pipelines/{pipeline['id']}/jobs").json()]
    assert names == ["build-catalog", "build-payments"]


def test_unknown_pipelines_and_bad_parameters_answer_as_gitlab(start_sandbox) -> None:
    run = start_sandbox("/gitlab", clock=Clock(T0))
    api = Api(run)
    assert api.get("/pipelines/999").status_code == 404
    assert api.get("/pipelines/999").json() == {"message": "404 Not found"}
    assert api.get("/pipelines/999/jobs").status_code == 404
    assert api.get("/pipelines", order_by="name").status_code == 400
    assert httpx.get(api.base + "/pipelines").status_code == 401


def test_fidelity_of_the_pipeline_and_job_json(start_sandbox) -> None:
    _, api, listed = built(start_sandbox, "alpine:3.9.6")
    assert_same_shape(recorded("gitlab", "renku-ui_list_pipelines_by_sha.json"), listed)
    assert_same_shape(
        recorded("gitlab", "gitlab-docs_get_pipeline.json"), api.get(f"/pipelines/{listed[0]['id']}").json()
    )
    real_jobs = recorded("gitlab", "renku-ui_list_pipeline_jobs_success.json")
    for key in ("skype", "public_email", "local_time"):  # a field GitLab 17 dropped; optional texts null in ours
        del real_jobs[0]["user"][key]
    assert_same_shape(real_jobs, api.get(f"/pipelines/{listed[0]['id']}/jobs").json())


def test_the_ci_reads_the_chain_and_froms_itself() -> None:
    images, envs = parse_chain(seed_files()["fixloop.yaml"])
    assert images["catalog"] == {"source": "services/catalog", "image": "registry.sandbox.local/shop/catalog",
                                 "tag": "semver-patch"}  # fmt: skip
    assert [e["kustomization"] for e in envs] == [
        "apps/staging/kustomization.yaml",
        "apps/production/kustomization.yaml",
    ]
    assert parse_chain("images: [") == ({}, [])
    assert from_images(seed_files()["services/inventory/Dockerfile"]) == [
        "golang:1.17-alpine",
        "gcr.io/distroless/static:nonroot",
    ]
    assert from_images("FROM node:20 AS build\nFROM build\nFROM scratch\n") == ["node:20"]


def test_has_image_knows_docker_hub_the_pushed_tags_and_leaves_other_hosts_alone(start_sandbox) -> None:
    run = start_sandbox("/gitlab", "/registry", clock=Clock(T0))
    store = registry_store(run.sb)
    for image in (
        "alpine:3.9.4",
        "docker.io/library/alpine:3.9.4",
        "python:3.9.7-slim",
        "registry.sandbox.local/shop/catalog:1.4.2",
    ):
        assert has_image(store, image), image
    assert has_image(store, "alpine")  # alpine:latest
    for image in ("alpine:3.9.99", "ubuntu:22.04", "registry.sandbox.local/shop/catalog:9.9.9", "${BASE}"):
        assert not has_image(store, image), image
    assert has_image(store, "gcr.io/distroless/static:nonroot")  # another host: not stood in for
    assert has_image(store, "alpine@sha256:" + "0" * 64)
