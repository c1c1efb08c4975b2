"""The rules triage engine and the triage activity with a topology (issue 16, scope 2): a storm of real Datadog and
Alertmanager payloads over connected services is one ``incident`` work item instead of one ``alert_investigation``
per service and monitor; without a topology (none, an empty one, none in fixloop.yaml, or a GitLab read failure)
the result is today's. The payloads and the ``topology:`` section are tests/test_incidents.py's."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import Request, Response
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment

from fixloop.activities.triage import TriageActivities, manifest_paths
from fixloop.app.ingest import parse_document
from fixloop.app.worker import Integrations, activities
from fixloop.core import incidents, topology
from fixloop.core.models import RecentDeploy, Signal, TriageResult, WorkItemKind
from fixloop.core.triage import triage_rules
from fixloop.integrations.datadog.api import DatadogSettings
from fixloop.integrations.errors import IntegrationError
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.sandbox.app import SERVICES, Sandbox, create_app
from fixloop.sandbox.config import SandboxConfig
from fixloop.sandbox.seed import seed_files
from fixloop.sandbox.server import bind, endpoints, serve_in_thread
from fixloop.workflows.contracts.triage import GroupSignalsInput
from tests.activities.sandbox_world import configured
from tests.conftest import fixture, signals
from tests.sandbox.conftest import with_env
from tests.test_incidents import DD_DEMO, POLICY, T0, WINDOW, _topo, dd, payments_storm, storm

ALPINE = "trivy/trivy-0.22-fulldb_alpine-39.json"


def _assigned_once(result: TriageResult, given: list[Signal]) -> None:
    """The engine's accounting invariant: every distinct input fingerprint in exactly one work item or unassigned."""
    seen = [fp for w in result.work_items for fp in w.signals] + [u.fingerprint for u in result.unassigned]
    assert sorted(seen) == sorted({s.fingerprint for s in given})


def test_a_storm_over_three_connected_services_is_one_incident_instead_of_five_investigations() -> None:
    alerts = storm()
    findings = signals(ALPINE)
    before = triage_rules([*findings, *alerts])
    investigations = [w for w in before.work_items if w.kind is WorkItemKind.ALERT_INVESTIGATION]
    assert len(investigations) == 5  # today: one per (service, monitor)

    result = triage_rules([*findings, *alerts], topology=_topo())
    (incident,) = [w for w in result.work_items if w.kind is WorkItemKind.INCIDENT]
    assert not [w for w in result.work_items if w.kind is WorkItemKind.ALERT_INVESTIGATION]
    assert sorted(incident.signals) == sorted(a.fingerprint for a in alerts)
    title = "Incident: 6 alerts on catalog, inventory, storefront; likely root cause inventory"
    assert incident.title.startswith(title)
    assert incident == incidents.work_item(incidents.correlate(alerts, _topo(), window=WINDOW)[0])
    # findings are untouched by the topology
    assert [w for w in result.work_items if w.kind is not WorkItemKind.INCIDENT] == [
        w for w in before.work_items if w.kind is not WorkItemKind.ALERT_INVESTIGATION
    ]
    _assigned_once(result, [*findings, *alerts])


def test_an_alert_on_an_entity_missing_from_the_topology_is_its_own_work_item() -> None:
    stray = dd(DD_DEMO, "search", 30)
    result = triage_rules([*storm(), stray], topology=_topo())
    assert [w.kind for w in result.work_items] == [WorkItemKind.INCIDENT, WorkItemKind.INCIDENT]
    (alone,) = [w for w in result.work_items if stray.fingerprint in w.signals]
    assert alone.signals == [stray.fingerprint] and "likely root cause search" in alone.title


def test_the_incident_window_setting_splits_alerts_further_apart() -> None:
    alerts = storm()  # 0 s .. 120 s, each within 60 s of the previous one on a connected service
    assert len(triage_rules(alerts, topology=_topo(), incident_window=timedelta(seconds=60)).work_items) == 1
    split = triage_rules(alerts, topology=_topo(), incident_window=timedelta(seconds=30)).work_items
    assert len(split) > 1 and {w.kind for w in split} == {WorkItemKind.INCIDENT}


def test_alerts_after_a_fixloop_deploy_stay_todays_deploy_regression_with_a_topology() -> None:
    deploy = RecentDeploy(work_item_id="wi-" + "c" * 24, service="catalog", deployed_at=T0 - timedelta(minutes=10))
    alerts = storm()
    today = triage_rules(alerts, recent_deploys=[deploy])
    result = triage_rules(alerts, recent_deploys=[deploy], topology=_topo())
    regressions = [w for w in result.work_items if w.kind is WorkItemKind.DEPLOY_REGRESSION]
    assert regressions == [w for w in today.work_items if w.kind is WorkItemKind.DEPLOY_REGRESSION]
    assert regressions and {w.attached_to for w in regressions} == {deploy.work_item_id}
    # inventory and storefront are not neighbours without catalog's (attached) alerts: two incidents
    assert [w.kind for w in result.work_items if w not in regressions] == [WorkItemKind.INCIDENT] * 2
    _assigned_once(result, alerts)


