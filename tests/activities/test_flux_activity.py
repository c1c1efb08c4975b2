"""``flux.deploy_state`` against the sandbox (GitLab + the Flux stand-in): merge requests merged through GitLab are
reconciled by Flux and read back through the Kubernetes API; ``deploy_event`` on recorded Flux notifications and on
the ones the sandbox's notification-controller stand-in posts (signed with generic-hmac)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ruamel.yaml import YAML
from temporalio.exceptions import ApplicationError

from fixloop.activities.deploy import DeployActivities, deploy_event, deploy_state_of
from fixloop.app.ingest import decode
from fixloop.integrations.flux import FluxSettings, KubeClient, kustomization_status, parse_event, verify_signature
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.sandbox.repos import Action, Person
from fixloop.sandbox.server import bind, endpoints
from fixloop.workflows.contracts.deploy import DeployState, DeployStateInput
from fixloop.workflows.contracts.loop import DeployEvent
from tests.activities.sandbox_world import Clock, configured
from tests.receiver import Receiver
from tests.sandbox.conftest import Running, start_sandbox  # noqa: F401  (the fixture)
from tests.sandbox.fidelity import RECORDED

SCOPE = "platform/gitops"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
PROD = "apps/production/kustomization.yaml"
FLUX_DIR = RECORDED / "flux"


@dataclass
class World:
    run: Running
    clock: Clock
    flux: DeployActivities
    flux_settings: FluxSettings
    gitlab_settings: GitLabSettings
    bot: GitLabClient
    reviewer: GitLabClient

    async def state(self, sha: str, kustomization: str | None = None) -> DeployState:
        inp = DeployStateInput(scope=SCOPE, merge_sha=sha, kustomization=kustomization)
        return await self.flux.deploy_state(inp)

    def merge(self, branch: str, files: dict[str, str]) -> str:
        """Open a merge request of ``files`` as the bot, approve and merge it as the reviewer; the merge commit."""
        self.bot.ensure_branch(branch, "main")
        self.bot.commit_files(branch, files, f"change {branch}")
        mr = self.bot.find_or_create_merge_request(branch, "main", f"Change {branch}", "test change")
        handle = self.reviewer.project.mergerequests.get(mr.iid, lazy=True)
        handle.approve(sha=mr.sha)
        handle.merge(sha=mr.sha)
        merged = self.bot.get_merge_request(mr.iid)
        assert merged.state == "merged" and merged.merged_commit_sha
        return merged.merged_commit_sha

    def production(self, old: str, new: str) -> dict[str, str]:
        text = self.bot.read_file(PROD, "main")
        assert text is not None and old in text
        return {PROD: text.replace(old, new, 1)}


def start_world(start_sandbox: Any, **config: Any) -> World:  # noqa: F811
    clock = Clock(T0)
    run = start_sandbox("/gitlab", "/kube", clock=clock, **config)
    env = endpoints(run.sb)
    flux_settings = configured(FluxSettings, env)
    gitlab_settings = configured(GitLabSettings, env)
    reviewer = configured(GitLabSettings, env, token=run.sb.credentials.gitlab_reviewer_token.get_secret_value())
    return World(
        run=run,
        clock=clock,
        flux=DeployActivities(flux_settings, gitlab_settings),
        flux_settings=flux_settings,
        gitlab_settings=gitlab_settings,
        bot=GitLabClient(gitlab_settings),
        reviewer=GitLabClient(reviewer),
    )


@pytest.fixture
def world(start_sandbox: Any) -> Iterator[World]:  # noqa: F811
    w = start_world(start_sandbox)
    yield w
    w.flux.close()


def closed_port_url() -> str:
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# -- deploy_state on the sandbox ----------------------------------------------------------------------------------
async def test_merge_applied_then_still_applied_under_a_later_commit(world: World) -> None:
    merge = world.merge("fix/legacy-api-tag", world.production('newTag: "2.0.7"', 'newTag: "2.0.8"'))
    state = await world.state(merge)
    assert state.applied and not state.failed and not state.via_descendant
    assert state.revision == state.last_applied_revision == f"main@sha1:{merge}"
    assert (state.ready, state.reason) == (True, "ReconciliationSucceeded")
    assert state.kustomization == "flux-system/apps-production"
    assert state.message == f"Applied revision: main@sha1:{merge}"
    # when Flux applied it (Ready's transition): the moment the sandbox's services started to change
    (recorded,) = [d for d in world.run.sb.world.deploys("production") if d["revision"] == f"main@sha1:{merge}"]
    assert state.applied_at is not None and state.applied_at.timestamp() == pytest.approx(recorded["at"], abs=1e-3)

    later = world.merge("fix/catalog-tag", world.production('newTag: "1.4.2"', 'newTag: "1.4.3"'))
    state = await world.state(merge)
    assert state.applied and state.via_descendant, "a later commit on the branch deploys the merge too"
    assert state.revision == f"main@sha1:{later}"
    assert (await world.state(later)).applied and not (await world.state(later)).via_descendant
    assert (await world.state(merge[:12])).applied, "an abbreviated sha"

    # the workflow builds the same model from a signal: the fields it reads keep their meaning
    assert DeployState.model_validate_json(state.model_dump_json()) == state

    # without GitLab there is no ancestry check: only the exact commit counts
    exact_only = DeployActivities(world.flux_settings, None)
    try:
        alone = await exact_only.deploy_state(DeployStateInput(scope=SCOPE, merge_sha=merge))
        assert not alone.applied and not alone.failed and alone.revision == f"main@sha1:{later}"
    finally:
        exact_only.close()


async def test_not_yet_reconciled_is_neither_until_flux_fetches_it(world: World) -> None:
    sb = world.run.sb
    before = (await world.state(sb.repos.branches(SCOPE)["main"])).revision
    text = world.bot.read_file(PROD, "main")
    assert text is not None
    # a head Flux has not fetched: committed without the push event, the interval (5 s of sandbox time) not elapsed
    head = sb.repos.commit(
        SCOPE, "main", [Action(action="update", file_path=PROD, content=text + "# unseen\n")], "unseen",
        Person(name="Someone", email="someone@example.com"), world.clock(),
    ).id  # fmt: skip
    state = await world.state(head)
    assert not state.applied and not state.failed
    assert state.revision == before != f"main@sha1:{head}" and state.ready is True

    # a branch head that was never merged is not deployed by whatever Flux applies
    world.bot.ensure_branch("fix/never-merged", "main")
    side = world.bot.commit_files("fix/never-merged", {"README.md": "side\n"}, "side").sha
    assert not (await world.state(side)).applied

    world.clock.now += timedelta(seconds=world.run.sb.config.flux_interval)
    state = await world.state(head)  # the Kubernetes API read runs the stand-in's interval check first
    assert state.applied and state.revision == f"main@sha1:{head}"


async def test_failed_build_then_a_fix_on_top_applies(world: World) -> None:
    applied = (await world.state(world.run.sb.repos.branches(SCOPE)["main"])).revision
    bad = world.merge("fix/broken", world.production("  - ../base/inventory\n", "  - ../base/nope\n"))
    state = await world.state(bad)
    assert state.failed and not state.applied
    assert state.revision == state.last_attempted_revision == f"main@sha1:{bad}"
    assert state.last_applied_revision == applied and state.ready is False and state.reason == "BuildFailed"
    assert state.message and "kustomize build failed" in state.message and "nope" in state.message
    # the other Kustomization builds the same revision
    staging = await world.state(bad, "flux-system/apps-staging")
    assert staging.applied and staging.kustomization == "flux-system/apps-staging"

    fixed = world.merge("fix/unbreak", world.production("  - ../base/nope\n", "  - ../base/inventory\n"))
    assert (await world.state(fixed)).applied
    recovered = await world.state(bad)
    assert recovered.applied and recovered.via_descendant and not recovered.failed


async def test_errors_are_clear_and_retryable_only_when_a_retry_can_help(world: World) -> None:
    main = world.run.sb.repos.branches(SCOPE)["main"]
    with pytest.raises(ApplicationError) as e:
        await world.state(main, "flux-system/apps-nope")
    assert e.value.type == "KustomizationNotFound" and e.value.non_retryable
    assert "flux-system/apps-nope" in str(e.value) and "FIXLOOP_FLUX_KUSTOMIZATION" in str(e.value)

    for sha, ks in (("main", None), ("z" * 40, None), (main, "../../etc/passwd"), (main, "flux-system")):
        with pytest.raises(ApplicationError) as e:
            await world.state(sha, ks)
        assert e.value.type == "InvalidInput" and e.value.non_retryable, (sha, ks)

    down = world.flux_settings.model_copy(update={"api_url": closed_port_url()})
    unreachable = DeployActivities(down, world.gitlab_settings)
    with pytest.raises(ApplicationError) as e:
        await unreachable.deploy_state(DeployStateInput(scope=SCOPE, merge_sha=main))
    assert e.value.type == "TransportError" and not e.value.non_retryable
    unreachable.close()

    token = world.run.sb.credentials.kube_token.get_secret_value()
    wrong = DeployActivities(world.flux_settings, kube=KubeClient(world.flux_settings.api_url, "wrong", timeout=5))
    with pytest.raises(ApplicationError) as e:
        await wrong.deploy_state(DeployStateInput(scope=SCOPE, merge_sha=main))
    assert e.value.type == "AuthError" and e.value.non_retryable and token not in str(e.value)
    wrong.close()

    # GitLab down during the ancestry check (the Kubernetes read worked): retryable
    later = world.merge("fix/any", world.production('newTag: "0.8.3"', 'newTag: "0.8.4"'))
    assert later != main
    gitlab_down = world.gitlab_settings.model_copy(update={"url": closed_port_url()})
    no_gitlab = DeployActivities(world.flux_settings, gitlab_down)
    with pytest.raises(ApplicationError) as e:
        await no_gitlab.deploy_state(DeployStateInput(scope=SCOPE, merge_sha=main))
    assert e.value.type == "TransportError" and not e.value.non_retryable
    no_gitlab.close()


def test_deploy_state_of_a_recorded_kustomization() -> None:
    docs = YAML(typ="safe", pure=True).load_all((FLUX_DIR / "flux2-testdata_get_kustomization_only.yaml").read_text())
    status = kustomization_status(next(d for d in docs if d and d["kind"] == "Kustomization"))
    applied = "696f056df216eea4f9401adbee0ff744d4df390f"
    merge = "1" * 40
    assert deploy_state_of(status, applied) == DeployState(
        applied=True, revision=f"main@sha1:{applied}", message=f"Applied revision: main@sha1:{applied}",
        kustomization="flux-system/podinfo", ready=True, reason="ReconciliationSucceeded",
        last_applied_revision=f"main@sha1:{applied}", applied_at=datetime(2021, 8, 1, 4, 52, 56, tzinfo=UTC),
    )  # fmt: skip  (applied_at: the Ready condition's lastTransitionTime)
    assert deploy_state_of(status, "2" * 40).applied_at is None, "not applied: no time"
    asked: list[tuple[str, str]] = []

    def is_ancestor(ancestor: str, descendant: str) -> bool:
        asked.append((ancestor, descendant))
        return ancestor == merge

    state = deploy_state_of(status, merge, is_ancestor)
    assert state.applied and state.via_descendant and asked == [(merge, applied)]
    assert not deploy_state_of(status, "2" * 40, is_ancestor).applied


# -- deploy_event ----------------------------------------------------------------------------------------------------
OLD_SHA = "71ea786475aba31c801435d840819f14a2cc0ef2"
NEW_SHA = "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"
VALIDATION = "service/apps/webapp validation error: spec.type: Unsupported value: Ingress"


def recorded_event(name: str, **changes: Any) -> Any:
    doc = json.loads((FLUX_DIR / name).read_text())
    doc.update(changes)
    return parse_event(doc)


def test_deploy_event_of_recorded_events() -> None:
    failed = DeployEvent(revision=f"main@sha1:{NEW_SHA}", ready=False, message=VALIDATION)
    expected = {
        "captured_notification-sink_gitrepository_newartifact.json": None,  # a source, not a deploy
        "captured_notification-sink_kustomization_progressing.json": None,  # info, not the outcome
        "nc-docs-v1beta1_generic-webhook-body_gitrepository_info.repaired.json": None,
        "nc-docs-v1beta3_event_kustomization_validationfailed.json": failed,  # "main/<sha>" under the new key
        "nc-docs-v1beta3_generic-webhook-body_kustomization.json": failed,
    }
    for name, want in expected.items():
        assert deploy_event(recorded_event(name)) == want, name
        assert deploy_event(recorded_event(name), "apps/webapp") == want, name
    assert deploy_event(recorded_event("nc-docs-v1beta3_generic-webhook-body_kustomization.json"), "apps/other") is None

    # the old "revision" key and "master/<sha>" format, on the captured Kustomization event as a success
    succeeded = recorded_event(
        "captured_notification-sink_kustomization_progressing.json",
        reason="ReconciliationSucceeded",
        message="Reconciliation finished in 2s, next run in 10m0s",
    )
    assert deploy_event(succeeded) == DeployEvent(
        revision=f"master@sha1:{OLD_SHA}", ready=True, message="Reconciliation finished in 2s, next run in 10m0s"
    )
    assert deploy_event(succeeded, "default/podinfo-kust") is not None
    # an error of a source, and a success without a revision, are not deploy outcomes
    source_error = recorded_event("captured_notification-sink_gitrepository_newartifact.json", severity="error")
    assert deploy_event(source_error) is None
    body = "nc-docs-v1beta3_generic-webhook-body_kustomization.json"
    no_revision = recorded_event(body, severity="info", reason="ReconciliationSucceeded", metadata={})
    assert deploy_event(no_revision) is None
    # untrusted text stays bounded
    long = recorded_event("nc-docs-v1beta3_generic-webhook-body_kustomization.json", message="x\x00" * 5_000)
    event = deploy_event(long)
    assert event is not None and len(event.message or "") <= 2_000 and "\x00" not in (event.message or "")


class FluxReceiver(Receiver):
    """The gateway's stand-in: records each (headers, body) the Flux notifier posts."""

    def __init__(self) -> None:
        super().__init__("/hooks/flux")

    def signals(self, key: str, kustomization: str) -> list[DeployEvent]:
        """What the gateway would signal: verified, parsed, mapped; ``None``s dropped."""
        out = []
        for headers, body in list(self.requests):
            assert verify_signature(body, headers.get("x-signature"), key)
            event = deploy_event(parse_event(decode(body, "body")), kustomization)
            if event is not None:
                out.append(event)
        return out

    def wait_for(self, key: str, kustomization: str, sha: str) -> DeployEvent:
        """The signal for revision ``sha`` of ``kustomization``, once it came (at most 5 s)."""

        def found() -> list[DeployEvent]:
            return [e for e in self.signals(key, kustomization) if sha in e.revision]

        with self.cond:
            assert self.cond.wait_for(found, 5.0), [json.loads(b)["reason"] for _, b in self.requests]
        (event,) = found()
        return event


