"""plan() on the seeded GitOps repository and the real reports: the whole diff of each merge request, and the
reason when there is nothing to change."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.core.change import NotLocated, Plan, plan
from fixloop.core.change.locate import purl_distro, scanned_os
from fixloop.core.change.ops import BumpBaseImage, BumpGoModule, BumpNpmPackage, BumpPythonPin, PolicyViolation
from fixloop.core.change.plan import check_proposal
from fixloop.core.models import WorkItemKind
from tests.change.helpers import SEED, signals, tags, work_item

OS, DEP = WorkItemKind.OS_REBUILD, WorkItemKind.DEPENDENCY_BUMP


def planned(report: str, kind: WorkItemKind, target: str | None = None) -> Plan:
    item, found = work_item(report, kind, target)
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, Plan), result
    assert result.branch == f"fixloop/{item.id}"
    return result


def test_alpine_base_image_moves_to_the_newest_tag_of_its_line() -> None:
    result = planned("trivy/trivy-head_alpine-39.json", OS)
    assert result.operations == [
        BumpBaseImage(path="services/catalog/Dockerfile", stage=0, current="alpine:3.9.4", new="alpine:3.9.6")
    ]
    assert result.diff == (
        "--- a/services/catalog/Dockerfile\n"
        "+++ b/services/catalog/Dockerfile\n"
        "@@ -1,4 +1,4 @@\n"
        "-FROM alpine:3.9.4\n"
        "+FROM alpine:3.9.6\n"
        " \n"
        " RUN apk add --no-cache ca-certificates tzdata \\\n"
        "     && addgroup -S app && adduser -S -G app app\n"
    )
    assert result.not_fixable == [] and result.risks == []


def test_debian_base_image_moves_to_the_newest_point_release() -> None:
    result = planned("trivy/trivy-0.22-fulldb_fluentd-multiple-lockfiles.json", OS)
    assert result.diff == (
        "--- a/services/legacy-api/Dockerfile\n"
        "+++ b/services/legacy-api/Dockerfile\n"
        "@@ -1,4 +1,4 @@\n"
        "-FROM debian:10.2\n"
        "+FROM debian:10.13\n"
        " \n"
        " RUN apt-get update \\\n"
        "     && apt-get install -y --no-install-recommends ca-certificates libidn2-0 e2fsprogs \\\n"
    )


def test_python_pin_takes_the_lowest_version_fixing_every_advisory() -> None:
    # Werkzeug 0.11: fixes in 0.11.6, 0.11.11, 0.12, 0.15.0 and 0.15.3 -> 0.15.3 fixes all five
    result = planned("trivy/trivy-0.22-fulldb_pip.json", DEP)
    assert result.operations == [
        BumpPythonPin(path="services/payments/requirements.txt", package="Werkzeug", current="0.11", new="0.15.3")
    ]
    assert result.diff == (
        "--- a/services/payments/requirements.txt\n"
        "+++ b/services/payments/requirements.txt\n"
        "@@ -6,4 +6,4 @@\n"
        " Django==3.2.9\n"
        " lxml==4.6.4\n"
        " Twisted==18.9.0\n"
        "-Werkzeug==0.11\n"
        "+Werkzeug==0.15.3\n"
    )
    assert result.risks == ["Werkzeug 0.11 \u2192 0.15.3: 0.x minor version change (may break the API)"]


def test_pip_audit_bumps_keep_the_file_s_spelling_and_flag_risks() -> None:
    # pip-audit names them django / twisted; the file says Django / Twisted
    result = planned("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", DEP)
    assert result.diff == (
        "--- a/services/payments/requirements.txt\n"
        "+++ b/services/payments/requirements.txt\n"
        "@@ -1,9 +1,9 @@\n"
        " # payments service runtime dependencies (pinned; updated by merge request)\n"
        " adal==1.2.2\n"
        "-aiohttp==3.6.2\n"
        "+aiohttp==3.7.4\n"
        " alabaster==0.7.12\n"
        " azure-devops==0.17.0\n"
        "-Django==3.2.9\n"
        "+Django==3.2.10\n"
        " lxml==4.6.4\n"
        "-Twisted==18.9.0\n"
        "+Twisted==20.3.0rc1\n"
        " Werkzeug==0.11\n"
    )
    assert result.risks == [
        "Twisted 18.9.0 \u2192 20.3.0rc1: major version change 18 -> 20; the fixed version is a pre-release"
    ]


def test_npm_package_changes_package_json_and_both_lockfile_sections() -> None:
    result = planned("trivy/trivy-head_npm.json", DEP)
    assert result.operations == [
        BumpNpmPackage(
            path="services/storefront/package.json",
            lockfile="services/storefront/package-lock.json",
            package="jquery",
            current="3.3.9",
            new="3.4.0",
        )
    ]
    assert result.diff == (
        "--- a/services/storefront/package-lock.json\n"
        "+++ b/services/storefront/package-lock.json\n"
        "@@ -8,7 +8,7 @@\n"
        '       "name": "storefront",\n'
        '       "version": "3.2.0",\n'
        '       "dependencies": {\n'
        '-        "jquery": "3.3.9"\n'
        '+        "jquery": "3.4.0"\n'
        "       },\n"
        '       "devDependencies": {\n'
        '         "@babel/core": "7.8.3"\n'
        "@@ -26,8 +26,8 @@\n"
        "       }\n"
        "     },\n"
        '     "node_modules/jquery": {\n'
        '-      "version": "3.3.9",\n'
        '-      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.3.9.tgz"\n'
        '+      "version": "3.4.0",\n'
        '+      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.4.0.tgz"\n'
        "     },\n"
        '     "node_modules/lodash": {\n'
        '       "version": "4.17.13",\n'
        "@@ -45,8 +45,8 @@\n"
        "       }\n"
        "     },\n"
        '     "jquery": {\n'
        '-      "version": "3.3.9",\n'
        '-      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.3.9.tgz"\n'
        '+      "version": "3.4.0",\n'
        '+      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.4.0.tgz"\n'
        "     },\n"
        '     "lodash": {\n'
        '       "version": "4.17.13",\n'
        "--- a/services/storefront/package.json\n"
        "+++ b/services/storefront/package.json\n"
        "@@ -9,7 +9,7 @@\n"
        '     "start": "node dist/server.js"\n'
        "   },\n"
        '   "dependencies": {\n'
        '-    "jquery": "3.3.9"\n'
        '+    "jquery": "3.4.0"\n'
        "   },\n"
        '   "devDependencies": {\n'
        '     "@babel/core": "7.8.3"\n'
    )


def test_transitive_npm_package_changes_only_the_lockfile() -> None:
    result = planned("snyk/dd-snyk_npm_1critical.json", DEP)
    (op,) = result.operations
    assert isinstance(op, BumpNpmPackage) and not op.direct and op.new == "4.17.20"
    assert list(result.edits) == ["services/storefront/package-lock.json"]
    assert result.diff.count('\n+      "version": "4.17.20",\n') == 2  # packages and legacy dependencies
    assert result.notes == []  # @babel/core's ^4.17.13 admits 4.17.20


def test_go_modules_get_v_prefix_and_incompatible_suffix() -> None:
    result = planned("trivy/trivy-head_gomod.json", DEP, target="go.mod")
    assert [op.new for op in result.operations if isinstance(op, BumpGoModule)] == [
        "v2.8.0+incompatible",
        "v0.37.0",
        "v0.3.7",
    ]
    assert result.diff == (
        "--- a/services/inventory/go.mod\n"
        "+++ b/services/inventory/go.mod\n"
        "@@ -3,7 +3,7 @@\n"
        " go 1.17\n"
        " \n"
        " require (\n"
        "-\tgithub.com/docker/distribution v2.7.1+incompatible\n"
        "-\tgithub.com/open-policy-agent/opa v0.35.0\n"
        "-\tgolang.org/x/text v0.3.6\n"
        "+\tgithub.com/docker/distribution v2.8.0+incompatible\n"
        "+\tgithub.com/open-policy-agent/opa v0.37.0\n"
        "+\tgolang.org/x/text v0.3.7\n"
        " )\n"
    )


@pytest.mark.parametrize(
    ("report", "kind"),
    [
        ("trivy/trivy-head_alpine-39.json", OS),
        ("trivy/trivy-head_npm.json", DEP),
        ("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", DEP),
    ],
)
def test_replanning_gives_byte_identical_output(report: str, kind: WorkItemKind) -> None:
    item, found = work_item(report, kind)
    first = plan(item, found, SEED, tags=tags)
    again = plan(item, list(reversed(found)), dict(reversed(list(SEED.items()))), tags=tags)
    assert first.model_dump_json() == again.model_dump_json()


def test_ruby_package_is_not_located_with_a_reason() -> None:
    item, found = work_item("trivy/trivy-0.22-fulldb_fluentd-multiple-lockfiles.json", DEP)
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, NotLocated)
    assert result.reason == "activesupport: fixloop does not edit gem manifests yet"


def test_base_image_not_in_any_dockerfile_is_not_located() -> None:
    item, found = work_item("trivy/trivy-0.22-fulldb_debian-stretch.json", OS)
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, NotLocated)
    assert result.reason.startswith("no Dockerfile fixloop may change has a FROM on debian 9.")


def test_no_newer_tag_is_not_fixable() -> None:
    item, found = work_item("trivy/trivy-head_alpine-39.json", OS)
    result = plan(item, found, SEED, tags=lambda repo: ["3.9.4", "3.10.0"])
    assert isinstance(result, NotLocated)
    assert result.reason == "alpine: the registry lists no newer tag of alpine:3.9.4 in the same line and variant"


def test_same_pin_in_two_services_is_ambiguous_unless_the_target_names_the_file() -> None:
    files = dict(SEED)
    files["services/billing/requirements.txt"] = "Werkzeug==0.11\n"
    item, found = work_item("trivy/trivy-0.22-fulldb_pip.json", DEP)  # target "requirements.txt": names a file
    result = plan(item, found, files, tags=tags)
    assert isinstance(result, Plan) and sorted(result.edits) == [
        "services/billing/requirements.txt",
        "services/payments/requirements.txt",
    ]
    ambiguous = plan(item.model_copy(update={"target": None}), found, files, tags=tags)
    assert isinstance(ambiguous, NotLocated)
    assert ambiguous.reason == (
        "Werkzeug: pinned at 0.11 in several files (services/billing/requirements.txt, "
        "services/payments/requirements.txt); the scan does not say which"
    )
    by_service = plan(item.model_copy(update={"artifact": "registry.sandbox.local/shop/billing:1.0"}), found, files)
    assert isinstance(by_service, Plan) and list(by_service.edits) == ["services/billing/requirements.txt"]


def test_a_drafter_can_pick_planned_operations_but_not_add_one() -> None:
    result = planned("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", DEP)
    assert check_proposal(result.operations[:1], result) == result.operations[:1]
    forged = result.operations[0].model_copy(update={"new": "99.0"})
    with pytest.raises(PolicyViolation, match="not a validated one"):
        check_proposal([forged], result)


@pytest.mark.parametrize(
    ("report", "os"),
    [
        ("grype/dd-grype-0.28_vulnerable-image.json", ("debian", "10")),  # Grype's target: "debian 10"
        ("grype/grype-0.66_keycloak-21.0.2.json", ("redhat", "9.1")),  # purl distro=rhel-9.1
        ("grype/dd-grype-0.96_xjoin-kafka-connect-strimzi.json", ("redhat", "8.7")),
        ("grype/grype-0.61.1_chainguard-ruby-3.0.json", ("wolfi", "20221118")),  # distro=wolfi-20221118
        ("trivy/trivy-head_alpine-39.json", ("alpine", "3.9.4")),  # Trivy's "(alpine 3.9.4)" target, as before
        ("gitlab/dd-gl-container-scanning_5vulns.json", ("debian", "10.9")),  # location.operating_system
        ("snyk/dd-snyk-container_juiceshop_deb_25vulns.json", ("debian", "11")),  # packageManager "debian:11"
        ("snyk/synthetic_snyk-container_debian-10_file-dockerfile.json", ("debian", "10")),
    ],
)
def test_the_scanned_os_is_read_from_every_scanner_s_report(report: str, os: tuple[str, str]) -> None:
    assert scanned_os(signals(report)) == os


def test_purl_distro_qualifiers() -> None:
    assert purl_distro("pkg:rpm/rhel/nspr@4.34.0-17.el9_1?arch=x86_64&distro=rhel-9.1") == ("redhat", "9.1")
    assert purl_distro("pkg:deb/debian/libc6@2.28-10?arch=amd64&distro=debian-10") == ("debian", "10")
    assert purl_distro("pkg:apk/alpine/musl@1.1.20-r4?arch=x86_64&distro=3.9.4") == ("alpine", "3.9.4")
    assert purl_distro("pkg:npm/lodash@4.17.13?distro=debian-10") is None  # not an OS package
    assert purl_distro("pkg:deb/debian/libc6@2.28") is None


@given(st.text(max_size=200))
def test_purl_distro_never_raises(text: str) -> None:
    for purl in (text, f"pkg:rpm/{text}", f"pkg:deb/debian/x@1?distro={text}"):
        found = purl_distro(purl)
        assert found is None or (found[0] and found[1])


def test_a_grype_rhel_scan_bumps_the_ubi_base_image() -> None:
    """Grype names the OS of a RHEL-based image only in its packages' purls (``distro=rhel-8.7``): the UBI FROM line
    on that release moves to the newest tag of its line."""
    item, found = work_item("grype/dd-grype-0.96_xjoin-kafka-connect-strimzi.json", OS)
    dockerfile = "FROM registry.access.redhat.com/ubi8/ubi-minimal:8.7\nRUN microdnf update -y\n"
    repo = {**SEED, "services/kafka-connect/Dockerfile": dockerfile}
    ubi = {"registry.access.redhat.com/ubi8/ubi-minimal": ["8.6", "8.7", "8.7-1107", "8.8", "8.8-860", "latest"]}
    result = plan(item, found, repo, tags=lambda name: ubi.get(name, []))
    assert isinstance(result, Plan), result
    assert result.operations == [
        BumpBaseImage(
            path="services/kafka-connect/Dockerfile",
            stage=0,
            current="registry.access.redhat.com/ubi8/ubi-minimal:8.7",
            new="registry.access.redhat.com/ubi8/ubi-minimal:8.8",
        )
    ]
