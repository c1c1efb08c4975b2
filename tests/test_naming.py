"""Names that say what they are (issue 19): a work item's id ``<service>-<kind>-<hash>`` (deterministic, bounded, in
a charset every system it lands in accepts), the service of a scanned artifact at triage, the service and title once
planning found the change, and one counting rule for advisories shared by the work item, its merge request and its
Jira issue, on the real reports of tests/fixtures."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.activities.work_item import issue_description
from fixloop.app.gateway.hooks import fixloop_work_item
from fixloop.app.ingest import parse_document
from fixloop.core.change import Plan, plan
from fixloop.core.change.mr import render
from fixloop.core.change.policy import load_policy
from fixloop.core.models import (
    SERVICE_SLUG_MAX,
    WORK_ITEM_ID,
    WORK_ITEM_ID_MAX,
    Severity,
    WorkItem,
    WorkItemKind,
    advisory_counts,
    service_slug,
    work_item_id,
)
from fixloop.core.naming import named
from fixloop.core.service import ServiceNames, service_of_paths
from fixloop.core.topology import from_policy_text
from fixloop.core.triage import triage_rules
from fixloop.integrations.jira import fixloop_label
from fixloop.sandbox.seed import seed_files
from fixloop.workflows.contracts.loop import loop_id
from tests.change.helpers import SEED, tags
from tests.conftest import fixture, signals

SCOPE = "platform/gitops"
ALPINE = "trivy/trivy-head_alpine-39.json"
SEEDED_POLICY = seed_files()["fixloop.yaml"]


def _only(items: list[WorkItem], kind: WorkItemKind) -> WorkItem:
    (item,) = [w for w in items if w.kind is kind]
    return item


# --- the id -------------------------------------------------------------------------------------------------------


def test_a_report_without_a_known_service_gives_kind_and_hash_the_same_on_every_delivery() -> None:
    found = signals(ALPINE)
    item = _only(triage_rules(found).work_items, WorkItemKind.OS_REBUILD)
    assert re.fullmatch(r"os-rebuild-[0-9a-f]{16}", item.id), item.id
    assert item.service is None
    shuffled = list(found)
    random.Random(7).shuffle(shuffled)
    assert [w.id for w in triage_rules(shuffled + found).work_items] == [w.id for w in triage_rules(found).work_items]
    assert loop_id(SCOPE, item.id) == f"remediate/{SCOPE}/{item.id}"
    other = _only(triage_rules(signals("trivy/trivy-0.22-fulldb_alpine-39.json")).work_items, WorkItemKind.OS_REBUILD)
    assert other.id == item.id  # the same image scanned again (another Trivy, another DB): the same loop


def test_alert_ids_name_their_service() -> None:
    result = triage_rules(signals("datadog/datadog-docs_default_webhook_payload_template.json"))
    for w in result.work_items:
        assert re.fullmatch(WORK_ITEM_ID, w.id) and len(w.id) <= WORK_ITEM_ID_MAX
        slug = service_slug(w.service)
        assert w.id == f"{slug}-alert-investigation-{w.id[-16:]}" if slug else w.id.startswith("alert-investigation-")


@given(st.text(max_size=600), st.sampled_from(list(WorkItemKind)), st.text(max_size=40))
def test_any_service_gives_a_valid_bounded_id(service: str, kind: WorkItemKind, part: str) -> None:
    wid = work_item_id(kind, service, kind.value, part)
    assert re.fullmatch(WORK_ITEM_ID, wid) and len(wid) <= WORK_ITEM_ID_MAX, wid
    assert wid == work_item_id(kind, service, kind.value, part)  # deterministic
    slug = service_slug(service)
    assert len(slug) <= SERVICE_SLUG_MAX and (slug == "" or re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug))
    assert wid == "-".join(p for p in (slug, kind.value.replace("_", "-"), wid[-16:]) if p)
    # every place the id lands accepts it: the model, a git branch the gateway maps back, a Jira label
    WorkItem(id=wid, kind=kind, title="t", severity=Severity.LOW, signals=["s"])
    assert fixloop_work_item(f"fixloop/{wid}") == wid
    assert fixloop_work_item(f"fixloop/revert/{wid}/{'0' * 12}") == wid
    assert fixloop_label(wid) == f"fixloop:{wid}"


def test_ids_of_earlier_releases_still_route() -> None:
    old = "wi-" + "b3c2f0ababecf5c9b0a5cbaf"
    WorkItem(id=old, kind=WorkItemKind.OS_REBUILD, title="t", severity=Severity.LOW, signals=["s"])
    assert fixloop_work_item(f"fixloop/{old}") == old
    assert fixloop_work_item("fixloop/catalog-os-rebuild-0123") is None  # no full hash: not fixloop's branch
    assert fixloop_work_item("fixloop/Catalog-os-rebuild-0123456789abcdef") is None


# --- the service at triage ----------------------------------------------------------------------------------------


def _retargeted(rel: str, artifact: str) -> list:
    """The signals of real report ``rel`` as CI scanning ``artifact`` (an image it built) would report it."""
    doc = json.loads(fixture(rel).read_text())
    doc["ArtifactName"] = artifact
    return parse_document(doc, ref=rel, received_at=datetime(2024, 6, 1, tzinfo=UTC)).signals


def test_a_scanned_image_of_fixloop_yaml_images_is_its_service_from_the_start() -> None:
    """The seeded ``fixloop.yaml``: ``images:`` maps registry.sandbox.local/shop/catalog to catalog (its source folder
    services/catalog); a scan of a tag of it names catalog in the id, the title and the service."""
    names = ServiceNames.of(from_policy_text(SEEDED_POLICY), load_policy(SEEDED_POLICY).chain.services())
    found = _retargeted(ALPINE, "registry.sandbox.local/shop/catalog:1.4.2@sha256:" + "ab" * 32)
    item = _only(triage_rules(found, names=names).work_items, WorkItemKind.OS_REBUILD)
    assert item.service == "catalog"
    assert re.fullmatch(r"catalog-os-rebuild-[0-9a-f]{16}", item.id)
    assert item.title == "Rebuild catalog on a patched base image (fixes 3 CVEs: 1 critical, 2 medium)"
    # the same report without the map: the artifact, and another id (the service is part of the name)
    bare = _only(triage_rules(found).work_items, WorkItemKind.OS_REBUILD)
    assert bare.service is None and bare.title.startswith("Rebuild registry.sandbox.local/shop/catalog:1.4.2@")
    assert bare.id.removeprefix("os-rebuild-") == item.id.removeprefix("catalog-os-rebuild-")


@pytest.mark.parametrize(
    ("report", "names", "service"),
    [
        # the image repository (tag and digest stripped) in images:
        ("grype/grype-0.66_keycloak-21.0.2.json", ServiceNames.of(images={"docker.io/keycloak/keycloak": "iam"}),
         "iam"),
        # the image's name is a service the topology knows
        ("trivy/dd-trivy_all_statuses_example-app.json", ServiceNames(services=frozenset({"example-app"})),
         "example-app"),
        ("grype/dd-grype-0.96_xjoin-kafka-connect-strimzi.json", ServiceNames(), None),  # known to nobody
        ("trivy/trivy-head_alpine-39.json", ServiceNames(services=frozenset({"catalog"})), None),  # a tarball's path
        ("snyk/dd-snyk_npm_1critical.json", ServiceNames(services=frozenset({"storefront"})), None),  # a project name
    ],
)  # fmt: skip
def test_the_service_of_a_real_report_is_named_only_where_fixloop_knows_it(
    report: str, names: ServiceNames, service: str | None
) -> None:
    items = [w for w in triage_rules(signals(report), names=names).work_items]
    assert items
    assert {w.service for w in items} == {service}
    for w in items:
        assert w.id.startswith(f"{service}-{w.kind.value.replace('_', '-')}-") if service else w.id[0] != "-"
        if service:
            assert service in w.title and (w.artifact or "") not in w.title


# --- the service once planning located the change -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "kind", "service", "title"),
    [
        (ALPINE, WorkItemKind.OS_REBUILD, "catalog",
         "Rebuild catalog on a patched base image (fixes 3 CVEs: 1 critical, 2 medium)"),
        ("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP, "payments",
         "Bump Werkzeug 0.11 \u2192 0.15.3 in requirements.txt of payments (fixes 5 advisories: 1 high, 1 medium, "
         "3 unknown)"),
        ("snyk/dd-snyk_npm_1critical.json", WorkItemKind.DEPENDENCY_BUMP, "storefront",
         "Bump lodash 4.17.13 \u2192 4.17.20 in package-lock.json of storefront (fixes 1 advisory: 1 critical)"),
    ],
)  # fmt: skip
def test_planning_names_the_service_the_change_touches(
    report: str, kind: WorkItemKind, service: str, title: str
) -> None:
    found = signals(report)
    item = _only(triage_rules(found).work_items, kind)
    assert item.service is None and service not in item.title
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, Plan)
    touched = service_of_paths(op.path for op in result.operations)
    assert touched == service
    renamed = named(item, touched)
    assert (renamed.id, renamed.service, renamed.title) == (item.id, service, title)
    assert renamed.counts == item.counts and renamed.signals == item.signals
    assert named(renamed, "other") is renamed  # a service once named stays
    assert named(item, None) is item


def test_a_models_title_has_the_artifact_replaced_and_alerts_are_not_renamed() -> None:
    found = signals(ALPINE)
    item = _only(triage_rules(found).work_items, WorkItemKind.OS_REBUILD)
    assert item.artifact is not None
    drafted = item.model_copy(update={"engine": "llm", "title": f"Patch the base image of {item.artifact}"})
    assert named(drafted, "catalog").title == "Patch the base image of catalog"
    vague = drafted.model_copy(update={"title": "Patch the base image"})
    assert named(vague, "catalog").title == "Patch the base image" and named(vague, "catalog").service == "catalog"
    alert = _only(triage_rules(signals("datadog/datadog-docs_default_webhook_payload_template.json")).work_items,
                  WorkItemKind.ALERT_INVESTIGATION)  # fmt: skip
    assert named(alert, "catalog") is alert


# --- one counting rule --------------------------------------------------------------------------------------------


def _trivy_counts(rel: str) -> dict[str, int]:
    """Distinct advisories of a Trivy report with a fix, each at its highest severity, read from the JSON itself."""
    rank = {"CRITICAL": 5, "HIGH": 4, "MEDIUM": 3, "LOW": 2, "UNKNOWN": 0}
    worst: dict[str, str] = {}
    for result in json.loads(fixture(rel).read_text())["Results"]:
        for v in result.get("Vulnerabilities") or []:
            if v.get("FixedVersion"):
                seen = worst.get(v["VulnerabilityID"])
                if seen is None or rank[v["Severity"]] > rank[seen]:
                    worst[v["VulnerabilityID"]] = v["Severity"]
    counts: dict[str, int] = defaultdict(int)
    for sev in worst.values():
        counts[sev.lower()] += 1
    return dict(counts)


@pytest.mark.parametrize(
    ("report", "kind"),
    [
        (ALPINE, WorkItemKind.OS_REBUILD),
        ("trivy/trivy-0.22-fulldb_alpine-39.json", WorkItemKind.OS_REBUILD),
        ("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP),
        ("snyk/dd-snyk_npm_1critical.json", WorkItemKind.DEPENDENCY_BUMP),
    ],
)
def test_the_work_item_its_merge_request_and_its_jira_issue_count_the_same(report: str, kind: WorkItemKind) -> None:
    """A real report through the real triage: the counts in the work item's title, its merge request (title and
    description, rendered from the plan on the seeded repository) and its Jira description are the same text, and
    each advisory counts once, at its highest severity (for Trivy, checked against the report's JSON)."""
    found = signals(report)
    item = _only(triage_rules(found).work_items, kind)
    assert item.counts is not None
    counts = item.counts.text()
    mine = [s for s in found if s.fingerprint in set(item.signals)]
    assert counts == advisory_counts(mine).text() == advisory_counts([*mine, *mine]).text()
    if report.startswith("trivy/"):
        expected = _trivy_counts(report)
        assert item.counts.total == sum(expected.values()) == len(item.advisories)
        assert {sev.value: n for sev, n in item.counts.by_severity.items()} == expected
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, Plan)
    mr = render(item, result, found)
    jira = issue_description(SCOPE, item)
    phrase = f"fixes {counts}"
    assert item.title.endswith(f"({phrase})"), item.title
    assert mr.title.endswith(f"({phrase})"), mr.title
    (head,) = [line for line in mr.description.splitlines() if line.startswith("fixloop work item ")]
    assert phrase in head.replace("\\", "")  # after the callouts of a breaking bump, if any
    assert f"\nFixes {counts} (each advisory once, at its highest severity).\n" in jira


def test_an_advisory_on_two_packages_counts_once_at_its_highest_severity() -> None:
    """trivy-0.22-fulldb_alpine-39: CVE-2019-1549 and -1551 are reported for libcrypto1.1 and libssl1.1, and
    CVE-2019-14697 for musl and musl-utils: six findings, three advisories."""
    found = signals("trivy/trivy-0.22-fulldb_alpine-39.json")
    item = _only(triage_rules(found).work_items, WorkItemKind.OS_REBUILD)
    assert len(item.signals) > len(item.advisories) == item.counts.total  # type: ignore[union-attr]
    secrets = advisory_counts(signals("trivy/dd-trivy_fs_misconfig_and_secrets.json"))
    assert secrets.noun == "finding" and secrets.total == 5  # every misconfiguration or secret is its own
