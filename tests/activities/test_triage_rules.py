"""The ``rules`` triage engine on the real reports and alerts in tests/fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from fixloop.app.ingest import parse_document
from fixloop.core.models import FIX_KINDS, Category, RecentDeploy, Signal, WorkItemKind
from fixloop.core.triage import os_level, triage_rules
from tests.conftest import fixture, signals
from tests.test_corpus import ALL_INPUTS


def all_signals() -> list[Signal]:
    out: list[Signal] = []
    for rel in ALL_INPUTS:
        out += signals(rel)
    return out


def test_every_signal_exactly_once_and_no_item_mixes_images() -> None:
    items = all_signals()
    result = triage_rules(items)
    placed = [fp for w in result.work_items for fp in w.signals] + [u.fingerprint for u in result.unassigned]
    assert sorted(placed) == sorted({s.fingerprint for s in items})  # exactly once
    by_fp = {s.fingerprint: s for s in items}
    for w in result.work_items:
        members = [by_fp[fp] for fp in w.signals]
        assert len({s.artifact for s in members}) == 1, f"{w.title} mixes artifacts"
        if w.kind is WorkItemKind.DEPENDENCY_BUMP:
            assert len({s.target for s in members}) == 1, f"{w.title} mixes manifests"
    assert len(result.work_items) < len(items) / 10  # few items for many signals


def test_fix_items_are_one_per_image_and_one_per_manifest() -> None:
    items = all_signals()
    fixable = [
        s
        for s in items
        if s.category is Category.VULNERABILITY and s.fixed_version and s.fix_status not in ("not_affected",)
    ]
    images = {s.artifact or s.target for s in fixable if os_level(s)}
    manifests = {(s.artifact, s.target) for s in fixable if not os_level(s)}
    result = triage_rules(items)
    fix_items = [w for w in result.work_items if w.kind in FIX_KINDS]
    assert len(fix_items) == len(images) + len(manifests)
    assert sum(w.kind is WorkItemKind.OS_REBUILD for w in fix_items) == len(images)


def test_a_package_is_raised_to_the_version_that_fixes_all_its_advisories() -> None:
    result = triage_rules(signals("trivy/trivy-0.22-fulldb_pip.json"))
    (item,) = result.work_items
    assert item.kind is WorkItemKind.DEPENDENCY_BUMP and item.target == "requirements.txt"
    (bump,) = item.packages
    # Werkzeug 0.11: five advisories fixed in 0.11.6, 0.11.11, 0.12, 0.15.0 and 0.15.3
    assert (bump.package, bump.installed_version, bump.fixed_version) == ("Werkzeug", "0.11", "0.15.3")
    assert len(bump.advisories) == 5
    assert item.title.startswith("Bump Werkzeug 0.11 \u2192 0.15.3 in requirements.txt (fixes 5 advisories")


def test_os_findings_become_one_rebuild_and_unfixed_ones_a_digest() -> None:
    result = triage_rules(signals("trivy/trivy-0.22-fulldb_centos-7.json"))
    kinds = sorted((w.kind.value, len(w.signals)) for w in result.work_items)
    assert kinds == [("os_rebuild", 100), ("risk_digest", 611)]
    rebuild = next(w for w in result.work_items if w.kind is WorkItemKind.OS_REBUILD)
    assert rebuild.artifact == "testdata/fixtures/images/centos-7.tar.gz" and rebuild.ecosystem == "rpm"


def test_not_affected_findings_are_unassigned_with_the_reason() -> None:
    result = triage_rules(signals("trivy/dd-trivy_all_statuses_example-app.json"))
    (u,) = result.unassigned
    assert u.reason == "the scanner reports it not affected"


def test_same_storm_twice_gives_the_same_work_item_ids() -> None:
    first = triage_rules(all_signals())
    again = triage_rules(list(reversed(all_signals())) + all_signals())  # re-delivered, in another order
    assert [w.id for w in first.work_items] == [w.id for w in again.work_items]
    assert len({w.id for w in first.work_items}) == len(first.work_items)


def _alert_at(minutes: int, service: str = "checkout") -> Signal:
    doc = json.loads(fixture("alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json").read_text())
    alert = doc["alerts"][0]
    alert["labels"]["service"] = service
    alert.pop("fingerprint")
    alert["labels"]["pod"] = f"pod-{minutes}"  # another alert of the same rule
    start = datetime(2022, 7, 26, 19, 0, tzinfo=UTC) + timedelta(minutes=minutes)
    alert["startsAt"] = start.isoformat()
    return parse_document(doc, ref=f"m{minutes}", received_at=start).signals[0]


def test_alerts_group_by_service_monitor_and_window() -> None:
    alerts = [_alert_at(0), _alert_at(10), _alert_at(50), _alert_at(130), _alert_at(5, service="payments")]
    result = triage_rules(alerts)
    windows = sorted((w.service, len(w.signals)) for w in result.work_items)
    assert windows == [("checkout", 1), ("checkout", 3), ("payments", 1)]
    assert all(
        w.kind is WorkItemKind.ALERT_INVESTIGATION and w.monitor_id == "HighPodMemory" for w in result.work_items
    )


def test_an_alert_after_a_fixloop_deploy_is_attached_to_that_loop() -> None:
    deployed = datetime(2022, 7, 26, 18, 30, tzinfo=UTC)
    deploy = RecentDeploy(work_item_id="wi-" + "a" * 24, service="checkout", deployed_at=deployed)
    result = triage_rules([_alert_at(0), _alert_at(5, service="payments")], recent_deploys=[deploy])
    attached = next(w for w in result.work_items if w.service == "checkout")
    assert attached.kind is WorkItemKind.DEPLOY_REGRESSION and attached.attached_to == deploy.work_item_id
    other = next(w for w in result.work_items if w.service == "payments")
    assert other.kind is WorkItemKind.ALERT_INVESTIGATION and other.attached_to is None
    late = triage_rules([_alert_at(120)], recent_deploys=[deploy])  # 2.5 h after the deploy: not attached
    assert late.work_items[0].attached_to is None


def test_cli_prints_every_signal_once() -> None:
    paths = [
        fixture("trivy/trivy-head_alpine-39.json"),
        fixture("snyk/dd-snyk_npm_1critical.json"),
        fixture("datadog/inres-docs_query_alert_monitor_triggered_P1.json"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "fixloop", "triage", *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"work_items", "unassigned"}
    placed = [fp for w in out["work_items"] for fp in w["signals"]] + [u["fingerprint"] for u in out["unassigned"]]
    assert len(placed) == len(set(placed)) == 6 + 1 + 1
    assert {w["kind"] for w in out["work_items"]} == {"os_rebuild", "dependency_bump", "alert_investigation"}
    for w in out["work_items"]:
        assert {"id", "title", "kind", "signals"} <= set(w)
