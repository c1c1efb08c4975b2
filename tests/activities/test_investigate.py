"""``investigate.culprit`` against the sandbox (GitLab on real git + the Flux stand-in): people's and fixloop's
commits merged through GitLab merge requests, applied by Flux, read back through GitLab's commits API, the Kubernetes
API and the Flux events the gateway would receive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from fixloop.activities.investigate import InvestigateActivities
from fixloop.app.ingest import decode
from fixloop.core.culprit import AppliedRevision
from fixloop.integrations.flux import FluxSettings, applied_revisions, parse_event, verify_signature
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.sandbox.server import endpoints
from fixloop.workflows.contracts.investigate import CulpritCandidate, CulpritInput, CulpritOutput
from tests.activities.sandbox_world import Clock, configured
from tests.receiver import Receiver
from tests.sandbox.conftest import Running, start_sandbox  # noqa: F401  (the fixture)

SCOPE = "platform/gitops"
PROD = "flux-system/apps-production"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
CATALOG = "apps/base/catalog/deployment.yaml"
PAYMENTS = "apps/base/payments/deployment.yaml"
CANDIDATES = [
    CulpritCandidate(entity="catalog", paths=["apps/base/catalog/"]),
    CulpritCandidate(entity="payments", paths=["apps/base/payments", "apps/production/kustomization.yaml"]),
]


@dataclass
class World:
    run: Running
    clock: Clock
    investigate: InvestigateActivities
    bot: GitLabClient
    reviewer: GitLabClient
    receiver: Receiver

    def at(self, minutes: int) -> datetime:
        self.clock.now = T0 + timedelta(minutes=minutes)
        return self.clock.now

    def change(
        self,
        author: GitLabClient,
        merger: GitLabClient,
        branch: str,
        path: str,
        old: str,
        new: str,
        message: str,
        minute: int,
    ) -> tuple[str, int]:
        """``author`` commits ``path`` with ``old`` -> ``new`` on ``branch`` at ``minute`` and opens the merge
        request; ``merger`` approves and merges it a minute later (Flux applies it then). (commit sha, MR iid)."""
        self.at(minute)
        text = author.read_file(path, "main")
        assert text is not None and old in text
        author.ensure_branch(branch, "main")
        commit = author.commit_files(branch, {path: text.replace(old, new, 1)}, message).sha
        mr = author.find_or_create_merge_request(branch, "main", message.splitlines()[0], "a change")
        self.at(minute + 1)
        handle = merger.project.mergerequests.get(mr.iid, lazy=True)
        handle.approve(sha=mr.sha)
        handle.merge(sha=mr.sha)
        return commit, mr.iid

    def person_changes_catalog(
        self, minute: int, branch: str = "catalog-memory", old: str = "memory:", new: str = "memory: "
    ) -> tuple[str, int]:
        """The reviewer (a person) changes the catalog's manifest; the bot approves, the reviewer merges."""
        return self.change(self.reviewer, self.bot, branch, CATALOG, old, new, f"catalog: {branch}", minute)

    def fixloop_changes_payments(self, minute: int, message: str = "Bump payments") -> tuple[str, int]:
        """fixloop (the bot) changes the payments manifest on a ``fixloop/`` branch; the reviewer merges."""
        return self.change(
            self.bot, self.reviewer, "fixloop/payments-image", PAYMENTS, "image:", "image: ", message, minute
        )

    def events(self) -> list[AppliedRevision]:
        """The applied revisions of the Flux events the gateway received (verified, parsed)."""
        key = self.run.sb.credentials.flux_hmac_key.get_secret_value()
        out = []
        for headers, body in list(self.receiver.requests):
            assert verify_signature(body, headers.get("x-signature"), key)
            out.append(parse_event(decode(body, "body")))
        return applied_revisions(None, out, PROD)

    def wait_applied(self, n: int) -> None:
        def done(reqs: list[tuple[dict[str, str], bytes]]) -> bool:
            return (
                sum(
                    json.loads(b)["reason"] == "ReconciliationSucceeded"
                    and PROD.endswith(json.loads(b)["involvedObject"]["name"])
                    for _, b in reqs
                )
                >= n
            )

        self.receiver.wait_until(done)

    async def ask(self, minute: int, events: bool = True) -> CulpritOutput:
        inp = CulpritInput(
            scope=SCOPE,
            onset=T0 + timedelta(minutes=minute),
            lookback_seconds=3_600,
            candidates=CANDIDATES,
            applied=self.events() if events else [],
        )
        return await self.investigate.culprit(inp)


@pytest.fixture
def world(start_sandbox: Any) -> Iterator[World]:  # noqa: F811
    receiver = Receiver("/hooks/flux")
    clock = Clock(T0)
    run = start_sandbox("/gitlab", "/kube", clock=clock, flux_webhook_url=receiver.url, flux_provider="generic-hmac")
    env = endpoints(run.sb)
    gitlab_settings = configured(GitLabSettings, env)
    reviewer = configured(GitLabSettings, env, token=run.sb.credentials.gitlab_reviewer_token.get_secret_value())
    investigate = InvestigateActivities(gitlab_settings, configured(FluxSettings, env))
    yield World(run, clock, investigate, GitLabClient(gitlab_settings), GitLabClient(reviewer), receiver)
    investigate.close()
    receiver.close()


