"""Grype 0.7 to 0.9x JSON."""

from __future__ import annotations

from collections import Counter

from fixloop.core.models import Severity
from tests.conftest import ingest, one, signals


def test_grype_0_28_python_package_with_fix_and_related_cve() -> None:
    result = ingest("grype/dd-grype-0.28_vulnerable-image.json")
    # 6 matches, one listed twice to the letter: one finding, one signal
    assert len(result.signals) == 5 and result.duplicates == 1
    s = one(result.signals, advisory_id="GHSA-v6rh-hp5x-86rv")
    assert (s.package, s.installed_version, s.fixed_version) == ("Django", "3.2.9", "3.2.10")
    assert s.aliases == ["CVE-2021-44420"]
    assert (s.ecosystem, s.purl, s.artifact) == ("pypi", "pkg:pypi/Django@3.2.9", "vulnerable-image:latest")
    assert s.target == "/usr/local/lib/python3.8/site-packages/Django-3.2.9.dist-info/METADATA"


def test_grype_0_7_without_fix_objects_maps_negligible_to_info() -> None:
    items = signals("grype/dd-grype-0.7_defectdojo-django-1.13.1.json")
    assert len(items) == 327
    assert Counter(s.severity for s in items)[Severity.INFO] == 106  # "Negligible"
    assert all(s.fixed_version is None for s in items)
    assert {s.artifact for s in items} == {"defectdojo/defectdojo-django:1.13.1"}
    deb = one(items, advisory_id="CVE-2019-18276", package="bash")
    assert (deb.ecosystem, deb.target) == ("deb", "debian 10")


def test_grype_0_96_rpm_fix_and_missing_severity() -> None:
    items = signals("grype/dd-grype-0.96_xjoin-kafka-connect-strimzi.json")
    assert len(items) == 35
    s = one(items, advisory_id="CVE-2024-26308")  # the match without a severity of its own
    assert s.severity is Severity.HIGH  # taken from its related GHSA
    assert (s.package, s.fixed_version, s.ecosystem) == ("commons-compress", "1.26.0", "maven")
    rpm = one(items, advisory_id="CVE-2023-38473", package="avahi-libs")
    assert (rpm.installed_version, rpm.fixed_version, rpm.ecosystem) == ("0.7-20.el8", "0:0.7-21.el8_9.1", "rpm")
    assert rpm.target == "redhat 8.7"


def test_grype_current_schema_golden() -> None:
    items = signals("grype/grype-head_presenter-golden_synthetic-image.json")  # timestamp "" is tolerated
    assert sorted(s.advisory_id for s in items) == ["CVE-1999-0001", "CVE-1999-0002"]
    s = one(items, advisory_id="CVE-1999-0001")
    assert s.fixed_versions == ["1.2.1", "2.1.3", "3.4.0"]
