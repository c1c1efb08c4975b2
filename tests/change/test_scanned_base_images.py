"""Each scanner's real container report plans a base-image change against a repository whose Dockerfile is on the
scanned OS release: Grype (debian 10, wolfi, RHEL 8 and 9), GitLab container scanning (alpine, debian) and Snyk
container (debian 10 and 11).

Where a real report has fixed OS packages, the test goes through the rules engine's own ``os_rebuild`` item: Grype
debian 10 (defectdojo-django, grype 0.7's ``fixedInVersion``), wolfi and RHEL 8 (xjoin-kafka-connect-strimzi), GitLab
alpine (Trivy's template), Snyk debian 10 (a synthetic report: the only real Snyk container report has no fixed OS
package).

``rebuild`` hands the planner a report's OS findings, none fixed, as an ``os_rebuild`` (the triage makes a risk digest
of them: the locator and the tag choice do not depend on the fixes) only where no real report of that OS has a fix:
RHEL 9 named through the packages' purls (keycloak), GitLab's debian 10.9 and Snyk's debian 11 (juice-shop). GitLab's
other real container report (ecr-admintools, Trivy's 14.0.6 template) has fixed OS packages but no OS: the template
cuts the ``(<os> <release>)`` off Trivy's target, so the planner says the base image is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fixloop.core.change import NotLocated, Plan, plan
from fixloop.core.change.ops import BumpBaseImage
from fixloop.core.models import Signal, WorkItem, WorkItemKind
from fixloop.core.triage import triage_rules
from fixloop.core.triage.rules import os_level
from tests.change.helpers import SEED, TAGS, signals, work_item

OS = WorkItemKind.OS_REBUILD
WOLFI = "cgr.dev/chainguard/wolfi-base"
UBI8_MINIMAL = "registry.access.redhat.com/ubi8/ubi-minimal"
UBI9 = "registry.access.redhat.com/ubi9"


def rebuild(report: str) -> tuple[WorkItem, list[Signal]]:
    """The rules engine's risk digest of the report's OS findings (none has a fix), as an ``os_rebuild``."""
    found = signals(report)
    items = triage_rules(found).work_items
    assert not [w for w in items if w.kind is OS]  # else: test through that item
    digests = [
        w
        for w in items
        if w.kind is WorkItemKind.RISK_DIGEST and all(os_level(s) for s in found if s.fingerprint in w.signals)
    ]
    assert len(digests) == 1, [w.title for w in digests]
    return digests[0].model_copy(update={"kind": OS}), found


def rules_rebuild(report: str, artifact: str, fixed: int) -> tuple[WorkItem, list[Signal]]:
    """The rules engine's own ``os_rebuild`` of a real report: of the scanned ``artifact``, ``fixed`` OS findings."""
    item, found = work_item(report, OS)
    assert (item.artifact, len(item.signals)) == (artifact, fixed)
    return item, found


def planned(
    item: WorkItem, found: list[Signal], files: Mapping[str, str], tags: Mapping[str, Sequence[str]]
) -> Plan:
    result = plan(item, found, {**SEED, **files}, tags=lambda name: tags.get(name, []))
    assert isinstance(result, Plan), result
    return result


def bumps(result: Plan) -> list[tuple[str, int, str, str]]:
    """``(path, stage, current, new)`` of each operation, all base-image bumps."""
    assert all(isinstance(op, BumpBaseImage) for op in result.operations)
    return [(op.path, op.stage, op.current, op.new) for op in result.operations if isinstance(op, BumpBaseImage)]


