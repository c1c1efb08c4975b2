"""Snyk CLI JSON: single project, --all-projects arrays, container scans; one signal per issue/package/version."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fixloop.app.ingest import parse_document
from fixloop.core.models import Severity
from tests.conftest import FIXTURES, one, signals

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)


def test_one_signal_per_distinct_issue_package_version_not_per_path() -> None:
    found = signals("snyk/dd-snyk-container_juiceshop_deb_25vulns.json")
    items = [s for s in found if s.ecosystem == "deb"]
    assert len(items) == 13  # 25 dependency paths, 13 distinct issues (Snyk's own uniqueCount)
    assert {s.artifact for s in found} == {"sarim04/juiceshop"}
    s = one(items, advisory_id="SNYK-DEBIAN11-GCC10-5901313")
    assert (s.package, s.installed_version, s.fixed_version, s.aliases) == (
        "gcc-10",
        "10.2.1-6",
        None,
        ["CVE-2023-4039"],
    )


def test_a_container_scan_s_application_dependencies_are_signals_too() -> None:
    """``applications[]`` of ``snyk container test`` (its app vulnerabilities: juice-shop's package.json in the
    image) are projects of their own: 12 distinct npm issues (their ``uniqueCount``), of the same image, in their
    target file, with no OS purl; none is lost."""
    found = signals("snyk/dd-snyk-container_juiceshop_deb_25vulns.json")
    apps = [s for s in found if s.ecosystem == "npm"]
    assert len(apps) == 12 and len(found) == 25
    assert {(s.artifact, s.target) for s in apps} == {("sarim04/juiceshop", "/juice-shop/package.json")}
    assert all(s.purl is None and s.raw_ref and "/applications/0/vulnerabilities/" in s.raw_ref for s in apps)
    jwt = [s for s in apps if s.package == "express-jwt"]
    assert jwt and jwt[0].fixed_version == "6.0.0"


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


def test_a_container_scan_s_os_packages_carry_the_release_snyk_names() -> None:
    """Each vulnerability's ``packageManager`` (``debian:11``) is the OS release: an OS package's signal gets the
    purl of its package with that release as the ``distro`` qualifier, which is how the planner reads the OS."""
    items = [s for s in signals("snyk/dd-snyk-container_juiceshop_deb_25vulns.json") if s.ecosystem == "deb"]
    gcc = one(items, advisory_id="SNYK-DEBIAN11-GCC10-5901313")
    assert gcc.purl == "pkg:deb/debian/gcc-10@10.2.1-6?distro=debian-11"
    assert {s.purl.split("?")[1] for s in items if s.purl} == {"distro=debian-11"}
    assert all(s.purl for s in items)


def test_docker_base_image_names_the_release_when_the_vulnerabilities_do_not() -> None:
    doc = json.loads((FIXTURES / "snyk/synthetic_snyk-container_debian-10_file-dockerfile.json").read_text())
    for v in doc["vulnerabilities"]:
        v["packageManager"] = "deb"  # no release: docker.baseImage (debian:10.2, --file=Dockerfile) names it
    items = parse_document(doc, ref="snyk.json", received_at=RECEIVED).signals
    assert {s.purl for s in items if s.package == "bash"} == {"pkg:deb/debian/bash@5.0-4?distro=debian-10.2"}
    doc["docker"]["baseImage"] = "node:14-alpine"  # not an OS image: no release
    assert {s.purl for s in parse_document(doc, ref="snyk.json", received_at=RECEIVED).signals} == {None}


def test_application_projects_get_no_os_purl() -> None:
    items = signals("snyk/dd-snyk_npm_1critical.json")
    assert {s.purl for s in items} == {None}
