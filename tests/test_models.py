"""The Signal model's invariants and the shared normalisations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from fixloop.models import Category, Kind, Severity, Signal, Source, Transition, fingerprint
from fixloop.parsing import (
    clean,
    cvss_vector_score,
    ecosystem,
    lowest_fix,
    severity,
    severity_from_score,
    split_versions,
)

BASE = dict(
    fingerprint="0" * 32,
    source=Source.TRIVY,
    title="t",
    severity=Severity.LOW,
    observed_at=datetime(2024, 1, 1, tzinfo=UTC),
    raw_ref="f#/x",
)


def test_kind_specific_fields_are_required_and_exclusive() -> None:
    Signal(**BASE, kind=Kind.FINDING, category=Category.VULNERABILITY)
    Signal(**{**BASE, "source": Source.DATADOG}, kind=Kind.ALERT, transition=Transition.TRIGGERED)
    with pytest.raises(ValidationError, match="a finding needs a category"):
        Signal(**BASE, kind=Kind.FINDING)
    with pytest.raises(ValidationError, match="an alert needs a transition"):
        Signal(**BASE, kind=Kind.ALERT)
    with pytest.raises(ValidationError, match="a finding has no transition"):
        Signal(**BASE, kind=Kind.FINDING, category=Category.SAST, transition=Transition.WARN)


def test_bounds_and_shapes() -> None:
    with pytest.raises(ValidationError):
        Signal(**{**BASE, "title": "x" * 301}, kind=Kind.FINDING, category=Category.SAST)
    with pytest.raises(ValidationError):
        Signal(**{**BASE, "fingerprint": "not-hex"}, kind=Kind.FINDING, category=Category.SAST)
    with pytest.raises(ValidationError):
        Signal(**{**BASE, "observed_at": datetime(2024, 1, 1)}, kind=Kind.FINDING, category=Category.SAST)  # naive
    with pytest.raises(ValidationError):
        Signal(**BASE, kind=Kind.FINDING, category=Category.SAST, unexpected="field")


def test_fingerprint_parts() -> None:
    fp = fingerprint("a", None, 1)
    assert len(fp) == 32 and int(fp, 16) >= 0
    assert fp == fingerprint("a", None, 1)
    assert fp != fingerprint("a", "", 1) != fingerprint("a", "None", 1)
    assert fingerprint("a", "b") != fingerprint("b", "a")
    assert fingerprint("a\x1fb") != fingerprint("a", "b")


def test_clean_folds_controls_and_cuts() -> None:
    assert clean("  a\nb\x1b[31m c\u2028d ") == "a b [31m c d"
    cut = clean("x" * 1000, 10)
    assert len(cut) == 10 and cut.endswith("\u2026")


@pytest.mark.parametrize(
    ("eco", "installed", "candidates", "expected"),
    [
        ("pypi", "3.2.9", ["2.2.25", "3.1.14", "3.2.10"], "3.2.10"),  # pip-audit's Django PYSEC-2021-439
        ("maven", "29.0-jre", ["30.0-android", "30.0-jre"], "30.0-jre"),
        ("deb", "1.8.2.1", ["1.8.2.3", "1.8.2.2"], "1.8.2.2"),
        ("npm", "6.6.2", ["6.12.3", "7.0.0"], "6.12.3"),
        ("gem", "6.0.2.1", ["5.2.4.3", "6.0.3.1"], "6.0.3.1"),
        ("pypi", "9.9", ["1.0", "2.0"], None),  # nothing above the installed version
        ("weird", "1", ["b", "a"], "b"),  # cannot compare: the scanner's first
        ("pypi", "1.0", [], None),
    ],
)
def test_lowest_fix(eco: str, installed: str, candidates: list[str], expected: str | None) -> None:
    assert lowest_fix(eco, installed, candidates) == expected


def test_vocabularies() -> None:
    assert [severity(w) for w in ("CRITICAL", "High", "MODERATE", "Negligible", "weird", None)] == [
        Severity.CRITICAL,
        Severity.HIGH,
        Severity.MEDIUM,
        Severity.INFO,
        Severity.UNKNOWN,
        Severity.UNKNOWN,
    ]
    assert cvss_vector_score("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:N/A:N") == 7.7
    assert cvss_vector_score("garbage") is None
    assert [severity_from_score(x) for x in (9.8, 7.0, 5.3, 0.1, 0.0, None)] == [
        Severity.CRITICAL,
        Severity.HIGH,
        Severity.MEDIUM,
        Severity.LOW,
        Severity.INFO,
        Severity.UNKNOWN,
    ]
    assert [ecosystem(x) for x in ("alpine", "debian", "gomod", "PyPI", "Packagist", "Debian:11", "java-archive")] == [
        "apk",
        "deb",
        "go",
        "pypi",
        "composer",
        "deb",
        "maven",
    ]
    assert split_versions("~> 5.2.4.3, >= 6.0.3.1") == ["5.2.4.3", "6.0.3.1"]