def test_grype_debian_10_bumps_the_arg_default_of_the_dockerfile_of_the_scanned_image() -> None:
    """Grype 0.7 names the release line (``debian 10``) and 28 fixed deb packages (``fixedInVersion``): the rules
    engine's rebuild of defectdojo-django. The seeded repository has two Dockerfiles on debian 10 (services/legacy-api
    too): the one in the directory named after the scanned image is changed, in its ARG, keeping the slim variant."""
    image = "defectdojo/defectdojo-django:1.13.1"
    item, found = rules_rebuild("grype/dd-grype-0.7_defectdojo-django-1.13.1.json", image, 28)
    dockerfile = (
        "ARG DEBIAN=debian:10.8-slim\n"
        "FROM ${DEBIAN} AS base\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3 libopenjp2-7 xmlsec1 \\\n"
        "    default-mysql-client postgresql-client git curl && rm -rf /var/lib/apt/lists/*\n"
        "FROM base AS django\n"
        "COPY dojo/ /app/dojo/\n"
    )
    result = planned(item, found, {"services/defectdojo-django/Dockerfile": dockerfile}, TAGS)
    assert bumps(result) == [
        ("services/defectdojo-django/Dockerfile", 0, "debian:10.8-slim", "debian:10.13-slim"),
    ]
    assert result.diff == (
        "--- a/services/defectdojo-django/Dockerfile\n+++ b/services/defectdojo-django/Dockerfile\n"
        "@@ -1,4 +1,4 @@\n-ARG DEBIAN=debian:10.8-slim\n+ARG DEBIAN=debian:10.13-slim\n FROM ${DEBIAN} AS base\n"
        " RUN apt-get update && apt-get install -y --no-install-recommends python3 libopenjp2-7 xmlsec1 \\\n"
        "     default-mysql-client postgresql-client git curl && rm -rf /var/lib/apt/lists/*\n"
    )
    assert any("default of ARG DEBIAN" in n and "--build-arg DEBIAN" in n for n in result.notes)


def test_grype_wolfi_bumps_the_date_tag_of_wolfi_base_behind_a_platform_flag() -> None:
    """Wolfi is a rolling distribution: its release is the snapshot's date (``distro=wolfi-20221118``)."""
    item, found = work_item("grype/grype-0.61.1_chainguard-ruby-3.0.json", OS)
    dockerfile = (
        "FROM --platform=$TARGETPLATFORM \\\n    cgr.dev/chainguard/wolfi-base:20221118\nRUN apk add ruby-3.0\n"
    )
    tags = {WOLFI: ["20221118", "20230125", "20230201", "latest"]}
    result = planned(item, found, {"services/ruby/Dockerfile": dockerfile}, tags)
    assert bumps(result) == [
        ("services/ruby/Dockerfile", 0, f"{WOLFI}:20221118", f"{WOLFI}:20230201"),
    ]
    assert result.edits["services/ruby/Dockerfile"] == dockerfile.replace("20221118", "20230201")


def test_grype_rhel_8_bumps_the_ubi_minimal_tag_in_its_arg() -> None:
    """xjoin-kafka-connect-strimzi on RHEL 8.7 (``redhat 8.7``): 20 fixed rpm packages, the rules engine's rebuild;
    the Dockerfile is on UBI 8 minimal, its tag in an ARG. ``8.7-1085`` is another variant (a build), not newer."""
    image = "quay.io/cloudservices/xjoin-kafka-connect-strimzi:latest"
    item, found = rules_rebuild("grype/dd-grype-0.96_xjoin-kafka-connect-strimzi.json", image, 20)
    dockerfile = (
        "ARG UBI_TAG=8.7\n"
        "FROM registry.access.redhat.com/ubi8/ubi-minimal:${UBI_TAG}\n"
        "RUN microdnf install -y java-17-openjdk-headless shadow-utils && microdnf clean all\n"
        "COPY plugins/ /opt/kafka/plugins/\n"
        "USER 1001\n"
    )
    tags = {UBI8_MINIMAL: ["8.6", "8.7", "8.7-1085", "8.8", "8.9", "8.10", "latest"]}
    result = planned(item, found, {"services/kafka-connect/Dockerfile": dockerfile}, tags)
    assert bumps(result) == [
        ("services/kafka-connect/Dockerfile", 0, f"{UBI8_MINIMAL}:8.7", f"{UBI8_MINIMAL}:8.10"),
    ]
    assert result.diff == (
        "--- a/services/kafka-connect/Dockerfile\n+++ b/services/kafka-connect/Dockerfile\n"
        "@@ -1,4 +1,4 @@\n-ARG UBI_TAG=8.7\n+ARG UBI_TAG=8.10\n"
        " FROM registry.access.redhat.com/ubi8/ubi-minimal:${UBI_TAG}\n"
        " RUN microdnf install -y java-17-openjdk-headless shadow-utils && microdnf clean all\n"
        " COPY plugins/ /opt/kafka/plugins/\n"
    )
    assert any("default of ARG UBI_TAG" in n for n in result.notes)