def test_without_a_topology_the_result_is_todays_exactly() -> None:
    given_ = [*signals(ALPINE), *storm(), *payments_storm()]
    today = triage_rules(given_)
    assert len(today.work_items) > 5
    assert triage_rules(given_, topology=None) == today
    assert triage_rules(given_, topology=topology.Topology()) == today  # a topology with no entities
    assert triage_rules(given_, topology=topology.from_policy_text("change:\n  max_files: 3\n")) == today


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=20),
    window=st.integers(min_value=1, max_value=3600),
)
def test_every_alert_in_exactly_one_work_item_and_ids_independent_of_order(picks: list[int], window: int) -> None:
    pool = [*storm(), *payments_storm(), dd(DD_DEMO, "search", 30)]
    given_ = [pool[i] for i in picks]  # repeats are re-deliveries
    result = triage_rules(given_, topology=_topo(), incident_window=timedelta(seconds=window))
    _assigned_once(result, given_)
    again = triage_rules([*reversed(given_), *given_], topology=_topo(), incident_window=timedelta(seconds=window))
    assert again == result


class _GitLab:
    """A stand-in for the activity's GitLab client: ``fixloop.yaml`` at the default branch's head (no manifests),
    or a read failure of it."""

    def __init__(self, text: str | None = None, error: Exception | None = None) -> None:
        self.text, self.error, self.reads = text, error, 0

    def default_branch(self) -> str:
        return "main"

    def branch_head(self, name: str) -> str:
        assert name == "main"
        return "0" * 40

    def tree(self, **_: object) -> list[object]:
        return []

    def read_file(self, path: str, ref: str) -> str | None:
        assert (path, ref) == ("fixloop.yaml", "0" * 40)
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.text


async def _activity(acts: TriageActivities, alerts: list[Signal], **kw: object) -> TriageResult:
    return await ActivityEnvironment().run(acts.group_signals, GroupSignalsInput(scope="s", signals=alerts, **kw))


async def test_the_activity_heartbeats_at_its_steps() -> None:
    """Under Temporal ``triage.group_signals`` heartbeats before reading the topology, before the engine and before
    locating the fixes (a dead worker is noticed within ``TRIAGE_HEARTBEAT``)."""
    alerts = storm()
    acts = TriageActivities()
    acts.gitlab = _GitLab(POLICY)  # type: ignore[assignment]
    env = ActivityEnvironment()
    beats: list[str] = []
    env.on_heartbeat = lambda *details: beats.extend(details)
    result = await env.run(acts.group_signals, GroupSignalsInput(scope="s", signals=alerts))
    assert [w.kind for w in result.work_items] == [WorkItemKind.INCIDENT]
    assert beats == ["read the topology", "triage 6 signals with rules", "locate the fixes of 1 work item(s)"]


@pytest.mark.parametrize(
    ("gitlab", "incident"),
    [
        (_GitLab(POLICY), True),
        (_GitLab(None), False),  # no fixloop.yaml
        (_GitLab("change:\n  max_files: 3\n"), False),  # no topology: section
        (_GitLab(error=IntegrationError("gitlab", "read fixloop.yaml@main: 503")), False),
        (_GitLab("topology: [not, a, mapping]\n"), False),  # malformed: a warning, never a failed triage
    ],
)
async def test_the_activity_reads_the_topology_from_fixloop_yaml_and_falls_back_to_todays(
    gitlab: _GitLab, incident: bool, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = storm()
    acts = TriageActivities()
    acts.gitlab = gitlab  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING):
        result = await _activity(acts, alerts)
    assert gitlab.reads == 1
    if incident:
        assert [w.kind for w in result.work_items] == [WorkItemKind.INCIDENT]
    else:
        assert result == triage_rules(alerts)
    warned = [r.getMessage() for r in caplog.records if "topology source failed" in r.getMessage()]
    if gitlab.error is not None or (gitlab.text or "").startswith("topology:"):
        (message,) = warned  # the failure is named, the triage goes on (the manifests, none here, still count)
        error = "IntegrationError" if gitlab.error else "ValueError"
        assert f"{error} reading fixloop.yaml" in message
    else:
        assert warned == []


