"""Versions are compared by each ecosystem's own rules; the new version is the lowest fixing every advisory."""

from __future__ import annotations

import pytest

from fixloop.core.change.versions import go_version, lowest_above, newest_tag, required_version, risk


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
