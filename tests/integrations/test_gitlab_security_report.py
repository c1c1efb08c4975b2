"""GitLab security reports 2.3 to 15.x: container scanning, dependency scanning, SAST (and secrets found by SAST)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from fixloop.core.models import Category, Severity, Source
from tests.conftest import one, signals


def test_container_scanning_v3_with_scan_object() -> None:
    items = signals("gitlab/dd-gl-container-scanning_5vulns.json")
    assert len(items) == 5
    s = one(items, advisory_id="CVE-2020-1751", package="libc6")
    assert s.source is Source.GITLAB and s.category is Category.VULNERABILITY
    assert (s.installed_version, s.fixed_version) == ("2.28-10", None)  # "No solution provided"
    assert (s.artifact, s.target, s.ecosystem) == ("registry/vulnerable-project:latest", "debian 10.9", "deb")
    assert s.severity is Severity.HIGH
    assert s.observed_at == datetime(2021, 6, 1, 21, 21, 0, tzinfo=UTC)  # scan.end_time, naive = UTC


def test_container_scanning_without_scan_object_reads_fix_from_solution() -> None:
    items = signals("gitlab/dd-gl-container-scanning_ecr-admintools_98vulns.json")
    assert len(items) == 98
    s = one(items, advisory_id="CVE-2022-28391", package="busybox")
    assert (s.installed_version, s.fixed_version, s.severity) == ("1.34.1-r4", "1.34.1-r5", Severity.CRITICAL)
    assert s.artifact == "XXXXXX.dkr.ecr.eu-west-3.amazonaws.com/XXX/admintools/tools:pipeline-ci"
    assert Counter(s.severity for s in items) == {
        Severity.HIGH: 58,
        Severity.MEDIUM: 26,
        Severity.CRITICAL: 12,
        Severity.LOW: 2,
    }


def test_trivy_gitlab_template_v2_3_splits_os_out_of_the_image_name() -> None:
    s = one(
        signals("gitlab/trivy-0.22-gitlab-tpl_alpine-310.gl-container-scanning.json"),
        advisory_id="CVE-2019-1549",
        package="libcrypto1.1",
    )
    assert (s.artifact, s.target, s.ecosystem) == ("testdata/fixtures/images/alpine-310.tar.gz", "alpine 3.10.2", "apk")
    assert (s.installed_version, s.fixed_version) == ("1.1.1c-r0", "1.1.1d-r0")
    # The 15.0.7 report of the same image (OS in its own field) is the same finding: the same fingerprint.
    head = one(
        signals("gitlab/trivy-head-gitlab-tpl_alpine-310.gl-container-scanning.json"),
        advisory_id="CVE-2019-1549",
        package="libcrypto1.1",
    )
    assert (head.artifact, head.target) == (s.artifact, s.target)
    assert head.fingerprint == s.fingerprint


def test_dependency_scanning_gemnasium_go_sum() -> None:
    items = signals("gitlab/dd-gl-dependency-scanning_gemnasium_gosum_6vulns.json")
    assert len(items) == 6  # the same advisory on three versions of x/crypto: three findings
    assert sum(s.advisory_id == "CVE-2020-29652" for s in items) == 3
    s = one(items, advisory_id="CVE-2020-29652", installed_version="v0.0.0-20190219172222-a4c6cb3142f2")
    assert (s.package, s.target, s.ecosystem) == ("golang.org/x/crypto", "service/go.sum", "go")
    assert s.fixed_version == "v0.0.0-20201216223049-8b5274cf687f"  # "Upgrade to version ... or above."
    assert s.aliases == ["Gemnasium-ffb814a0-404c-11eb-b378-0242ac130002"]
    yaml = one(items, severity=Severity.UNKNOWN)  # no CVE: the Gemnasium identifier, by its name
    assert (yaml.package, yaml.advisory_id) == ("gopkg.in/yaml.v2", "Gemnasium-7368f513-0aa9-4e34-a08d-40ea81f48e0e")


def test_sast_v3_rule_and_location() -> None:
    items = signals("gitlab/dd-gl-sast_find_sec_bugs_3vulns.json")
    assert {s.category for s in items} == {Category.SAST}
    s = one(items, location="src/main/java/servlets/module/lesson/XssLesson.java:96")
    assert s.advisory_id == "XSS_REQUEST_PARAMETER_TO_SERVLET_WRITER"
    assert s.title.startswith("Servlet reflected cross site scripting vulnerability")
    assert s.package is None and s.severity is Severity.HIGH


def test_sast_v2_3_mixes_code_findings_and_secrets() -> None:
    items = signals("gitlab/dd-gl-sast_v2.3_467vulns.json")
    assert len(items) == 467  # no id in 2.3: identity is file, lines, rule and compare key
    assert Counter(s.category for s in items) == {Category.SAST: 454, Category.SECRET: 13}  # trufflehog + gitleaks
    secret = one(items, location="docker-compose.override.unit_tests.yml:19")
    assert (secret.category, secret.advisory_id, secret.severity) == (
        Category.SECRET,
        "Password in URL",
        Severity.CRITICAL,
    )
    assert Counter(s.severity for s in items)[Severity.UNKNOWN] == 266