async def test_the_activity_names_a_scanned_images_service_from_fixloop_yaml_images() -> None:
    """The seeded ``fixloop.yaml`` maps registry.sandbox.local/shop/catalog to catalog (``images:``): the real Trivy
    report, as CI scanning that image reports it, is a ``catalog-os-rebuild-...`` item named after catalog, read with
    the same one read of ``fixloop.yaml`` as the topology. With a malformed ``images:`` the topology still counts,
    and its service catalog is still the image's name."""
    doc = json.loads(fixture("trivy/trivy-head_alpine-39.json").read_text())
    doc["ArtifactName"] = "registry.sandbox.local/shop/catalog:1.4.2"
    found = parse_document(doc, ref="ci", received_at=T0).signals
    policy = seed_files()["fixloop.yaml"]
    acts = TriageActivities()
    acts.gitlab = gitlab = _GitLab(policy)  # type: ignore[assignment]
    (item,) = (await _activity(acts, found)).work_items
    assert gitlab.reads == 1 and item.service == "catalog" and item.id.startswith("catalog-os-rebuild-")
    assert item.title.startswith("Rebuild catalog on a patched base image (fixes 3 CVEs")
    assert (await _activity(TriageActivities(), found)).work_items[0].id.startswith("os-rebuild-")  # no repository
    broken = TriageActivities()
    broken.gitlab = _GitLab(policy.replace("images:", "images: [not, a, mapping]\nold_images:"))  # type: ignore[assignment]
    (named,) = (await _activity(broken, found)).work_items
    assert named.id == item.id and named.title == item.title
    assert [w.kind for w in (await _activity(broken, storm())).work_items] == [WorkItemKind.INCIDENT]


async def test_the_activity_uses_a_topology_handed_in_and_the_inputs_incident_window() -> None:
    acts = TriageActivities(topology=_topo())
    assert acts.gitlab is None
    assert len((await _activity(acts, storm())).work_items) == 1
    split = await _activity(acts, storm(), incident_window=timedelta(seconds=30))
    assert len(split.work_items) > 1
    assert (await _activity(TriageActivities(), storm())) == triage_rules(storm())


def test_the_worker_hands_the_triage_activity_its_gitlab_to_read_the_topology_from() -> None:
    def triage_of(config: Integrations) -> TriageActivities:
        (fn,) = [f for f in activities(integrations=config) if getattr(f, "__name__", "") == "group_signals"]
        return fn.__self__  # type: ignore[attr-defined]

    assert triage_of(Integrations()).gitlab is None
    settings = GitLabSettings(_env_file=None, url="https://gitlab.acme.test", token="glpat-secret")  # type: ignore[call-arg]
    assert isinstance(triage_of(Integrations(gitlab=settings)).gitlab, GitLabClient)


# --- the topology built from the sandbox's repository (fixloop.yaml, manifests) and its APM service map ----------


@dataclass
class _Sandbox:
    sb: Sandbox
    env: dict[str, str]
    paths: list[str]  # every request's path, in order

    def count(self, fragment: str) -> int:
        return sum(fragment in p for p in self.paths)

    def gitlab(self, **override: str) -> GitLabSettings:
        return configured(GitLabSettings, self.env, **override)

    def datadog(self, **override: str) -> DatadogSettings:
        return configured(DatadogSettings, self.env, **override)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[_Sandbox]:
    """GitLab (which seeds ``platform/gitops``) and Datadog, counting the requests they get."""
    sock = bind()
    sb = Sandbox.open(SandboxConfig(state_dir=tmp_path, public_url=f"http://127.0.0.1:{sock.getsockname()[1]}"))
    app = create_app(sb, tuple(s for s in SERVICES if s[0] in ("/gitlab", "/datadog")))
    paths: list[str] = []

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        paths.append(request.url.path)
        return await call_next(request)

    with serve_in_thread(app, sock):
        yield _Sandbox(sb, endpoints(sb), paths)


def _wire_the_shop(settings: GitLabSettings) -> None:
    """storefront calls catalog (an env URL), catalog calls inventory (a qualified Service name with a port)."""
    gl = GitLabClient(settings)
    deployment = "apps/base/{}/deployment.yaml"
    texts = {
        deployment.format("storefront"): {"CATALOG_URL": "http://catalog/api/v1"},
        deployment.format("catalog"): {"INVENTORY_ADDR": "inventory.default.svc.cluster.local:80"},
    }
    files = {path: with_env(gl.read_file(path, "main") or "", env) for path, env in texts.items()}
    gl.commit_files("main", files, "shop: storefront -> catalog -> inventory")