@pytest.fixture
def receiver() -> Iterator[FluxReceiver]:
    r = FluxReceiver()
    yield r
    r.close()


async def test_deploy_events_of_the_sandbox_flux(start_sandbox: Any, receiver: FluxReceiver) -> None:  # noqa: F811
    world = start_world(start_sandbox, flux_webhook_url=receiver.url, flux_provider="generic-hmac")
    key = world.run.sb.credentials.flux_hmac_key.get_secret_value()
    prod = "flux-system/apps-production"
    try:
        seeded = world.run.sb.repos.branches(SCOPE)["main"]
        assert receiver.wait_for(key, prod, seeded).ready, "the first reconciliation of the seeded repository"
        merge = world.merge("fix/tag", world.production('newTag: "2.0.7"', 'newTag: "2.0.8"'))
        applied = receiver.wait_for(key, prod, merge)
        assert applied.ready and applied.revision == f"main@sha1:{merge}"
        assert applied.message and applied.message.startswith("Reconciliation finished in")
        # the poll agrees with the event
        assert (await world.state(merge)).revision == applied.revision

        bad = world.merge("fix/broken", world.production("  - ../base/inventory\n", "  - ../base/nope\n"))
        failed = receiver.wait_for(key, prod, bad)
        assert not failed.ready and failed.revision == f"main@sha1:{bad}"
        assert failed.message and "kustomize build failed" in failed.message
        assert (await world.state(bad)).failed

        # one outcome per revision for apps-production: Progressing events and apps-staging's outcomes are dropped
        assert [(e.revision, e.ready) for e in receiver.signals(key, prod)] == [
            (f"main@sha1:{seeded}", True), (f"main@sha1:{merge}", True), (f"main@sha1:{bad}", False)
        ]  # fmt: skip
        assert "Progressing" in [json.loads(b)["reason"] for _, b in receiver.requests]
        staging = receiver.wait_for(key, "flux-system/apps-staging", bad)
        assert staging.ready, "apps-staging builds the revision apps-production fails on"
    finally:
        world.flux.close()
