"""Grype 0.7 to 0.9x JSON."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from fixloop.core.models import Severity, WorkItemKind
from fixloop.core.parsing import INVALID_FIX, NO_FIX_ABOVE, ParseContext, clean, valid_version
from fixloop.core.triage import triage_rules
from fixloop.integrations import grype
from tests.conftest import ingest, one, signals

_KINDS = ["deb", "rpm", "apk", "python", "npm", "java-archive", "go-module", "gem", "binary", "conda"]


def test_grype_0_28_python_package_with_fix_and_related_cve() -> None:
    result = ingest("grype/dd-grype-0.28_vulnerable-image.json")
    # 6 matches, one listed twice to the letter: one finding, one signal
    assert len(result.signals) == 5 and result.duplicates == 1
    s = one(result.signals, advisory_id="GHSA-v6rh-hp5x-86rv")
    assert (s.package, s.installed_version, s.fixed_version) == ("Django", "3.2.9", "3.2.10")
    assert s.aliases == ["CVE-2021-44420"]
    assert (s.ecosystem, s.purl, s.artifact) == ("pypi", "pkg:pypi/Django@3.2.9", "vulnerable-image:latest")
    assert s.target == "/usr/local/lib/python3.8/site-packages/Django-3.2.9.dist-info/METADATA"


def test_grype_0_7_legacy_fixed_in_version_is_the_fix() -> None:
    """Grype 0.7 writes no ``fix`` object: 28 of its 219 deb matches carry ``fixedInVersion``, the 0.7 field."""
    items = signals("grype/dd-grype-0.7_defectdojo-django-1.13.1.json")
    assert len(items) == 327
    assert Counter(s.severity for s in items)[Severity.INFO] == 106  # "Negligible"
    assert {s.artifact for s in items} == {"defectdojo/defectdojo-django:1.13.1"}
    deb = one(items, advisory_id="CVE-2019-18276", package="bash")  # no fixedInVersion: no fix, no state
    assert (deb.ecosystem, deb.target, deb.fixed_version, deb.fix_status) == ("deb", "debian 10", None, None)
    fixed = [s for s in items if s.fixed_version]
    assert len(fixed) == 28 and {(s.ecosystem, s.fix_status) for s in fixed} == {("deb", "fixed")}
    ssl = one(items, advisory_id="CVE-2020-1971", package="openssl")
    assert (ssl.installed_version, ssl.fixed_version, ssl.fixed_versions) == (
        "1.1.1d-0+deb10u3",
        "1.1.1d-0+deb10u4",
        ["1.1.1d-0+deb10u4"],
    )
    # The rules engine's own rebuild: every fixed deb package, on the scanned image.
    (rebuild,) = [w for w in triage_rules(items).work_items if w.kind is WorkItemKind.OS_REBUILD]
    assert rebuild.artifact == "defectdojo/defectdojo-django:1.13.1"
    assert sorted(rebuild.signals) == sorted(s.fingerprint for s in fixed)


def test_grype_wont_fix_versions_are_not_fixes() -> None:
    """Grype 0.28 lists placeholder versions on a ``wont-fix`` match: no bump to ``fix_1``, a risk digest saying
    why (the state), the finding kept."""
    items = signals("grype/dd-grype-0.28_vulnerable-image.json")
    redis = one(items, package="redis")
    assert (redis.fixed_version, redis.fixed_versions, redis.fix_status) == (None, [], "wont-fix")
    result = triage_rules(items)
    assert not [w for w in result.work_items if "fix_1" in w.title]
    (digest,) = [w for w in result.work_items if redis.fingerprint in w.signals]
    assert digest.kind is WorkItemKind.RISK_DIGEST


def _match(state: str | None, versions: list[str], installed: str, kind: str) -> dict[str, object]:
    fix: dict[str, object] = {"versions": versions}
    if state is not None:
        fix["state"] = state
    return {
        "vulnerability": {"id": "CVE-2024-0001", "severity": "High", "fix": fix},
        "artifact": {"name": "pkg", "version": installed, "type": kind},
    }


_STATES = st.one_of(st.none(), st.sampled_from(["fixed", "not-fixed", "wont-fix", "unknown", "Fixed", ""]), st.text())
_VERSIONS = st.lists(
    st.one_of(st.from_regex(r"v?[0-9]{1,3}(\.[0-9]{1,3}){0,3}([-+~._][a-z0-9]{1,6})?", fullmatch=True), st.text()),
    max_size=4,
)


@given(_STATES, _VERSIONS, st.sampled_from(["1.0", "2.28-10", "0.0.1", "junk"]), st.sampled_from(_KINDS))
def test_any_fix_state_and_versions_never_give_an_invalid_bump_target(
    state: str | None, versions: list[str], installed: str, kind: str
) -> None:
    ctx = ParseContext(ref="t.json", received_at=datetime(2024, 1, 1, tzinfo=UTC))
    grype.parse({"matches": [_match(state, versions, installed, kind)], "source": {"type": "image"}}, ctx)
    (s,) = ctx.signals
    says_fixed = clean(state or "").lower() in ("", "fixed")  # "fixed", or no state (a blank one is none)
    if s.fixed_version is not None:
        assert says_fixed and s.fixed_version in s.fixed_versions and valid_version(s.ecosystem, s.fixed_version)
    elif s.fixed_versions:  # listed, none taken: the reason is named
        valid = any(valid_version(s.ecosystem, v) for v in s.fixed_versions)
        assert s.fix_status == (NO_FIX_ABOVE if valid else INVALID_FIX)
    if not says_fixed:
        assert (s.fixed_versions, s.fixed_version, s.fix_status) == ([], None, clean(state or ""))


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