async def test_a_persons_merged_change_applied_before_the_onset_is_named_with_author_and_mr(world: World) -> None:
    person = world.reviewer.check()
    bot = world.bot.check()
    world.wait_applied(1)  # the seeded repository
    catalog, catalog_mr = world.person_changes_catalog(5)
    fix, fix_mr = world.fixloop_changes_payments(10, "Bump payments\n\nFixloop-Work-Item: wi-1")
    world.wait_applied(3)

    out = await world.ask(20)
    by = {c.entity: c for c in out.candidates}
    found = by["catalog"].culprit
    assert found is not None, out
    assert found.commit.sha == catalog, "the person's commit (not the merge commit)"
    assert found.commit.author_name == person.name and found.commit.author_username == person.username
    assert found.commit.merge_request is not None and found.commit.merge_request.iid == catalog_mr
    assert not found.commit.by_fixloop
    assert found.applied_at == T0 + timedelta(minutes=6), "applied when Flux applied the merge (the event's time)"
    assert found.before_onset_seconds == 14 * 60
    assert [(f.path, f.added, f.removed) for f in found.commit.files] == [(CATALOG, 1, 1)]
    for part in (
        f"by {person.name} (@{person.username})",
        "a person's change",
        f"merged in !{catalog_mr}",
        "14 min before the onset",
        f"{CATALOG} (+1 -1)",
    ):
        assert part in found.evidence, (part, found.evidence)

    theirs = by["payments"].culprit
    assert theirs is not None and theirs.commit.sha == fix and theirs.commit.by_fixloop
    assert theirs.commit.author_username == bot.username and theirs.commit.merge_request.iid == fix_mr  # type: ignore[union-attr]
    assert "fixloop's change" in theirs.evidence

    # a later change of the catalog, applied after the onset, is never named for it; with a later onset it is
    later, later_mr = world.person_changes_catalog(30, "catalog-memory-2", "memory: ", "memory:  ")
    world.wait_applied(4)
    again = (await world.ask(20)).candidates[0].culprit
    assert again is not None and again.commit.sha == catalog
    now = (await world.ask(40)).candidates[0].culprit
    assert now is not None and now.commit.sha == later and now.commit.merge_request.iid == later_mr  # type: ignore[union-attr]
    assert now.applied_at == T0 + timedelta(minutes=31)


async def test_from_the_kustomization_status_alone(world: World) -> None:
    """Without events only the last applied revision has a time (Ready's lastTransitionTime): the commits it holds
    are applied then, and none is named for an onset before it."""
    catalog, _ = world.person_changes_catalog(5)
    world.fixloop_changes_payments(10)
    out = await world.ask(20, events=False)
    found = out.candidates[0].culprit
    assert found is not None and found.commit.sha == catalog
    assert found.applied_at == T0 + timedelta(minutes=11), "the latest revision holds it"
    assert [a.source for a in out.applied] == ["status"]
    assert all(c.culprit is None for c in (await world.ask(8, events=False)).candidates)


async def test_invalid_input_and_missing_kustomization(world: World) -> None:
    with pytest.raises(ApplicationError) as e:
        await world.investigate.culprit(
            CulpritInput(scope=SCOPE, onset=T0, candidates=CANDIDATES, kustomization="flux-system/nope")
        )
    assert e.value.type == "KustomizationNotFound" and e.value.non_retryable
    with pytest.raises(ApplicationError) as e:
        await world.investigate.culprit(CulpritInput(scope=SCOPE, onset=T0.replace(tzinfo=None), candidates=CANDIDATES))
    assert e.value.type == "InvalidInput"
    with pytest.raises(ValueError):
        CulpritCandidate(entity="x", paths=["../etc"])


async def test_a_candidate_without_paths_gets_its_workloads_paths_from_the_repository(world: World) -> None:
    """The loop hands in the services only: the activity finds ``apps/base/catalog`` and ``services/catalog`` (named
    after it) and names the person's change; an entity nothing in the repository is named after or declares reads
    no commit."""
    catalog, catalog_mr = world.person_changes_catalog(5)
    world.wait_applied(2)
    out = await world.investigate.culprit(
        CulpritInput(
            scope=SCOPE,
            onset=T0 + timedelta(minutes=20),
            lookback_seconds=3_600,
            candidates=[CulpritCandidate(entity="catalog"), CulpritCandidate(entity="search")],
            applied=world.events(),
        )
    )
    found, missing = out.candidates
    assert found.paths == ["apps/base/catalog", "services/catalog"]
    assert found.culprit is not None and found.culprit.commit.sha == catalog
    assert found.culprit.commit.merge_request is not None and found.culprit.commit.merge_request.iid == catalog_mr
    assert (missing.entity, missing.paths, missing.culprit, missing.commits_read) == ("search", [], None, 0)


def test_a_workload_is_found_by_its_manifest_when_nothing_is_named_after_it(world: World) -> None:
    """``candidate_paths`` falls back to the YAML files declaring a workload of that name."""
    tree = [("deploy/shop.yaml", "blob"), ("deploy/other.yaml", "blob"), ("README.md", "blob"), ("deploy", "tree")]
    texts = {
        "deploy/shop.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: Basket}\n---\nkind: Service\n",
        "deploy/other.yaml": "kind: Deployment\nmetadata: {name: checkout}\n",
    }

    class Files:
        def read_file(self, path: str, ref: str) -> str | None:
            return texts.get(path)

        def default_branch(self) -> str:
            return "main"

    world.investigate.gitlab = Files()  # type: ignore[assignment]
    assert world.investigate.candidate_paths("basket", tree, None) == ["deploy/shop.yaml"]
    assert world.investigate.candidate_paths("payments", tree, None) == []
