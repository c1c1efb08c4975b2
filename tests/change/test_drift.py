"""Version drift across the manifests of the seeded GitOps repository (``fixloop.core.change.drift``)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from fixloop.core.change.drift import (
    Pin,
    drift_table,
    repository_drift,
    repository_pins,
    version_drift,
)
from tests.change.helpers import SEED


def _package_json(name: str, deps: dict[str, str], dev: dict[str, str] | None = None) -> str:
    doc: dict[str, object] = {"name": name, "version": "1.0.0", "dependencies": deps}
    if dev:
        doc["devDependencies"] = dev
    return json.dumps(doc, indent=2) + "\n"


# The seeded repository (payments pins Werkzeug==0.11 and Django==3.2.9, storefront jquery 3.3.9) and three more
# services: checkout (python, requirements), admin (pyproject, a floor), backoffice (npm, a caret range).
FLEET = {
    **SEED,
    "services/checkout/requirements.txt": "# checkout\nWerkzeug==2.3.8\ndjango==4.2.16  # LTS\nrequests==2.31.0\n",
    "services/admin/pyproject.toml": (
        '[project]\nname = "admin"\nversion = "0.1.0"\ndependencies = ["Django>=3.2.25", "requests==2.31.0"]\n'
    ),
    "services/backoffice/package.json": _package_json("backoffice", {"jquery": "^3.5.0"}, {"@babel/core": "7.8.3"}),
    "services/backoffice/package-lock.json": json.dumps({"packages": {"node_modules/jquery": {"version": "3.2.1"}}}),
    "services/backoffice/node_modules/jquery/package.json": _package_json("jquery", {"sizzle": "2.3.3"}),
}


def test_the_same_package_at_different_versions_across_services_is_drift_newest_first() -> None:
    report = repository_drift(FLEET, FLEET.get)
    found = {(d.ecosystem, d.package): d for d in report.drifts}
    assert set(found) == {("pypi", "django"), ("pypi", "werkzeug"), ("npm", "jquery")}
    django = found[("pypi", "django")]
    assert [(v.version, v.paths, v.services) for v in django.versions] == [
        ("4.2.16", ("services/checkout/requirements.txt",), ("checkout",)),
        ("3.2.25", ("services/admin/pyproject.toml",), ("admin",)),
        ("3.2.9", ("services/payments/requirements.txt",), ("payments",)),
    ]
    assert django.target == "4.2.16"
    assert django.behind == ("services/admin/pyproject.toml", "services/payments/requirements.txt")
    assert django.services == ("admin", "checkout", "payments")
    jquery = found[("npm", "jquery")]
    assert [v.version for v in jquery.versions] == ["3.5.0", "3.3.9"]  # the caret range's version, not the lock's
    assert jquery.behind == ("services/storefront/package.json",)
    # most services first: django (3), then the two-service ones by ecosystem and name
    assert [d.package for d in report.drifts] == ["django", "jquery", "werkzeug"]
    assert report.more == 0 and report.skipped == ()


def test_one_version_everywhere_lockfiles_and_vendored_folders_are_not_drift() -> None:
    """requests is 2.31.0 in both files, @babel/core 7.8.3 in both package.json: no drift; the lockfile's jquery
    3.2.1 and the vendored node_modules copy are not the repository's own pins."""
    pins = repository_pins(FLEET, FLEET.get)
    assert not any(p.path.endswith("package-lock.json") or "node_modules" in p.path for p in pins)
    packages = {d.package for d in version_drift(pins).drifts}
    assert "requests" not in packages and "@babel/core" not in packages and "sizzle" not in packages


def test_go_and_maven_pins_are_read_a_maven_property_resolved() -> None:
    files = {
        "services/inventory/go.mod": SEED["services/inventory/go.mod"],
        "services/stock/go.mod": "module example/stock\n\ngo 1.21\n\nrequire golang.org/x/text v0.14.0\n",
        "services/ledger/pom.xml": (
            "<project><properties><jackson.version>2.13.0</jackson.version></properties><dependencies>"
            "<dependency><groupId>com.fasterxml.jackson.core</groupId><artifactId>jackson-databind</artifactId>"
            "<version>${jackson.version}</version></dependency></dependencies></project>"
        ),
        "services/billing/pom.xml": (
            "<project><dependencies><dependency><groupId>com.fasterxml.jackson.core</groupId>"
            "<artifactId>jackson-databind</artifactId><version>2.15.2</version></dependency></dependencies></project>"
        ),
    }
    report = repository_drift(files, files.get)
    assert [(d.ecosystem, d.package, [v.version for v in d.versions]) for d in report.drifts] == [
        ("go", "golang.org/x/text", ["v0.14.0", "v0.3.6"]),
        ("maven", "com.fasterxml.jackson.core:jackson-databind", ["2.15.2", "2.13.0"]),
    ]


def test_a_manifest_that_does_not_parse_is_skipped_with_its_reason_and_the_others_still_read() -> None:
    files = {**FLEET, "services/broken/package.json": '{"dependencies": {"jquery": "1.0.0",}}\n'}
    report = repository_drift(files, files.get)
    assert [path for path, _ in report.skipped] == ["services/broken/package.json"]
    assert "not valid JSON" in report.skipped[0][1]
    assert {d.package for d in report.drifts} == {"django", "werkzeug", "jquery"}


def test_the_table_marks_the_target_and_keeps_repository_text_inert() -> None:
    hostile = {
        "services/a|b/requirements.txt": "evil==1.0\n",
        "services/c/requirements.txt": "evil==2.0\n",
    }
    table = drift_table(repository_drift(hostile, hostile.get).drifts)
    lines = table.splitlines()
    assert lines[:2] == ["| Package | Version | Services | Files |", "| --- | --- | --- | --- |"]
    assert "2\\.0 (target)" in lines[2] and "services/c/requirements.txt" in lines[2]
    assert "services/a\\|b/requirements.txt" in lines[3]  # a | in a path cannot open a cell
    assert all(line.count("|") - line.count("\\|") == 5 for line in lines)


_VERSION = st.text(alphabet="0123456789.abcrv+-", min_size=1, max_size=12).filter(lambda v: v[0].isalnum())


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), _VERSION), min_size=1, max_size=12))
def test_every_pin_is_in_exactly_one_version_row_and_the_target_is_a_pinned_version(
    pins: list[tuple[str, str]],
) -> None:
    """Any versions, comparable or not (``1.0rc``, ``v2``, ``1..2``): no crash, each drifting package's rows hold
    each of its pins' paths once, and its target is one of its pinned versions."""
    given_pins = [Pin("pypi", "pkg", v, f"services/{svc}{i}/requirements.txt", svc) for i, (svc, v) in enumerate(pins)]
    report = version_drift(given_pins)
    versions = {v for _, v in pins}
    if len(versions) < 2:
        assert report.drifts == ()
        return
    (drift,) = report.drifts
    assert drift.target in versions
    assert sorted(v.version for v in drift.versions) == sorted(versions)
    assert sorted(p for v in drift.versions for p in v.paths) == sorted(p.path for p in given_pins)
