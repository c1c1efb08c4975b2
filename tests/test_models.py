"""The Signal model's invariants and the shared normalisations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter

from fixloop.core.models import (
    _LIST_LIMITS,
    _TEXT_LIMITS,
    SIGNAL_MAX_BYTES,
    Category,
    Kind,
    Severity,
    Signal,
    Source,
    Transition,
    fingerprint,
)
from fixloop.core.parsing import (
    _VERSION_TOKEN,
    INVALID_FIX,
    NO_FIX_ABOVE,
    clean,
    cvss_vector_score,
    ecosystem,
    lowest_fix,
    resolve_fix,
    severity,
    severity_from_score,
    split_versions,
    valid_version,
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
        ("weird", "1", ["2.b", "2.a"], "2.b"),  # cannot compare: the scanner's first
        ("pypi", "1.0", [], None),
        ("pypi", "4.0.2", ["fix_1", "fix_2"], None),  # Grype's placeholders are no versions
        ("pypi", "4.0.2", ["fix_1"], None),
        ("deb", "2.28-10", ["wont-fix", "2.28-10+deb10u1"], "2.28-10+deb10u1"),
        ("maven", "1.0", ["see advisory", "1.1"], "1.1"),  # univers takes any text as Maven: the token check
        ("rpm", "0.7-20.el8", ["0:0.7-21.el8_9.1"], "0:0.7-21.el8_9.1"),
        ("apk", "6.3_p20211120-r0", ["6.3_p20211120-r1"], "6.3_p20211120-r1"),
        ("pypi", "3.2.9", ["023a0d52f106321838ab1c0997e76693f4dcbdf6", "3.2.10"], "3.2.10"),  # OSV's git fix
    ],
)
def test_lowest_fix(eco: str, installed: str, candidates: list[str], expected: str | None) -> None:
    assert lowest_fix(eco, installed, candidates) == expected


@given(
    st.sampled_from([None, "pypi", "npm", "go", "maven", "nuget", "gem", "composer", "deb", "rpm", "apk", "conda"]),
    st.one_of(st.none(), st.text(max_size=20)),
    st.lists(st.one_of(st.text(max_size=20), st.from_regex(r"v?[0-9][0-9a-z.+~:_-]{0,12}", fullmatch=True))),
    st.one_of(st.none(), st.text(max_size=10)),
)
def test_a_fix_is_a_listed_valid_version_or_none_with_the_reason(
    eco: str | None, installed: str | None, listed: list[str], status: str | None
) -> None:
    fixed, why = resolve_fix(eco, installed, listed, status)
    if fixed is not None:
        assert fixed in listed and valid_version(eco, fixed) and why == status
        assert _VERSION_TOKEN.fullmatch(fixed)  # one token: nothing a file edit could misread
    elif listed:
        assert why == (NO_FIX_ABOVE if any(valid_version(eco, v) for v in listed) else INVALID_FIX)
    else:
        assert why == status


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


# ---------------------------------------------------------------- byte budget (issue 14, finding 2)


def _payload_bytes(signal: Signal) -> int:
    """The bytes of ``signal`` as Temporal carries it (the pydantic data converter fixloop's clients use)."""
    return len(pydantic_data_converter.payload_converter.to_payloads([signal])[0].data)


def test_oversized_fields_are_cut_and_counted_not_refused() -> None:
    # The attack's shapes: 5,000 vendor ids of 500 characters (one Trivy finding), 70 labels of 500 characters.
    finding = Signal(
        **{**BASE, "title": "x" * 301},
        kind=Kind.FINDING,
        category=Category.VULNERABILITY,
        aliases=[f"{i:05d}" + "v" * 495 for i in range(5_000)],
        package="p" * 10_000,
    )
    assert _payload_bytes(finding) <= SIGNAL_MAX_BYTES
    assert len(finding.title) == 300 and finding.title.endswith("\u2026")
    assert len(finding.package) == 512 and 0 < len(finding.aliases) <= 32
    assert finding.aliases[0].startswith("00000")  # the first ones are kept, in order
    assert finding.truncated == {"title": 1, "package": 1, "aliases": 5_000 - len(finding.aliases)}
    alert = Signal(
        **{**BASE, "source": Source.ALERTMANAGER},
        kind=Kind.ALERT,
        transition=Transition.TRIGGERED,
        tags=[f"label{i}:" + "v" * 500 for i in range(70)],
    )
    assert _payload_bytes(alert) <= SIGNAL_MAX_BYTES
    assert alert.truncated == {"tags": 70} and all(len(t) <= 200 for t in alert.tags)  # 6 dropped + 64 cut short
    # What Temporal hands back is the same signal, nothing cut twice.
    assert Signal.model_validate_json(finding.model_dump_json()) == finding
    assert Signal(**BASE, kind=Kind.FINDING, category=Category.SAST).truncated == {}


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=5_000) | st.integers(0, 20_000).map(
    lambda n: "\x00" * n  # a JSON escape: 6 bytes per character
)
_LIST = st.lists(_TEXT, max_size=300) | st.integers(0, 20_000).map(lambda n: ["\U0001f600" * 200] * n)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    kind=st.sampled_from([Kind.FINDING, Kind.ALERT]),
    texts=st.fixed_dictionaries({}, optional={n: _TEXT for n in _TEXT_LIMITS}),
    lists=st.fixed_dictionaries({}, optional={n: _LIST for n in _LIST_LIMITS}),
)
def test_any_signal_fits_its_byte_budget(kind: Kind, texts: dict[str, str], lists: dict[str, list[str]]) -> None:
    """Whatever the sizes of its fields, a signal serialises (as Temporal carries it) within SIGNAL_MAX_BYTES, and
    every value cut is counted: a list keeps its first items and the count of what it lost."""
    fields = {**BASE, **{k: v for k, v in texts.items() if v or k not in ("title", "raw_ref")}, **lists}
    extra = {"category": Category.SECRET} if kind is Kind.FINDING else {"transition": Transition.WARN}
    signal = Signal(**fields, kind=kind, **extra)
    assert _payload_bytes(signal) <= SIGNAL_MAX_BYTES
    for name, (most, limit) in _LIST_LIMITS.items():
        given_items, kept = fields.get(name, []), getattr(signal, name)
        assert len(kept) <= most and all(len(v) <= limit for v in kept)
        pairs = list(zip(kept, given_items, strict=False))
        assert all(k == g or (k.endswith("\u2026") and g.startswith(k[:-1])) for k, g in pairs)
        lost = len(given_items) - len(kept) + sum(1 for k, g in pairs if k != g)
        assert signal.truncated.get(name, 0) == lost
    for name, limit in _TEXT_LIMITS.items():
        value, given_text = getattr(signal, name), fields.get(name)
        assert value is None or len(value) <= limit
        assert signal.truncated.get(name, 0) == (value != given_text)
    assert Signal.model_validate_json(signal.model_dump_json()) == signal
