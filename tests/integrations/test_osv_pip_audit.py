"""OSV-Scanner (one signal per alias group) and pip-audit (both formats)."""

from __future__ import annotations

from collections import Counter

from fixloop.core.models import Severity, Source
from tests.conftest import ingest, one, signals


def test_osv_one_signal_per_alias_group() -> None:
    items = signals("osv-scanner/dd-osv-scanner_many_findings.json")
    # 66 vulnerability entries, which osv-scanner itself groups into 37 distinct vulnerabilities
    assert len(items) == 37
    assert Counter(s.target for s in items) == {
        "/tmpcardmarket-api/composer.lock": 6,
        "/tmpgapps/requirements.txt": 3,
        "/tmphumble/requirements.txt": 1,
        "/tmprengine/": 1,
        "/tmprengine/web/requirements.txt": 22,
        "/tmptrivy-dojo-report-operator/poetry.lock": 4,
    }
    s = one(items, advisory_id="GHSA-25mq-v84q-4j7r")
    assert s.source is Source.OSV
    assert (s.package, s.installed_version, s.ecosystem) == ("guzzlehttp/guzzle", "6.3.3", "composer")
    assert s.fixed_versions == ["6.5.8", "7.4.5"] and s.fixed_version == "6.5.8"
    assert s.aliases == ["CVE-2022-31090"]
    assert s.severity is Severity.HIGH  # CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:N/A:N = 7.7


def test_osv_git_commit_fixes_are_no_versions() -> None:
    """OSV lists the GIT range's fixing commit beside the PyPI versions: the lowest version above 1.26.17, not the
    scanner's first listed (``2.0.7``, a major version), and never the commit."""
    items = signals("osv-scanner/dd-osv-scanner_many_findings.json")
    urllib3 = one(items, advisory_id="GHSA-g4mx-q9vg-27p4")
    assert urllib3.fixed_versions == ["2.0.7", "1.26.18", "4e98d57809dacab1cbe625fddeec1a290c478ea9"]
    assert (urllib3.installed_version, urllib3.fixed_version, urllib3.fix_status) == ("1.26.17", "1.26.18", "fixed")
    selenium = one(items, advisory_id="PYSEC-2023-206")  # the commit listed first
    assert (selenium.fixed_version, selenium.fix_status) == ("4.14.0", "fixed")


def test_osv_group_carries_every_id_as_alias() -> None:
    items = signals("osv-scanner/dd-osv-scanner_many_findings.json")
    grouped = [s for s in items if any(a.startswith("PYSEC-") for a in s.aliases) and s.advisory_id.startswith("GHSA-")]
    assert grouped, "a GHSA grouped with its PYSEC twin"
    assert all(s.ecosystem == "pypi" for s in grouped)


def test_pip_audit_legacy_array() -> None:
    result = ingest("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json")
    assert len(result.signals) == 7
    django = one(result.signals, package="django")
    assert (django.advisory_id, django.installed_version) == ("PYSEC-2021-439", "3.2.9")
    assert django.fixed_versions == ["2.2.25", "3.1.14", "3.2.10"] and django.fixed_version == "3.2.10"
    lxml = one(result.signals, package="lxml")
    assert (lxml.fixed_version, lxml.fix_status) == (None, "affected")
    assert any("azure-devops not audited" in w for w in result.warnings)


def test_pip_audit_dependencies_format_with_no_vulns_reports_the_skipped_one() -> None:
    result = ingest("pip-audit/dd-pip-audit_dependencies-format_zero_vulns.json")
    assert result.source is Source.PIP_AUDIT and result.signals == []
    assert len(result.warnings) == 1 and "azure-devops" in result.warnings[0]
