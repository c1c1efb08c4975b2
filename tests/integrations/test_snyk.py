"""Snyk CLI JSON: single project, --all-projects arrays, container scans; one signal per issue/package/version."""

from __future__ import annotations

from fixloop.core.models import Severity
from tests.conftest import one, signals


def test_one_signal_per_distinct_issue_package_version_not_per_path() -> None:
    items = signals("snyk/dd-snyk-container_juiceshop_deb_25vulns.json")
    assert len(items) == 13  # 25 dependency paths, 13 distinct issues (Snyk's own uniqueCount)
    assert {s.artifact for s in items} == {"sarim04/juiceshop"}
    assert {s.ecosystem for s in items} == {"deb"}
    s = one(items, advisory_id="SNYK-DEBIAN11-GCC10-5901313")
    assert (s.package, s.installed_version, s.fixed_version, s.aliases) == (
        "gcc-10",
        "10.2.1-6",
        None,
        ["CVE-2023-4039"],
    )


def test_all_projects_array_keeps_each_project_apart() -> None:
    items = signals("snyk/dd-snyk_all-projects_maven_4vulns.json")
    assert sorted((s.target, s.advisory_id, s.installed_version) for s in items) == [
        ("pom.xml", "SNYK-JAVA-COMGOOGLEGUAVA-1015415", "29.0-jre"),
        ("project-a\\pom.xml", "SNYK-JAVA-COMGOOGLEGUAVA-1015415", "22.0"),
        ("project-a\\pom.xml", "SNYK-JAVA-COMGOOGLEGUAVA-32236", "22.0"),
        ("project-b\\pom.xml", "SNYK-JAVA-COMGOOGLEGUAVA-1015415", "29.0-jre"),
    ]
    jre = one(items, target="pom.xml")
    assert jre.fixed_versions == ["30.0-android", "30.0-jre"]
    assert jre.fixed_version == "30.0-jre"  # the same variant line as the installed 29.0-jre


def test_nuget_and_npm_projects() -> None:
    items = signals("snyk/dd-snyk_all-projects_nuget-npm_82vulns.json")
    assert len(items) == 50  # 13 nuget + 37 npm distinct (issue, package, version)
    assert {s.ecosystem for s in items} == {"nuget", "npm"}
    ajv = one(items, advisory_id="SNYK-JS-AJV-584908")
    assert (ajv.installed_version, ajv.fixed_version, ajv.severity) == ("6.6.2", "6.12.3", Severity.HIGH)
    assert ajv.target == "company.Ux.project\\package-lock.json"


def test_critical_lodash_and_no_vulns() -> None:
    s = one(signals("snyk/dd-snyk_npm_1critical.json"), package="lodash")
    assert (s.advisory_id, s.severity, s.fixed_version) == ("SNYK-JS-LODASH-590103", Severity.CRITICAL, "4.17.20")
    assert signals("snyk/dd-snyk_maven_no_vulns.json") == []
