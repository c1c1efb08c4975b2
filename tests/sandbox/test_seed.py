"""The seeded GitOps repository matches the real scanner reports fixloop's tests and demo use: every vulnerable
package version a report found is pinned at that version in the seeded service, every scanned base image is the
seeded Dockerfile's ``FROM``, and the repository parses (YAML, JSON)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from fixloop.sandbox.repos import RepoStore
from fixloop.sandbox.seed import DEFAULT_BRANCH, GITOPS_PROJECT, seed_files, seed_gitops
from tests.conftest import signals

FILES = seed_files()


def installed(report: str, **where: str) -> set[tuple[str, str]]:
    """``{(package, installed version)}`` of the report's package findings (``where`` filters on Signal fields)."""
    return {
        (s.package, s.installed_version)
        for s in signals(report)
        if s.package and s.installed_version and all(getattr(s, k) == v for k, v in where.items())
    }


def from_line(path: str) -> str:
    return re.findall(r"^FROM\s+(\S+)", FILES[path], re.M)[0]


@pytest.mark.parametrize(
    ("dockerfile", "report", "image"),
    [
        ("services/catalog/Dockerfile", "trivy/trivy-head_alpine-39.json", "alpine:3.9.4"),
        ("services/legacy-api/Dockerfile", "trivy/trivy-0.22-fulldb_fluentd-multiple-lockfiles.json", "debian:10.2"),
    ],
)
def test_base_images_are_the_scanned_os_releases(dockerfile: str, report: str, image: str) -> None:
    assert from_line(dockerfile) == image
    os = json.loads((Path(__file__).parents[1] / "fixtures" / report).read_text())["Metadata"]["OS"]
    assert f"{os['Family']}:{os['Name']}" == image


def test_python_pins_are_the_scanned_versions() -> None:
    requirements = FILES["services/payments/requirements.txt"]
    pins = {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", requirements, re.M)}
    found = installed("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json") | installed(
        "trivy/trivy-0.22-fulldb_pip.json"
    )
    assert found, "the reports have package findings"
    for package, version in found:
        assert pins.get(package.lower()) == version, package


def test_npm_lockfile_has_the_scanned_versions() -> None:
    lock = json.loads(FILES["services/storefront/package-lock.json"])
    found = installed("trivy/trivy-head_npm.json") | installed("snyk/dd-snyk_npm_1critical.json")
    assert {p for p, _ in found} == {"jquery", "lodash"}
    for package, version in found:
        assert lock["packages"][f"node_modules/{package}"]["version"] == version
        assert lock["dependencies"][package]["version"] == version
    assert json.loads(FILES["services/storefront/package.json"])["dependencies"]["jquery"] == "3.3.9"


def test_go_module_requirements_are_the_scanned_versions() -> None:
    required = dict(re.findall(r"^\s+(\S+) (v\S+)$", FILES["services/inventory/go.mod"], re.M))
    found = installed("trivy/trivy-head_gomod.json", target="go.mod")
    assert len(found) == 3
    for package, version in found:
        assert required[package] == version


def test_manifests_parse_and_every_service_is_deployed_in_both_environments() -> None:
    yaml = YAML(typ="safe")
    docs = {path: list(yaml.load_all(text)) for path, text in FILES.items() if path.endswith((".yaml", ".yml"))}
    services = {p.split("/")[2] for p in FILES if p.startswith("apps/base/")}
    assert services == {"catalog", "legacy-api", "storefront", "payments", "inventory"}
    for env in ("staging", "production"):
        (kustomization,) = docs[f"apps/{env}/kustomization.yaml"]
        assert {r.removeprefix("../base/") for r in kustomization["resources"]} == services
        assert {i["name"].rsplit("/", 1)[1] for i in kustomization["images"]} == services
        (flux,) = docs[f"clusters/sandbox/apps-{env}.yaml"]
        assert flux["kind"] == "Kustomization" and flux["spec"]["path"] == f"./apps/{env}"
    for name in services:
        assert f"services/{name}/Dockerfile" in FILES


def test_seeding_writes_one_commit_with_every_file(tmp_path: Path) -> None:
    repos = RepoStore(tmp_path)
    sha = seed_gitops(repos, datetime(2026, 11, 1, tzinfo=UTC))
    assert repos.branches(GITOPS_PROJECT) == {DEFAULT_BRANCH: sha}
    blobs = {e.path for e in repos.tree(GITOPS_PROJECT, sha, recursive=True) if e.type == "blob"}
    assert blobs == set(FILES)
    dockerfile = "services/catalog/Dockerfile"
    assert repos.read(GITOPS_PROJECT, sha, dockerfile) == FILES[dockerfile].encode()
    # same content and time: the same commit (the seed is deterministic)
    assert seed_gitops(RepoStore(tmp_path / "again"), datetime(2026, 11, 1, tzinfo=UTC)) == sha