def test_grype_rhel_9_bumps_both_ubi_stages_and_skips_the_stage_named_after_one() -> None:
    """Keycloak's image is on RHEL 9.1 (its packages' ``distro=rhel-9.1``: no OS target), built from UBI 9 in two
    stages behind an ARG that names the registry path only: the tags are on the FROM lines, which change; ``FROM
    ubi-micro-build AS chown`` names a stage, not an image. None of its OS packages has a fix: ``rebuild``."""
    item, found = rebuild("grype/grype-0.66_keycloak-21.0.2.json")
    dockerfile = (
        "ARG UBI=registry.access.redhat.com/ubi9\n"
        "FROM ${UBI}:9.1 AS ubi-micro-build\n"
        "RUN mkdir -p /tmp/null/rootfs && dnf install --installroot /tmp/null/rootfs -y java-17-openjdk-headless\n"
        "FROM ubi-micro-build AS chown\n"
        "RUN chown -R 1000:0 /opt/keycloak\n"
        "FROM ${UBI}/ubi-micro:9.1\n"
        "COPY --from=ubi-micro-build /tmp/null/rootfs/ /\n"
    )
    tags = {
        UBI9: ["9.0", "9.1", "9.1.0-1750", "9.2", "latest"],
        f"{UBI9}/ubi-micro": ["9.1", "9.1.0-15", "9.2", "9.3"],
    }
    result = planned(item, found, {"services/keycloak/Dockerfile": dockerfile}, tags)
    assert bumps(result) == [
        ("services/keycloak/Dockerfile", 0, f"{UBI9}:9.1", f"{UBI9}:9.2"),
        ("services/keycloak/Dockerfile", 2, f"{UBI9}/ubi-micro:9.1", f"{UBI9}/ubi-micro:9.3"),
    ]
    assert result.edits["services/keycloak/Dockerfile"] == dockerfile.replace(
        "${UBI}:9.1", "${UBI}:9.2"
    ).replace("ubi-micro:9.1", "ubi-micro:9.3")
    assert result.notes == []  # the edits are on the FROM lines, not in the ARG


def test_gitlab_container_scanning_debian_keeps_the_slim_variant() -> None:
    """``location.operating_system`` ``debian 10.9``; every solution is "No solution provided": ``rebuild``."""
    item, found = rebuild("gitlab/dd-gl-container-scanning_5vulns.json")
    dockerfile = "FROM debian:10.9-slim AS runtime\nCOPY app /usr/local/bin/app\n"
    result = planned(item, found, {"services/vulnerable-project/Dockerfile": dockerfile}, TAGS)
    assert bumps(result) == [
        ("services/vulnerable-project/Dockerfile", 0, "debian:10.9-slim", "debian:10.13-slim"),
    ]


