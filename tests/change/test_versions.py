"""Versions are compared by each ecosystem's own rules; the new version is the lowest fixing every advisory; a
breaking bump is told apart (a new major, a 0.x minor, a pre-release) with the release lines it skips, and under
the policy's ``max_jump`` the highest version within the jump that fixes the most is chosen."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.core.change.versions import (
    Limited,
    MaxJump,
    best_within,
    breaking,
    breaking_line,
    go_version,
    line_name,
    lowest_above,
    newest_tag,
    required_version,
    risk,
    skipped_lines,
    within,
)
from fixloop.core.parsing import split_versions, version_key


@pytest.mark.parametrize(
    ("eco", "installed", "fixed", "expected"),
    [
        ("pypi", "0.11", "0.11.11, 0.11.6, 0.12", "0.11.6"),  # alternatives: the lowest above installed
        ("gem", "6.0.2.1", "~> 5.2.4.3, >= 6.0.3.1", "6.0.3.1"),  # Ruby constraints, 5.2 branch is below
        ("pypi", "3.2.9", ["2.2.25", "3.1.14", "3.2.10"], "3.2.10"),
        ("pypi", "1.0", "1.0rc1", None),  # a pre-release of the installed version is below it
        ("npm", "3.3.9", "3.10.0, 3.4.0", "3.4.0"),  # semver, not string order
        ("go", "v0.3.6", "0.3.7", "0.3.7"),
        ("go", "v2.7.1+incompatible", "v2.8.0", "v2.8.0"),
        ("maven", "2.9.10", "2.9.10.1, 2.10.0", "2.9.10.1"),
        ("deb", "1.44.5-1+deb10u2", "1.44.5-1+deb10u3", "1.44.5-1+deb10u3"),
        ("deb", "2:1.0-1", "1.5-1", None),  # the epoch wins
        ("apk", "1.1.1b-r1", "1.1.1d-r2, 1.1.1a-r0", "1.1.1d-r2"),
        ("rpm", "1.0.2k-19.el7", "1.0.2k-21.el7", "1.0.2k-21.el7"),
        ("pypi", "1.0", "$(rm -rf /), `id`, 1.1; reboot, 1.2", "1.2"),  # not versions: ignored
        ("pypi", "not a version", "1.1", None),
    ],
)
def test_lowest_above(eco: str, installed: str, fixed: str | list[str], expected: str | None) -> None:
    assert lowest_above(eco, installed, fixed) == expected


def test_required_version_is_the_highest_per_advisory_fix() -> None:
    advisories = [["0.15.3"], ["0.11.11"], ["0.11.6"], ["0.12"], ["0.15.0"]]  # Werkzeug 0.11, Trivy
    assert required_version("pypi", "0.11", advisories) == "0.15.3"
    assert required_version("pypi", "18.9.0", [["19.2.1"], ["20.3.0rc1"], ["19.7.0rc1"]]) == "20.3.0rc1"
    assert required_version("pypi", "0.11", [["0.12"], [""]]) is None  # one advisory without a usable fix


def test_go_version_form() -> None:
    assert go_version("0.3.7", "golang.org/x/text") == "v0.3.7"
    assert go_version("v2.8.0", "github.com/docker/distribution") == "v2.8.0+incompatible"
    assert go_version("2.1.0", "github.com/go-redis/redis/v8") == "v2.1.0"
    assert go_version("v2.4.0", "gopkg.in/yaml.v2") == "v2.4.0"


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ("3.9.4", "3.9.6"),
        ("10.2", "10.13"),  # numeric, not string order (10.9 < 10.13)
        ("14.17-alpine", "14.21-alpine"),  # same variant, same number of components
        ("3.9", None),  # 3.x with two components: only 3.9 is listed
        ("10", None),  # a single number has no line
        ("latest", None),
        ("buster", None),
        ("3.9.6", None),  # already the newest
        ("20221118", "20230201"),  # a date tag (a rolling release's snapshot): the newest later date
        ("20230201", None),
        ("20221118-dev", None),  # the same variant only
    ],
)
def test_newest_tag(current: str, expected: str | None) -> None:
    tags = ["3", "3.9", "3.9.4", "3.9.5", "3.9.6", "3.10.0", "10", "10.2", "10.9", "10.13", "10.13-slim", "11.5"]
    tags += ["20221118", "20230201", "20221399", "2023020100"]  # not dates: month 13, ten digits
    tags += ["14.17-alpine", "14.21-alpine", "14.21.3-alpine", "16.20-alpine", "latest", "3.9.7;rm -rf /"]
    assert newest_tag(current, tags) == expected


def test_risk_notes() -> None:
    assert risk("pypi", "18.9.0", "20.3.0rc1") == "major version change 18 -> 20; the fixed version is a pre-release"
    assert risk("go", "v0.35.0", "v0.37.0") == "0.x minor version change (may break the API)"
    assert risk("npm", "3.3.9", "3.4.0") is None


# ---------------------------------------------------------------- breaking jumps and max_jump

WERKZEUG = [["0.15.3"], ["0.11.11"], ["0.11.6"], ["0.12"], ["0.15.0"]]  # Werkzeug 0.11's advisories, Trivy
CELERY = [["2.2.8", "2.3.4", "2.4.4"], ["5.2.2"]]  # CVE-2011-4356 (three release lines), CVE-2021-23727


@pytest.mark.parametrize(
    ("eco", "current", "new", "expected"),
    [
        ("pypi", "0.11", "0.15.3", ("0.x minor", False)),
        ("pypi", "0.11", "0.11.11", (None, False)),
        ("pypi", "2.2.7", "5.2.2", ("major", False)),
        ("pypi", "18.9.0", "20.3.0rc1", ("major", True)),
        ("pypi", "1.4.0", "1.5.0.dev1", (None, True)),  # a PEP 440 dev release is a pre-release
        ("maven", "29.0-jre", "30.0-jre", ("major", False)),
        ("maven", "5.3.1", "5.3.2-M1", (None, True)),
        ("go", "v0.35.0", "v0.37.0", ("0.x minor", False)),
        ("npm", "4.17.13", "4.17.20", (None, False)),
        ("npm", "0.0.1", "0.0.2", (None, False)),  # 0.0.x patches are not told apart
        ("pypi", "latest", "2.0", (None, False)),  # no leading number: no release line
    ],
)
def test_breaking(eco: str, current: str, new: str, expected: tuple[str | None, bool]) -> None:
    assert breaking(eco, current, new) == expected


def test_release_lines_and_the_jump_they_allow() -> None:
    assert [breaking_line(v) for v in ("0.11", "0.11.16", "0.15.3", "1.0.1", "2.4", "v3.1.0", "x")] == [
        (0, 11), (0, 11), (0, 15), (1,), (2,), (3,), None
    ]  # fmt: skip
    assert [line_name(line) for line in ((0, 12), (3,))] == ["0.12", "3.x"]
    assert within("major", "0.11", "5.0") and within("minor", "0.11", "0.11.16") and not within("minor", "0.11", "0.12")
    assert within("minor", "2.2.7", "2.5.5") and not within("minor", "2.2.7", "3.0.0")
    assert within("patch", "2.2.7", "2.2.10") and not within("patch", "2.2.7", "2.3.0")
    assert within("patch", "0.11", "0.11.16") and not within("patch", "latest", "latest")
    assert skipped_lines("pypi", "0.11", "1.0.1", ["0.11.15", "0.12.2", "0.14.1", "0.16.0", "1.0.0", "2.0.0"]) == [
        (0, 12), (0, 14), (0, 16)
    ]  # fmt: skip
    assert skipped_lines("pypi", "2.2.7", "5.2.2", ["3.0.0", "3.1.25", "4.0.0rc3", "6.0"]) == [(3,)]  # rc: no line


def test_the_highest_version_within_the_jump_fixes_what_it_can() -> None:
    # the advisories' own versions: within 0.11 the highest that fixes the most is 0.11.11; three need 0.12 and up
    limited = best_within("pypi", "0.11", WERKZEUG, "minor")
    assert (limited.version, limited.held, limited.needs) == ("0.11.11", (0, 3, 4), ("0.15.3", "0.12", "0.15.0"))
    # a fix on several lines: 2.3.0 is not fixed (the 2.3 line's fix is 2.3.4), 2.2.10 is (the 2.2 line's is 2.2.8)
    listed = ["2.2.7", "2.2.8", "2.2.10", "2.3.0", "2.5.0rc1", "3.0.0"]
    assert best_within("pypi", "2.2.7", CELERY, "patch", listed) == Limited("2.2.10", (1,), ("5.2.2",))
    assert best_within("pypi", "2.2.7", CELERY, "minor", ["2.3.0"]) == Limited(None, (0, 1), ("2.2.8", "5.2.2"))
    assert best_within("pypi", "2.2.7", CELERY, "minor").version == "2.4.4"  # no release list: the advisories'
    assert best_within("pypi", "not a version", CELERY, "minor").version is None


_NUMS = st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=4).map(lambda ns: ".".join(map(str, ns)))
VERSION = st.one_of(
    _NUMS,
    st.tuples(_NUMS, st.sampled_from(["rc1", "b2", ".dev0", "-jre", "-alpha", "+incompatible", ".post1", "-1"])).map(
        "".join
    ),
    st.text(max_size=20),
    _NUMS.map(lambda v: "v" + v),
)


@settings(max_examples=300)
@given(
    eco=st.sampled_from(["pypi", "npm", "go", "maven", "deb", None]),
    installed=VERSION,
    advisories=st.lists(st.lists(VERSION, max_size=4), max_size=5),
    listed=st.none() | st.lists(VERSION, max_size=30),
    max_jump=st.sampled_from(["major", "minor", "patch"]),
)
def test_best_within_never_raises_and_never_leaves_the_jump(
    eco: str | None,
    installed: str,
    advisories: list[list[str]],
    listed: list[str] | None,
    max_jump: MaxJump,
) -> None:
    limited = best_within(eco, installed, advisories, max_jump, listed)
    assert len(limited.held) == len(limited.needs) and set(limited.held) <= set(range(len(advisories)))
    breaking(eco, installed, limited.version or installed)
    skipped_lines(eco, installed, limited.version or installed, listed or [])
    if limited.version is not None:
        assert within(max_jump, installed, limited.version)
        assert version_key(eco, limited.version) > version_key(eco, installed)  # type: ignore[operator]
        assert len(limited.held) < len(advisories)  # it fixes at least one
        pool = listed if listed is not None else [v for a in advisories for v in split_versions(a)]
        assert limited.version in pool
