"""Trivy: every JSON generation (legacy array, SchemaVersion 2, current, both Kubernetes forms)."""

from __future__ import annotations

from datetime import UTC, datetime

from fixloop.core.models import Category, Severity, Source
from tests.conftest import ingest, one, signals


def test_current_schema_alpine_finding_fields() -> None:
    s = one(signals("trivy/trivy-head_alpine-39.json"), advisory_id="CVE-2019-1549", package="libcrypto1.1")
    assert s.source is Source.TRIVY and s.category is Category.VULNERABILITY
    assert (s.installed_version, s.fixed_version, s.fix_status) == ("1.1.1b-r1", "1.1.1d-r0", "fixed")
    assert s.severity is Severity.MEDIUM
    assert s.ecosystem == "apk"
    assert s.artifact == "testdata/fixtures/images/alpine-39.tar.gz"
    assert s.target == "testdata/fixtures/images/alpine-39.tar.gz (alpine 3.9.4)"
    assert s.purl == "pkg:apk/alpine/libcrypto1.1@1.1.1b-r1?arch=x86_64&distro=3.9.4"
    assert s.observed_at == datetime(2021, 8, 25, 12, 20, 30, tzinfo=UTC)  # the report's CreatedAt
    assert s.raw_ref.endswith("trivy-head_alpine-39.json#/Results/0/Vulnerabilities/0")


def test_full_db_centos_has_all_711_findings() -> None:
    items = signals("trivy/trivy-0.22-fulldb_centos-7.json")
    assert len(items) == 711
    assert all(s.ecosystem == "rpm" for s in items)
    assert {s.severity for s in items} <= {
        Severity.CRITICAL,
        Severity.HIGH,
        Severity.MEDIUM,
        Severity.LOW,
        Severity.UNKNOWN,
    }


def test_legacy_array_takes_the_artifact_from_the_os_target() -> None:
    items = signals("trivy/trivy-legacy-array_alpine-39.json")
    assert len(items) == 10
    assert {s.artifact for s in items} == {"testdata/fixtures/images/alpine-39.tar.gz"}
    # the same finding as in the SchemaVersion 2 report of the same image: the same fingerprint
    v2 = signals("trivy/trivy-0.22-fulldb_alpine-39.json")
    assert {s.fingerprint for s in items} == {s.fingerprint for s in v2}


def test_legacy_record_without_vulnerability_id_is_reported_not_dropped_silently() -> None:
    result = ingest("trivy/dd-trivy_legacy_mix_lockfiles.json")
    assert len(result.signals) == 6
    assert any("without VulnerabilityID" in w and "simplito/elliptic-php" in w for w in result.warnings)


def test_every_vendor_status_is_kept() -> None:
    items = signals("trivy/dd-trivy_all_statuses_example-app.json")
    assert sorted(s.fix_status for s in items) == sorted(
        [
            "unknown",
            "not_affected",
            "affected",
            "fixed",
            "under_investigation",
            "will_not_fix",
            "fix_deferred",
            "end_of_life",
        ]
    )
    assert {s.artifact for s in items} == {"noppaknopsta/example-app:main-159"}  # ArtifactName is empty


def test_misconfigurations_and_secrets_without_the_secret_text() -> None:
    items = signals("trivy/dd-trivy_fs_misconfig_and_secrets.json")
    misconf = one(items, category=Category.MISCONFIGURATION)
    assert (misconf.advisory_id, misconf.target, misconf.severity) == ("DS002", "Dockerfile", Severity.HIGH)
    secrets = [s for s in items if s.category is Category.SECRET]
    assert sorted(s.location for s in secrets) == ["Dockerfile:24", "secret.txt:1"]
    assert all(s.advisory_id == "github-pat" and s.severity is Severity.CRITICAL for s in secrets)
    dumped = "".join(s.to_json() for s in items)
    assert "GITHUB_PAT" not in dumped and "*****" not in dumped


def test_ruby_fixed_version_constraints_pick_the_fix_of_the_installed_line() -> None:
    s = one(signals("trivy/trivy-0.22-fulldb_fluentd-multiple-lockfiles.json"), advisory_id="CVE-2020-8165")
    assert (s.package, s.installed_version, s.ecosystem) == ("activesupport", "6.0.2.1", "gem")
    assert s.fixed_versions == ["5.2.4.3", "6.0.3.1"]  # Trivy wrote "~> 5.2.4.3, >= 6.0.3.1"
    assert s.fixed_version == "6.0.3.1"


def test_kubernetes_legacy_form_names_workload_and_image() -> None:
    items = signals("trivy/dd-trivy_k8s_legacy_eks_cluster.json")
    vulns = [s for s in items if s.category is Category.VULNERABILITY]
    assert len(vulns) == 10 and len(items) - len(vulns) == 10
    s = one(vulns, advisory_id="CVE-2020-27350", artifact="docker.io/redis:6.0.5")
    assert s.target == "default/Deployment/redis-leader/docker.io/redis:6.0.5 (debian 10.4)"
    assert (s.fixed_version, s.aliases) == ("1.8.2.2", ["DSA-4808-1"])


def test_kubernetes_resources_form_with_cluster_scoped_resources() -> None:
    items = signals("trivy/dd-trivy_k8s_resources_cluster_scoped.json")
    assert sorted((s.advisory_id, s.target) for s in items) == [
        ("KSV001", "default/Deployment/redis-follower"),
        ("KSV111", "ClusterRoleBinding/cluster-admin"),
        ("KSV113", "ClusterRole/system:controller:bootstrap-signer"),
    ]
    assert {s.artifact for s in items} == {"kind-voc-lab"}