def test_gitlab_container_scanning_alpine_fixes_go_through_the_rules_engine() -> None:
    """Trivy's GitLab template: fixed OS packages (``Upgrade libssl1.1 to 1.1.1d-r2``), so triage's own
    ``os_rebuild`` item; the image is a tarball, the one Dockerfile on alpine 3.10.2 is the site."""
    item, found = work_item("gitlab/trivy-head-gitlab-tpl_alpine-310.gl-container-scanning.json", OS)
    dockerfile = "ARG ALPINE_VERSION=3.10.2\nFROM alpine:${ALPINE_VERSION}\nRUN apk add --no-cache openssl\n"
    result = planned(item, found, {"services/edge/Dockerfile": dockerfile}, TAGS)
    assert bumps(result) == [
        ("services/edge/Dockerfile", 0, "alpine:3.10.2", "alpine:3.10.9"),
    ]
    assert result.edits["services/edge/Dockerfile"].splitlines()[0] == "ARG ALPINE_VERSION=3.10.9"


def test_gitlab_container_scanning_without_its_os_names_no_base_image() -> None:
    """ecr-admintools (Trivy's 14.0.6 template): the rules engine rebuilds the image for its 76 fixed OS packages
    (its ``Node.js`` and ``composer.lock`` findings are dependency bumps), but ``operating_system`` is "Unknown" and
    the OS was cut off the target: no Dockerfile is guessed, even one on alpine."""
    image = "XXXXXX.dkr.ecr.eu-west-3.amazonaws.com/XXX/admintools/tools:pipeline-ci"
    item, found = rules_rebuild("gitlab/dd-gl-container-scanning_ecr-admintools_98vulns.json", image, 76)
    files = {"services/tools/Dockerfile": "FROM alpine:3.15.0\nRUN apk add --no-cache curl git\n"}
    result = plan(item, found, {**SEED, **files}, tags=lambda name: TAGS.get(name, []))
    assert isinstance(result, NotLocated)
    assert result.reason == (
        "the scan does not name the operating system release of the image, so its base image is unknown"
    )


def test_snyk_container_with_its_dockerfile_bumps_the_arg_the_base_image_comes_from() -> None:
    """Snyk's ``packageManager`` ``debian:10`` names the release; ``docker.baseImage`` is the Dockerfile's
    (``--file``). The seeded legacy-api Dockerfile, written with an ARG, is the one: its ARG changes."""
    item, found = work_item("snyk/synthetic_snyk-container_debian-10_file-dockerfile.json", OS)
    assert item.artifact == "registry.sandbox.local/shop/legacy-api"
    seeded = SEED["services/legacy-api/Dockerfile"]
    dockerfile = "ARG DEBIAN_RELEASE=10.2\n" + seeded.replace("FROM debian:10.2", "FROM debian:${DEBIAN_RELEASE}")
    result = planned(item, found, {"services/legacy-api/Dockerfile": dockerfile}, TAGS)
    assert bumps(result) == [
        ("services/legacy-api/Dockerfile", 0, "debian:10.2", "debian:10.13"),
    ]
    assert result.diff.splitlines()[3:6] == [
        "-ARG DEBIAN_RELEASE=10.2",
        "+ARG DEBIAN_RELEASE=10.13",
        " FROM debian:${DEBIAN_RELEASE}",
    ]


def test_snyk_container_juiceshop_on_debian_11() -> None:
    """The real Snyk container report: ``packageManager`` ``debian:11`` on its 25 OS findings, and none of them has a
    fix (every ``fixedIn`` is empty; only its application's npm findings have one, a dependency bump), so no triage
    item rebuilds the image: ``rebuild`` relabels its OS risk digest."""
    item, found = rebuild("snyk/dd-snyk-container_juiceshop_deb_25vulns.json")
    dockerfile = (
        "FROM node:18.19-bullseye AS build\nRUN npm ci\nFROM debian:11.7\nCOPY --from=build /juice-shop /juice-shop\n"
    )
    tags = {**TAGS, "debian": [*TAGS["debian"], "11.7", "11.8", "12.4"]}
    result = planned(item, found, {"services/juiceshop/Dockerfile": dockerfile}, tags)
    assert bumps(result) == [
        ("services/juiceshop/Dockerfile", 1, "debian:11.7", "debian:11.8"),
    ]