async def test_the_activity_builds_the_topology_from_the_manifests_once_per_head_commit(sandbox: _Sandbox) -> None:
    """The seeded repository's ``topology:`` section and its manifests' env values (the seed's, and the ones this
    test adds) are merged, and the storm over storefront, catalog and inventory is one incident. A second call on
    the same head lists no tree
    and reads no file again; a new commit is read once more."""
    _wire_the_shop(sandbox.gitlab())
    sandbox.paths.clear()
    acts = TriageActivities(gitlab=sandbox.gitlab())
    result = await _activity(acts, storm())
    assert [w.kind for w in result.work_items] == [WorkItemKind.INCIDENT]
    assert result.work_items[0].incident is not None
    assert result.work_items[0].incident.candidates[0].entity == "inventory"
    trees, reads = sandbox.count("/repository/tree"), sandbox.count("/repository/files/")
    assert trees == 1 and reads == 11  # fixloop.yaml and the five services' deployment.yaml and service.yaml
    assert (await _activity(acts, storm())) == result
    assert (sandbox.count("/repository/tree"), sandbox.count("/repository/files/")) == (trees, reads)
    GitLabClient(sandbox.gitlab()).commit_files("main", {"services/catalog/NOTES": "x\n"}, "a note")
    sandbox.paths.clear()
    assert (await _activity(acts, storm())) == result
    assert (sandbox.count("/repository/tree"), sandbox.count("/repository/files/")) == (trees, reads)


def test_the_manifests_read_are_those_kustomize_uses() -> None:
    paths = [
        "fixloop.yaml",
        ".gitlab-ci.yml",
        "apps/base/a/kustomization.yaml",
        "apps/base/a/deployment.yaml",
        "apps/base/a/extra/configmap.yml",
        "apps/production/kustomization.yaml",
        "charts/values.yaml",
        "services/a/Dockerfile",
    ]
    assert manifest_paths(paths) == ["apps/base/a/deployment.yaml", "apps/base/a/extra/configmap.yml"]
    assert manifest_paths(["a.yaml", "b/c.yml", "fixloop.yaml", "d.txt"]) == ["a.yaml", "b/c.yml"]


async def test_apm_counts_when_the_repository_fails_and_no_source_is_no_topology(
    sandbox: _Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """GitLab refusing the token: a warning naming GitLab's error, and Datadog's service map (the sandbox's, from
    the same manifests) still makes the incident. Datadog failing too: no topology, today's per-monitor items."""
    _wire_the_shop(sandbox.gitlab())
    broken = sandbox.gitlab(token="glpat-wrong")
    with caplog.at_level(logging.WARNING):
        result = await _activity(TriageActivities(gitlab=broken, datadog=sandbox.datadog()), storm())
    assert [w.kind for w in result.work_items] == [WorkItemKind.INCIDENT]
    (warned,) = [r.getMessage() for r in caplog.records if "topology source failed" in r.getMessage()]
    assert "AuthError reading the default branch" in warned and "HTTP 401" in warned
    assert sandbox.count("/api/v1/service_dependencies") == 1
    caplog.clear()
    wrong_key = sandbox.datadog(app_key="wrong")
    with caplog.at_level(logging.WARNING):
        today = await _activity(TriageActivities(gitlab=broken, datadog=wrong_key), storm())
    assert today == triage_rules(storm())
    messages = [r.getMessage() for r in caplog.records]
    assert any("AuthError reading datadog service dependencies" in m and "HTTP 403" in m for m in messages)
    assert any("no topology for triage: every configured source failed" in m for m in messages)
    no_env = {k: v for k, v in sandbox.env.items() if k != "FIXLOOP_DATADOG_SERVICE_DEPENDENCIES_ENV"}
    assert TriageActivities(datadog=configured(DatadogSettings, no_env)).datadog is None  # APM is not asked then


async def test_the_activity_names_each_demo_fix_after_the_service_its_fix_is_located_in(sandbox: _Sandbox) -> None:
    """The demo's three real reports name a tarball, a scanned directory and a Snyk project, which nothing maps to
    a service; the planner's locator on the seeded repository finds each fix in one service's files, so triage
    names the items ``catalog``, ``payments`` and ``storefront`` in their ids and titles, with the hash of the
    grouping (the id without the service, as before). Without a repository they keep the artifact's name."""
    reports = Path(__file__).resolve().parents[2] / "examples" / "demo" / "reports"
    found = [
        s
        for path in sorted(reports.glob("*.json"))
        for s in parse_document(json.loads(path.read_text()), ref="ci", received_at=T0).signals
    ]
    unnamed = (await _activity(TriageActivities(), found)).work_items
    named = (await _activity(TriageActivities(gitlab=sandbox.gitlab()), found)).work_items
    assert [w.signals for w in named] == [w.signals for w in unnamed]  # the same grouping
    by_service = {w.service: w for w in named}
    assert set(by_service) == {"catalog", "payments", "storefront"}, [w.id for w in named]
    for before, after in zip(unnamed, named, strict=True):
        assert before.service is None and after.id == f"{after.service}-{before.id}", (before.id, after.id)
        assert after.service in after.title and (before.artifact or "") not in after.title, after.title
    assert by_service["catalog"].title.startswith("Rebuild catalog on a patched base image")
    assert by_service["payments"].id.startswith("payments-dependency-bump-")
