"""``change.plan_remediation`` then ``gitlab.open_merge_request`` against the sandbox (GitLab on real git, Flux, the
Datadog world model): a person's commit that breaks inventory is reverted by a merge request whose diff is exactly
the revert; a catalog cache too large for its memory limit gets a memory merge request whose new limit is the peak
the sandbox's Datadog observed x the policy's headroom; a disallowed action or a revert that conflicts opens none
and says why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fixloop.activities.investigate import InvestigateActivities
from fixloop.activities.merge_request import MergeRequestActivities
from fixloop.activities.plan import PlanActivities
from fixloop.app.ingest import parse_document
from fixloop.core.change.ops import RevertCommit, SetMemory
from fixloop.core.models import Signal, WorkItem, WorkItemKind
from fixloop.core.topology import from_policy_text
from fixloop.core.triage import triage_rules
from fixloop.integrations.datadog.api import DatadogSettings
from fixloop.integrations.flux import FluxSettings
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.sandbox.server import endpoints
from fixloop.workflows.contracts.investigate import CulpritCandidate, CulpritInput
from fixloop.workflows.contracts.merge_request import OpenMergeRequestInput
from fixloop.workflows.contracts.plan import PlanRemediationInput
from tests.activities.sandbox_world import Clock, configured
from tests.conftest import FIXTURES
from tests.sandbox.conftest import Running, start_sandbox  # noqa: F401  (the fixture)

SCOPE = "platform/gitops"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
DD_TEMPLATE = FIXTURES / "datadog" / "inres-docs_query_alert_monitor_triggered_P1.json"


@dataclass
class Shop:
    run: Running
    clock: Clock
    person: GitLabClient
    bot: GitLabClient
    plan: PlanActivities
    mr: MergeRequestActivities
    investigate: InvestigateActivities

    def at(self, minutes: float) -> datetime:
        self.clock.now = T0 + timedelta(minutes=minutes)
        return self.clock.now

    def person_changes(self, path: str, old: str, new: str, title: str, minute: float) -> str:
        """The reviewer (a person) changes ``path`` on a branch, the bot approves, the person merges: the commit."""
        self.at(minute)
        text = self.person.read_file(path, "main")
        assert text is not None and old in text, (path, old)
        branch = title.split(":")[0].replace(" ", "-") + f"-{int(minute)}"
        self.person.ensure_branch(branch, "main")
        sha = self.person.commit_files(branch, {path: text.replace(old, new, 1)}, title).sha
        mr = self.person.find_or_create_merge_request(branch, "main", title, "a person's change")
        self.bot.project.mergerequests.get(mr.iid, lazy=True).approve(sha=mr.sha)
        self.person.project.mergerequests.get(mr.iid, lazy=True).merge(sha=mr.sha)
        self.at(minute + 1)
        return sha


def alert(service: str, minute: float, monitor: str = "41000009") -> Signal:
    """A real Datadog monitor webhook (the inres docs example), re-targeted at ``service`` and ``minute``."""
    doc = json.loads(DD_TEMPLATE.read_text())
    at = T0 + timedelta(minutes=minute)
    ms = str(int(at.timestamp() * 1000))
    doc.update(
        tags=f"service:{service},env:production",
        last_updated=ms,
        date=ms,
        id=monitor,
        aggregate=f"{service}-{monitor}",
        title=f"[Triggered] High error rate on {service}",
    )
    (s,) = parse_document(doc, ref=f"dd-{service}-{monitor}", received_at=at).signals
    return s


@pytest.fixture
def shop(start_sandbox: Any) -> Iterator[Shop]:  # noqa: F811
    clock = Clock(T0)
    run = start_sandbox(clock=clock)
    env = endpoints(run.sb)
    gitlab = configured(GitLabSettings, env)
    person = configured(GitLabSettings, env, token=run.sb.credentials.gitlab_reviewer_token.get_secret_value())
    flux = configured(FluxSettings, env)
    plan = PlanActivities(gitlab, datadog=configured(DatadogSettings, env))
    investigate = InvestigateActivities(gitlab, flux)
    yield Shop(
        run, clock, GitLabClient(person), GitLabClient(gitlab), plan, MergeRequestActivities(gitlab), investigate
    )
    investigate.close()
    plan.close()


def _incident(shop: Shop, alerts: list[Signal]) -> WorkItem:
    policy = shop.bot.read_file("fixloop.yaml", "main")
    (wi,) = triage_rules(alerts, topology=from_policy_text(policy)).work_items
    assert wi.kind is WorkItemKind.INCIDENT
    return wi


async def _plan(shop: Shop, wi: WorkItem, alerts: list[Signal]) -> Any:
    assert wi.incident is not None
    names = list(dict.fromkeys(c.service or c.entity for c in wi.incident.candidates))
    found = await shop.investigate.culprit(
        CulpritInput(
            scope=SCOPE,
            onset=wi.incident.onset,
            lookback_seconds=86_400,
            candidates=[CulpritCandidate(entity=n) for n in names],
        )
    )
    return await shop.plan.plan_remediation(
        PlanRemediationInput(scope=SCOPE, work_item=wi, signals=alerts, investigation=found, jira_key="OPS-7")
    )


async def test_a_persons_breaking_commit_is_reverted_by_a_merge_request_of_exactly_its_revert(shop: Shop) -> None:
    path = "apps/base/inventory/deployment.yaml"
    sha = shop.person_changes(path, 'value: "20"', 'value: "2"', "inventory: 2 database connections per pod", 5)
    shop.at(20)
    alerts = [alert("inventory", 12, "41000009"), alert("catalog", 12.2, "41000005")]
    wi = _incident(shop, alerts)
    planned = await _plan(shop, wi, alerts)

    assert planned.located, planned.reason
    assert planned.action == "revert" and planned.service == "inventory"
    (op,) = planned.remedies
    assert isinstance(op, RevertCommit) and op.sha == sha and op.files == (path,)
    assert planned.title.startswith("Revert the culprit change of inventory (incident:")
    for part in (
        "### Why this change",
        "### Culprit change",
        sha[:12],
        "### Verification",
        "`221164084`",  # the monitor of the real payload (its link), which the verification waits for
        "### Rollback",
    ):
        assert part in planned.description, part
    assert '-              value: "2"' in planned.description
    assert '+              value: "20"' in planned.description
    ref = await shop.mr.open_merge_request(
        OpenMergeRequestInput(scope=SCOPE, work_item=wi, change=planned, jira_key="OPS-7")
    )
    diffs = shop.bot.merge_request_diffs(ref.iid)
    assert [d.new_path for d in diffs] == [path]
    changed = [ln for ln in diffs[0].diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert changed == ['-              value: "2"', '+              value: "20"']


async def test_a_cache_too_large_for_its_limit_gets_a_memory_merge_request_from_the_observed_peak(shop: Shop) -> None:
    path = "apps/base/catalog/deployment.yaml"
    shop.person_changes(path, 'value: "64"', 'value: "160"', "catalog: cache 160 MB of products", 5)
    shop.at(15)  # the pods fill up and are OOMKilled: the sandbox's Datadog has the series
    oom = alert("catalog", 12, "41000103")
    oom = oom.model_copy(update={"title": "[Triggered] Containers OOMKilled on catalog"})
    wi = _incident(shop, [oom])
    planned = await _plan(shop, wi, [oom])

    assert planned.located, planned.reason
    assert planned.action == "memory"
    (op,) = planned.remedies
    assert isinstance(op, SetMemory) and (op.path, op.current_limit) == (path, "256Mi")
    assert op.limit == "336Mi"  # the peak (the old limit, 256 MiB) x 1.3 = 332.8 MiB, rounded up to 16 Mi
    assert "### Figures" in planned.description and "1.3" in planned.description


async def test_a_disallowed_action_opens_no_merge_request_and_says_why(shop: Shop) -> None:
    policy = shop.bot.read_file("fixloop.yaml", "main") or ""
    shop.bot.commit_files("main", {"fixloop.yaml": policy + "incidents:\n  actions: [replicas]\n"}, "only replicas")
    path = "apps/base/inventory/deployment.yaml"
    shop.person_changes(path, 'value: "20"', 'value: "2"', "inventory: 2 database connections per pod", 5)
    shop.at(20)
    alerts = [alert("inventory", 12)]
    planned = await _plan(shop, _incident(shop, alerts), alerts)
    assert not planned.located and planned.remedies == []
    assert "revert not allowed by fixloop.yaml incidents.actions" in (planned.reason or "")
