"""GitLab security reports 2.3 to 15.x: container scanning, dependency scanning, SAST (and secrets found by SAST)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from fixloop.core.models import Category, Severity, Signal, Source, WorkItemKind
from fixloop.core.parsing import ParseContext, valid_version
from fixloop.core.triage import triage_rules
from fixloop.core.triage.rules import os_level
from fixloop.integrations.gitlab import security_report
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


ECR = "XXXXXX.dkr.ecr.eu-west-3.amazonaws.com/XXX/admintools/tools:pipeline-ci"
ADMINTOOLS = "gitlab/dd-gl-container-scanning_ecr-admintools_98vulns.json"


def test_trivy_template_language_targets_are_language_packages_of_the_scanned_image() -> None:
    """Trivy's 14.0.6 template writes its target names as ``location.image``: 76 OS entries name the ECR image, 15
    ``Node.js`` (the npm packages Trivy gathers across the image) and 7 ``var/www/composer.lock``."""
    items = signals(ADMINTOOLS)
    forge = one(items, advisory_id="CVE-2022-24771", package="node-forge")
    assert (forge.artifact, forge.target, forge.ecosystem) == (ECR, "Node.js", "npm")
    assert (forge.installed_version, forge.fixed_version, forge.fix_status) == ("0.10.0", "1.3.0", "fixed")
    psr7 = one(items, advisory_id="CVE-2022-24775", package="guzzlehttp/psr7")
    assert (psr7.artifact, psr7.target, psr7.ecosystem) == (ECR, "var/www/composer.lock", "composer")
    assert (psr7.fixed_versions, psr7.fixed_version) == (["2.1.1", "1.8.4"], "2.1.1")  # 1.8.4 is below 2.1.0
    assert Counter((s.target, s.ecosystem) for s in items) == {
        (None, None): 76,  # operating_system "Unknown", and the template cut the "(<os> <release>)" off
        ("Node.js", "npm"): 15,
        ("var/www/composer.lock", "composer"): 7,
    }
    assert {s.artifact for s in items} == {ECR}
    # An OS finding's fingerprint is the one earlier releases gave (re-deliveries dedupe); a language finding's
    # names the scanned image too ("Node.js" is the same name in every image's report).
    assert one(items, advisory_id="CVE-2022-28391", package="busybox").fingerprint == "bc3fec54090c7751a0961edfa48e50c2"
    assert forge.fingerprint == "63933d091dcb549b698ba1d6b1a40b3d"


def test_trivy_template_language_targets_are_bumps_not_rebuilds() -> None:
    items = triage_rules(signals(ADMINTOOLS)).work_items
    assert sorted((w.kind.value, w.artifact, w.target) for w in items) == [
        ("dependency_bump", ECR, "Node.js"),
        ("dependency_bump", ECR, "var/www/composer.lock"),
        ("os_rebuild", ECR, None),
    ]


def _container(image: str, os_name: str = "Unknown", solution: str = "Upgrade p to 1.2.4") -> dict[str, object]:
    return {
        "id": "CVE-2024-0001",
        "severity": "High",
        "solution": solution,
        "location": {
            "dependency": {"package": {"name": "p"}, "version": "1.2.3"},
            "operating_system": os_name,
            "image": image,
        },
        "identifiers": [{"type": "cve", "name": "CVE-2024-0001", "value": "CVE-2024-0001"}],
    }


def _parse(vulnerabilities: list[dict[str, object]]) -> list[Signal]:
    ctx = ParseContext(ref="t.json", received_at=datetime(2024, 1, 1, tzinfo=UTC))
    security_report.parse({"version": "14.0.6", "vulnerabilities": vulnerabilities, "remediations": []}, ctx)
    return ctx.signals


_LANGUAGE_TARGETS = st.one_of(
    st.sampled_from(["Node.js", "Python", "Java", "Ruby", "Conda"]),
    st.builds(
        lambda d, f: f"{d}/{f}" if d else f,
        st.from_regex(r"([a-z0-9_-]{1,8}/){0,3}[a-z0-9_-]{0,8}", fullmatch=True).map(lambda p: p.strip("/")),
        st.sampled_from(["composer.lock", "package-lock.json", "yarn.lock", "Gemfile.lock", "poetry.lock", "go.sum"]),
    ),
)
_IMAGES = st.from_regex(r"[a-z0-9]{1,8}(\.[a-z]{2,4})?(/[a-z0-9-]{1,8}){0,2}:[a-z0-9.-]{1,8}", fullmatch=True)


@given(_LANGUAGE_TARGETS, st.lists(_IMAGES, max_size=3, unique=True), st.text(max_size=40))
def test_a_language_target_is_never_an_os_rebuild(target: str, images: list[str], version_text: str) -> None:
    """Whatever Trivy target or lockfile path, next to 0 to 3 scanned images and whatever fix text: a language
    finding, on the scanned image when the report names exactly one, with a valid fix or none."""
    found = _parse([_container(target, solution=f"Upgrade p to {version_text}")] + [_container(i) for i in images])
    lang = found[0]
    assert lang.target == target and lang.ecosystem not in (None, "apk", "deb", "rpm") and not os_level(lang)
    assert lang.artifact == (images[0] if len(images) == 1 else None)
    assert lang.fixed_version is None or valid_version(lang.ecosystem, lang.fixed_version)
    alone = _parse([_container(target, solution=f"Upgrade p to {version_text}")])[0]
    assert (alone.fingerprint == lang.fingerprint) is (len(images) != 1)  # the image is in it once it is known
    assert {s.kind for s in triage_rules(found).work_items if lang.fingerprint in s.signals} <= {
        WorkItemKind.DEPENDENCY_BUMP,
        WorkItemKind.RISK_DIGEST,
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
