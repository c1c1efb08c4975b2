"""``gitlab.build_state`` and ``change.plan_promotion`` against the sandbox (GitLab on real git, its CI stand-in,
the registry with the OCI token flow): a merged Dockerfile change is running, then built with its next tag and the
digest the registry serves; a FROM the registry lacks fails the build naming its job; the promotion merge request
changes exactly the environment's ``newTag``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fixloop.activities.build import BuildActivities, repository_name
from fixloop.activities.merge_request import MergeRequestActivities
from fixloop.activities.plan import PlanActivities
from fixloop.core.change.images import delivery_of
from fixloop.core.change.ops import BumpWorkloadImage
from fixloop.core.change.policy import load_policy
from fixloop.core.triage import triage_rules
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.registry import RegistrySettings
from fixloop.sandbox.server import endpoints
from fixloop.workflows.contracts.build import BuildStateInput
from fixloop.workflows.contracts.merge_request import OpenMergeRequestInput
from fixloop.workflows.contracts.plan import PlanPromotionInput
from tests.activities.sandbox_world import Clock, configured
from tests.conftest import signals
from tests.sandbox.conftest import start_sandbox  # noqa: F401  (the fixture)

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
DOCKERFILE = "services/catalog/Dockerfile"


def test_repository_names() -> None:
    assert repository_name("registry.sandbox.local/shop/catalog") == "shop/catalog"
    assert repository_name("localhost:5000/shop/catalog") == "shop/catalog"
    assert repository_name("library/alpine") == "library/alpine"


async def test_a_merged_source_change_is_built_then_promoted_to_staging(start_sandbox: Any) -> None:  # noqa: F811
    clock = Clock(T0)
    run = start_sandbox("/gitlab", "/registry", clock=clock, ci_duration=20)
    env = endpoints(run.sb)
    settings = configured(GitLabSettings, env)
    gl = GitLabClient(settings)
    builds = BuildActivities(settings, configured(RegistrySettings, env))
    plans = PlanActivities(settings, configured(RegistrySettings, env))
    try:
        text = gl.read_file(DOCKERFILE, "main")
        assert text is not None
        sha = gl.commit_files("main", {DOCKERFILE: text.replace("alpine:3.9.4", "alpine:3.9.6")}, "catalog").sha
        policy = load_policy(gl.read_file("fixloop.yaml", sha))
        delivery = delivery_of(policy.chain, [DOCKERFILE], lambda p: gl.read_file(p, sha), "catalog")
        assert delivery.image is not None and [t.name for t in delivery.targets] == ["staging", "production"]
        inp = BuildStateInput(scope="platform/gitops", merge_sha=sha, image=delivery.image, current_tag="1.4.2")

        running = await builds.build_state(inp)
        assert (running.state, running.status) == ("running", "running") and running.pipeline_id
        clock.now = T0 + timedelta(seconds=21)
        built = await builds.build_state(inp)
        assert (built.state, built.tag) == ("built", "1.4.3"), built
        assert built.digest and built.digest.startswith("sha256:") and len(built.digest) == 71

        wi = next(w for w in triage_rules(signals("trivy/trivy-head_alpine-39.json")).work_items)
        planned = await plans.plan_promotion(
            PlanPromotionInput(
                scope="platform/gitops", work_item=wi, delivery=delivery, target=0, tag="1.4.3",
                digest=built.digest, source_sha=sha, source_iid=1, jira_key="OPS-3",
            )
        )  # fmt: skip
        assert planned.located, planned.reason
        (op,) = planned.changes
        assert isinstance(op, BumpWorkloadImage) and op.path == "apps/staging/kustomization.yaml"
        assert (op.current, op.new) == ("1.4.2", "1.4.3")
        assert planned.title and planned.title.startswith("Deploy catalog 1.4.3 to staging")
        assert "A pass opens the promotion to `production`" in (planned.description or "")
        mr = await MergeRequestActivities(settings).open_merge_request(
            OpenMergeRequestInput(scope="platform/gitops", work_item=wi, change=planned, jira_key="OPS-3")
        )
        (diff,) = gl.merge_request_diffs(mr.iid)
        assert diff.new_path == "apps/staging/kustomization.yaml"
        assert '-    newTag: "1.4.2"' in diff.diff and '+    newTag: "1.4.3"' in diff.diff
        assert diff.diff.count("\n+") == 1  # production's tag, and everything else, untouched

        # a FROM the registry lacks: the pipeline fails, naming its job
        bad = gl.commit_files("main", {DOCKERFILE: text.replace("alpine:3.9.4", "alpine:3.99.1")}, "typo").sha
        clock.now += timedelta(seconds=21)
        failed = await builds.build_state(inp.model_copy(update={"merge_sha": bad}))
        assert (failed.state, failed.failed_jobs) == ("failed", ["build-catalog"]), failed
        assert (await builds.build_state(inp.model_copy(update={"merge_sha": "d" * 40}))).state == "pending"
    finally:
        builds.close()
        plans.close()


def test_a_change_builds_one_image_or_is_not_followed() -> None:
    policy = load_policy(
        "images:\n  a: {source: services/a, image: registry.example/a}\n"
        "  b: {source: services/b, image: registry.example/b}\nenvironments: [staging, production]\n"
    )
    files = {
        "apps/staging/kustomization.yaml": "namespace: s\nimages:\n- name: registry.example/a\n  newTag: 1.0.0\n",
        "apps/production/kustomization.yaml": "images:\n- name: registry.example/a\n  newTag: 1.0.0\n",
    }
    d = delivery_of(policy.chain, ["services/a/Dockerfile"], files.get, "a")
    assert [(t.name, t.namespace, t.current_tag) for t in d.targets] == [
        ("staging", "s", "1.0.0"), ("production", "default", "1.0.0"),
    ]  # fmt: skip
    manifest = delivery_of(policy.chain, ["apps/staging/deployment.yaml"], files.get, "a")
    assert manifest.image is None and [t.name for t in manifest.targets] == ["staging"]
    shared = delivery_of(policy.chain, ["apps/base/a/deployment.yaml"], files.get, "a")
    assert [t.name for t in shared.targets] == ["production"] and shared.declared
    for paths in (["services/a/x", "services/b/y"], ["services/b/Dockerfile"]):  # two images; b has no newTag
        try:
            delivery_of(policy.chain, paths, files.get, None)
        except ValueError as e:
            assert "images" in str(e) or "newTag" in str(e)
        else:
            raise AssertionError(paths)
