"""plan() on the formats beyond the seeded repo (pyproject.toml, Pipfile, pom.xml, HelmRelease and Helm values,
Kustomize ``images:``) with real reports: the whole diff of each change, what is left to the reviewer (lockfiles with
hashes), the reasons when nothing can be changed, and the traversal and injection cases of each format."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fixloop.core.change import NotLocated, Plan, plan
from fixloop.core.change.edit import apply, toml_pins
from fixloop.core.change.mr import render
from fixloop.core.change.ops import (
    BumpMavenDependency,
    BumpPythonPin,
    BumpWorkloadImage,
    PolicyViolation,
    SetHelmValue,
)
from fixloop.core.change.policy import Policy, check_parses, validate
from fixloop.core.change.versions import maven_variants, required_version
from fixloop.core.models import Signal, WorkItem, WorkItemKind, fingerprint
from fixloop.core.triage import triage_rules
from tests.change import repos
from tests.change.helpers import SEED, work_item
from tests.conftest import signals

OS, DEP = WorkItemKind.OS_REBUILD, WorkItemKind.DEPENDENCY_BUMP
TOML_LINES = [
    "[project]", "dependencies = [", '"aiohttp==3.8.6",', "'lxml>=4.6.4'", "]", "[tool.poetry.dependencies]",
    'kopf = "1.36.2"', 'yarl = {version = "^1.9.2"}', 'aiohttp.version = "==3.8.6"', "[[package]]", "# comment", "",
    "[packages]", 'requests = "*"', 'django = "==3.2.9"', '"""', "[tool.poetry.group.dev.dependencies]",
    'pytest = ["7.0.0"]', "[dependency-groups]", 'test = [{include-group = "dev"}, "pytest==7.0.0"]',
]
OSV = "osv-scanner/dd-osv-scanner_many_findings.json"
POETRY_TARGET = "/tmptrivy-dojo-report-operator/poetry.lock"
PIP_AUDIT = "pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json"
MYFRAMEWORK = "snyk/dd-snyk_maven_myframework_41vulns.json"
ALL_PROJECTS = "snyk/dd-snyk_all-projects_maven_4vulns.json"
K8S = "trivy/dd-trivy_k8s_legacy_eks_cluster.json"
SHELL = "$(rm -rf /); `reboot` && echo pwned > /etc/passwd"


def planned(report: str, kind: WorkItemKind, files: dict[str, str], target: str | None = None) -> Plan:
    item, found = work_item(report, kind, target)
    result = plan(item, found, files, tags=redis_tags)
    assert isinstance(result, Plan), result
    return result


def redis_tags(repository: str) -> Sequence[str]:
    return repos.REDIS_TAGS if repository in ("redis", "docker.io/redis") else []


def evil(base: Signal, **fields: object) -> Signal:
    """``base`` with untrusted ``fields`` (a new fingerprint), skipping validation as a buggy parser might."""
    return base.model_copy(update={"fingerprint": fingerprint("evil", *map(str, fields.values())), **fields})


def redis_item(artifact: str = "docker.io/redis:6.0.5") -> tuple[WorkItem, list[Signal]]:
    found = signals(K8S)
    (item,) = [w for w in triage_rules(found).work_items if w.kind is OS and w.artifact == artifact]
    return item, found


# ---------------------------------------------------------------- pyproject.toml (Poetry) + poetry.lock


POETRY_NOTE = (
    "services/report-operator/poetry.lock is not changed (fixloop cannot compute its hashes) and still pins "
    "the old versions: regenerate it on this branch before merging: `poetry lock --no-update` (Poetry 2: `poetry lock`)"
)


def test_poetry_constraint_is_bumped_and_the_lockfile_is_left_to_poetry_with_a_note() -> None:
    # osv-scanner: aiohttp 3.8.6 in poetry.lock; fixes 3.9.0 and 3.9.2 (and commit ids, which are not versions)
    item, found = work_item(OSV, DEP, POETRY_TARGET)
    result = plan(item, found, repos.POETRY)
    assert isinstance(result, Plan)
    assert result.operations == [
        BumpPythonPin(path="services/report-operator/pyproject.toml", package="aiohttp", current="3.8.6", new="3.9.2")
    ]
    assert result.diff == (
        "--- a/services/report-operator/pyproject.toml\n"
        "+++ b/services/report-operator/pyproject.toml\n"
        "@@ -8,7 +8,7 @@\n"
        ' python = "^3.11"\n'
        ' kopf = "^1.36.2"\n'
        ' kubernetes = "^28.1.0"\n'
        '-aiohttp = "^3.8.6"  # the DefectDojo uploader\'s client\n'
        '+aiohttp = "^3.9.2"  # the DefectDojo uploader\'s client\n'
        ' requests = { version = "^2.31.0", extras = ["socks"] }\n'
        " \n"
        " [tool.poetry.group.dev.dependencies]\n"
    )
    assert list(result.edits) == ["services/report-operator/pyproject.toml"]  # poetry.lock untouched
    assert result.notes == [POETRY_NOTE]
    mr = render(item, result, found)
    assert (
        "### Risk notes\n- None known: the new versions are in the same release line.\n"
        "- services/report-operator/poetry.lock is not changed (fixloop cannot compute its hashes) and still pins "
        "the old versions: regenerate it on this branch before merging: \\`poetry lock --no-update\\` "
        "(Poetry 2: \\`poetry lock\\`)\n"
    ) in mr.description
    assert (
        mr.title == "Bump aiohttp 3.8.6 \u2192 3.9.2 in services/report-operator (fixes 4 advisories: 2 high, 2 medium)"
    )


def test_package_only_poetry_lock_pins_is_transitive_and_not_fixable() -> None:
    files = dict(repos.POETRY)
    files["services/report-operator/pyproject.toml"] = repos.POETRY_PYPROJECT.replace(
        'aiohttp = "^3.8.6"  # the DefectDojo uploader\'s client\n', ""
    )
    item, found = work_item(OSV, DEP, POETRY_TARGET)
    result = plan(item, found, files)
    assert isinstance(result, NotLocated)
    assert result.reason == (
        "aiohttp: a transitive dependency: services/report-operator/poetry.lock pins it at 3.8.6 and "
        "services/report-operator/pyproject.toml does not ask for it; fixloop does not regenerate lockfiles "
        "(`poetry update aiohttp` does)"
    )


def test_poetry_range_that_is_not_a_pin_is_not_fixable() -> None:
    files = dict(repos.POETRY)
    files["services/report-operator/pyproject.toml"] = repos.POETRY_PYPROJECT.replace('"^3.8.6"', '"^3.8"')
    item, found = work_item(OSV, DEP, POETRY_TARGET)
    result = plan(item, found, files)
    assert isinstance(result, NotLocated)
    assert result.reason == (
        "aiohttp: services/report-operator/pyproject.toml asks for it as '^3.8', not a pin at 3.8.6; only "
        "services/report-operator/poetry.lock pins it, and fixloop does not regenerate lockfiles "
        "(`poetry update aiohttp` does)"
    )


# ---------------------------------------------------------------- pyproject.toml (PEP 621)


def test_pep621_dependencies_and_optional_dependencies_keep_extras_markers_quotes_and_comments() -> None:
    # pip-audit names them django / twisted; the file says Django / Twisted
    result = planned(PIP_AUDIT, DEP, repos.PEP621)
    assert [op.describe() for op in result.operations] == [
        "services/payments/pyproject.toml: Django 3.2.9 -> 3.2.10",
        "services/payments/pyproject.toml: Twisted 18.9.0 -> 20.3.0rc1",
        "services/payments/pyproject.toml: aiohttp 3.6.2 -> 3.7.4",
    ]
    assert result.diff == (
        "--- a/services/payments/pyproject.toml\n"
        "+++ b/services/payments/pyproject.toml\n"
        "@@ -7,10 +7,10 @@\n"
        ' version = "1.9.1"\n'
        ' requires-python = ">=3.9"\n'
        " dependencies = [\n"
        '-    "Django==3.2.9",  # LTS line\n'
        "-    'aiohttp[speedups]>=3.6.2; python_version >= \"3.8\"',\n"
        '+    "Django==3.2.10",  # LTS line\n'
        "+    'aiohttp[speedups]>=3.7.4; python_version >= \"3.8\"',\n"
        '     "lxml==4.6.4",\n'
        " ]\n"
        " \n"
        " [project.optional-dependencies]\n"
        '-worker = ["Twisted==18.9.0", "celery>=5.2"]\n'
        '+worker = ["Twisted==20.3.0rc1", "celery>=5.2"]\n'
    )
    assert result.notes == []  # no lockfile next to it
    assert result.risks == [
        "Twisted 18.9.0 \u2192 20.3.0rc1: major version change 18 -> 20; the fixed version is a pre-release"
    ]


def test_toml_edit_touches_only_dependency_entries() -> None:
    text = (
        '[project]\nname = "p"\ndescription = """\n[tool.poetry.dependencies]\naiohttp = "3.8.6"\n"""\n'
        'dependencies = [\n  "aiohttp==3.8.6",\n]\n[tool.other]\naiohttp = "3.8.6"\n'
        '[tool.poetry.group.dev.dependencies]\naiohttp.version = "==3.8.6"\n'
    )
    edits, _ = apply(
        [BumpPythonPin(path="pyproject.toml", package="AIOHTTP", current="3.8.6", new="3.9.2")],
        {"pyproject.toml": text}.get,
    )
    assert edits["pyproject.toml"] == text.replace('"aiohttp==3.8.6"', '"aiohttp==3.9.2"').replace(
        'aiohttp.version = "==3.8.6"', 'aiohttp.version = "==3.9.2"'
    )
    with pytest.raises(PolicyViolation, match="asks for aiohttp at '3.8.6', expected '3.8.5'"):
        apply(
            [BumpPythonPin(path="pyproject.toml", package="aiohttp", current="3.8.5", new="3.9.2")],
            {"pyproject.toml": text}.get,
        )


def bumped(path: str, text: str, package: str, current: str, new: str) -> str:
    """``text`` (the file ``path``) with the pin of ``package`` moved from ``current`` to ``new``."""
    edits, _ = apply([BumpPythonPin(path=path, package=package, current=current, new=new)], {path: text}.get)
    return edits[path]


def test_toml_edits_keep_inline_tables_dotted_keys_literal_strings_crlf_and_split_tables() -> None:
    """tomlkit writes back everything but the pins' strings: an inline table's other keys and spacing, a dotted
    key, single quotes, CRLF line ends, a table defined after its sub-tables, comments and blank lines."""
    text = (
        "[tool.poetry.group.dev.dependencies]\r\n"
        "aiohttp.version = '==3.8.6'   # dotted key, literal string\r\n"
        "\r\n"
        "[tool.poetry]\r\n"
        'name = "op"\r\n'
        "[tool.poetry.dependencies]\r\n"
        'python = "^3.11"\r\n'
        'aiohttp = { version = "^3.8.6", extras = ["speedups"] }  # inline table\r\n'
        'kopf = "^1.36.2"\r\n'
    )
    assert bumped("pyproject.toml", text, "aiohttp", "3.8.6", "3.9.2") == text.replace("3.8.6", "3.9.2")
    pipfile = '[packages]\nrequests = {version = "==2.25.1", extras = ["socks"]}\n"Django" = "==3.2.9"\n'
    assert bumped("Pipfile", pipfile, "django", "3.2.9", "3.2.10") == pipfile.replace("3.2.9", "3.2.10")


def test_toml_pin_written_with_escapes_is_not_edited() -> None:
    text = '[project]\ndependencies = ["aiohttp\\u003d=3.8.6", "lxml==4.6.4"]\n'  # "aiohttp==3.8.6", escaped
    assert [p.name for p in toml_pins(text, "pyproject.toml")] == ["lxml"]
    with pytest.raises(PolicyViolation, match="does not pin aiohttp"):
        bumped("pyproject.toml", text, "aiohttp", "3.8.6", "3.9.2")


@given(st.lists(st.sampled_from(TOML_LINES), max_size=14), st.text(max_size=20), st.booleans())
def test_toml_pins_read_any_text_or_refuse_it(lines: list[str], noise: str, pipfile: bool) -> None:
    text = "\n".join(lines) + "\n" + noise
    path = "Pipfile" if pipfile else "pyproject.toml"
    try:
        pins = toml_pins(text, path)
    except PolicyViolation:
        return
    for pin in pins:
        if pin.version is not None:
            try:
                out = bumped(path, text, pin.name, pin.version, pin.version + "1")
            except (PolicyViolation, ValidationError):
                continue  # another entry pins it at another version; or a name the operation does not accept
            assert len(out) > len(text)


# ---------------------------------------------------------------- Pipfile + Pipfile.lock


def test_pipfile_pin_is_bumped_and_lock_only_pins_are_not_fixable_with_their_reason() -> None:
    item, found = work_item(PIP_AUDIT, DEP)
    result = plan(item, found, repos.PIPENV)
    assert isinstance(result, Plan)
    assert result.diff == (
        "--- a/services/payments/Pipfile\n"
        "+++ b/services/payments/Pipfile\n"
        "@@ -4,7 +4,7 @@\n"
        ' name = "pypi"\n'
        " \n"
        " [packages]\n"
        '-django = "==3.2.9"\n'
        '+django = "==3.2.10"\n'
        ' aiohttp = "*"\n'
        ' lxml = {version = "==4.6.4", markers = "platform_python_implementation == \'CPython\'"}\n'
        ' scrapy = "==2.5.1"  # brings Twisted\n'
    )
    assert [(n.package, n.reason) for n in result.not_fixable] == [
        (
            "aiohttp",
            "services/payments/Pipfile asks for it as '*', not a pin at 3.6.2; only services/payments/Pipfile.lock "
            "pins it, and fixloop does not regenerate lockfiles (`pipenv lock` does)",
        ),
        (
            "twisted",
            "a transitive dependency: services/payments/Pipfile.lock pins it at 18.9.0 and services/payments/Pipfile "
            "does not ask for it; fixloop does not regenerate lockfiles (`pipenv lock` does)",
        ),
    ]
    assert result.notes == [
        "services/payments/Pipfile.lock is not changed (fixloop cannot compute its hashes) and still pins the old "
        "versions: regenerate it on this branch before merging: `pipenv lock`"
    ]
    description = render(item, result, found).description
    assert "regenerate it on this branch before merging: \\`pipenv lock\\`\n" in description
    assert "- `twisted`: a transitive dependency: services/payments/Pipfile.lock pins it at 18.9.0" in description


# ---------------------------------------------------------------- pom.xml


def test_maven_versions_and_properties_are_bumped_and_transitive_ones_explained() -> None:
    result = planned(MYFRAMEWORK, DEP, repos.MYFRAMEWORK)
    assert [op.describe() for op in result.operations] == [
        "services/myframework/pom.xml: com.thoughtworks.xstream:xstream 1.4.14 -> 1.4.15",
        "services/myframework/pom.xml: org.apache.santuario:xmlsec 2.1.1 -> 2.1.4",
        "services/myframework/pom.xml: org.jboss.resteasy:resteasy-client 3.1.1.Final -> 4.5.8.SP1 "
        "(property resteasy.version)",
        "services/myframework/pom.xml: org.owasp.esapi:esapi 2.1.0 -> 2.1.0.1 (property esapi.version)",
        "services/myframework/pom.xml: org.testng:testng 6.13.1 -> 7.0.0-beta4",
        "services/myframework/pom.xml: org.webjars:bootstrap 3.3.7 -> 3.4.1",
    ]
    # the commented-out xstream 1.4.14 and the testng dependency without a version are left alone
    assert result.diff == (
        "--- a/services/myframework/pom.xml\n"
        "+++ b/services/myframework/pom.xml\n"
        "@@ -10,8 +10,8 @@\n"
        " \n"
        "   <properties>\n"
        "     <maven.compiler.release>11</maven.compiler.release>\n"
        "-    <resteasy.version>3.1.1.Final</resteasy.version>\n"
        "-    <esapi.version>2.1.0</esapi.version>\n"
        "+    <resteasy.version>4.5.8.SP1</resteasy.version>\n"
        "+    <esapi.version>2.1.0.1</esapi.version>\n"
        "   </properties>\n"
        " \n"
        "   <dependencyManagement>\n"
        "@@ -19,7 +19,7 @@\n"
        "       <dependency>\n"
        "         <groupId>org.testng</groupId>\n"
        "         <artifactId>testng</artifactId>\n"
        "-        <version>6.13.1</version>\n"
        "+        <version>7.0.0-beta4</version>\n"
        "       </dependency>\n"
        "     </dependencies>\n"
        "   </dependencyManagement>\n"
        "@@ -35,12 +35,12 @@\n"
        "     <dependency>\n"
        "       <groupId>com.thoughtworks.xstream</groupId>\n"
        "       <artifactId>xstream</artifactId>\n"
        "-      <version>1.4.14</version>\n"
        "+      <version>1.4.15</version>\n"
        "     </dependency>\n"
        "     <dependency>\n"
        "       <groupId>org.apache.santuario</groupId>\n"
        "       <artifactId>xmlsec</artifactId>\n"
        "-      <version>2.1.1</version>\n"
        "+      <version>2.1.4</version>\n"
        "       <exclusions>\n"
        "         <exclusion>\n"
        "           <groupId>commons-codec</groupId>\n"
        "@@ -66,7 +66,7 @@\n"
        "     <dependency>\n"
        "       <groupId>org.webjars</groupId>\n"
        "       <artifactId>bootstrap</artifactId>\n"
        "-      <version>3.3.7</version>\n"
        "+      <version>3.4.1</version>\n"
        "     </dependency>\n"
        "     <dependency>\n"
        "       <groupId>com.mylib</groupId>\n"
    )
    assert result.risks == [
        "org.jboss.resteasy:resteasy-client 3.1.1.Final \u2192 4.5.8.SP1: major version change 3 -> 4",
        "org.jboss.resteasy:resteasy-client 3.1.1.Final \u2192 4.5.8.SP1: the property resteasy.version of "
        "services/myframework/pom.xml also sets the version of org.jboss.resteasy:resteasy-jackson2-provider; "
        "check they are released at 4.5.8.SP1",
        "org.testng:testng 6.13.1 \u2192 7.0.0-beta4: major version change 6 -> 7; the fixed version is a pre-release",
    ]
    # the report's transitive packages (its `from` paths are longer than one) are explained, not guessed
    transitive = {n.package: n.reason for n in result.not_fixable}
    assert len(transitive) == 12
    assert transitive["com.beust:jcommander"] == (
        "no pom.xml declares it: a transitive dependency at 1.72 (fixloop does not add a <dependencyManagement> "
        "override; bump the dependency that brings it in)"
    )
    assert "org.jboss.resteasy:resteasy-jaxrs" in transitive and "org.webjars:jquery" in transitive


def test_maven_all_projects_target_names_the_module_and_the_variant_is_kept() -> None:
    # Snyk --all-projects on Windows: targets "pom.xml", "project-a\\pom.xml", "project-b\\pom.xml"
    root = planned(ALL_PROJECTS, DEP, repos.ALL_PROJECTS, target="pom.xml")
    assert root.operations == [
        BumpMavenDependency(path="pom.xml", package="com.google.guava:guava", current="29.0-jre", new="30.0-jre")
    ]
    assert root.diff == (
        "--- a/pom.xml\n+++ b/pom.xml\n@@ -13,7 +13,7 @@\n"
        "     <dependency>\n       <groupId>com.google.guava</groupId>\n       <artifactId>guava</artifactId>\n"
        "-      <version>29.0-jre</version>\n+      <version>30.0-jre</version>\n"
        "     </dependency>\n   </dependencies>\n </project>\n"
    )
    module = planned(ALL_PROJECTS, DEP, repos.ALL_PROJECTS, target="project-b\\pom.xml")
    assert list(module.edits) == ["project-b/pom.xml"] and module.operations[0].new == "30.0-jre"
    item, found = work_item(ALL_PROJECTS, DEP, "project-a\\pom.xml")
    result = plan(item, found, repos.ALL_PROJECTS)
    assert isinstance(result, NotLocated)
    assert result.reason == (
        "com.google.guava:guava: fixed in several variants (30.0-android, 30.0-jre) and 22.0 names none of them; "
        "fixloop does not pick one"
    )


def test_maven_property_defined_in_the_parent_pom_is_bumped_there() -> None:
    # the parent defines the version once, for itself and the module
    files = {
        p: t.replace("<version>29.0-jre</version>", "<version>${guava.version}</version>")
        for p, t in repos.ALL_PROJECTS.items()
    }
    files["pom.xml"] = files["pom.xml"].replace(
        "  <packaging>pom</packaging>\n",
        "  <packaging>pom</packaging>\n  <properties>\n    <guava.version>29.0-jre</guava.version>\n  </properties>\n",
    )
    result = planned(ALL_PROJECTS, DEP, files, target="project-b\\pom.xml")
    assert result.operations == [
        BumpMavenDependency(
            path="pom.xml",
            package="com.google.guava:guava",
            property="guava.version",
            current="29.0-jre",
            new="30.0-jre",
        )
    ]
    assert "-    <guava.version>29.0-jre</guava.version>\n+    <guava.version>30.0-jre</guava.version>\n" in result.diff
    assert list(result.edits) == ["pom.xml"]


def test_pom_edit_is_checked() -> None:
    files = {"pom.xml": repos.ALL_PROJECTS["pom.xml"]}
    op = BumpMavenDependency(path="pom.xml", package="com.google.guava:guava", current="28.0-jre", new="30.0-jre")
    with pytest.raises(PolicyViolation, match="declares com.google.guava:guava '29.0-jre', expected '28.0-jre'"):
        apply([op], files.get)
    prop = op.model_copy(update={"property": "guava.version", "current": "29.0-jre"})
    with pytest.raises(PolicyViolation, match="pom.xml: defines no property guava.version"):
        apply([prop], files.get)
    broken = {"pom.xml": files["pom.xml"].replace("</dependencies>", "")}
    with pytest.raises(PolicyViolation, match="not well-formed XML"):
        apply([op.model_copy(update={"current": "29.0-jre"})], broken.get)


# ---------------------------------------------------------------- HelmRelease, Helm values, workload manifests


def test_helmrelease_values_tag_moves_to_the_newest_tag_of_its_line() -> None:
    item, found = redis_item()
    result = plan(item, found, repos.REDIS, tags=redis_tags)
    assert isinstance(result, Plan)
    assert result.operations == [
        SetHelmValue(
            path="apps/base/redis/helmrelease.yaml",
            key="spec.values.image.tag",
            document=1,
            current="6.0.5",
            new="6.0.16",
        )
    ]
    assert result.diff == (
        "--- a/apps/base/redis/helmrelease.yaml\n"
        "+++ b/apps/base/redis/helmrelease.yaml\n"
        "@@ -27,6 +27,6 @@\n"
        "     image:\n"
        "       registry: docker.io\n"
        "       repository: redis\n"
        "-      tag: 6.0.5  # the leader's image\n"
        "+      tag: 6.0.16  # the leader's image\n"
        "     replica:\n"
        "       replicaCount: 1\n"
    )


def test_values_file_and_kustomize_images_run_the_scanned_image() -> None:
    item, found = redis_item()
    values = plan(item, found, {"charts/redis/values.yaml": repos.REDIS_VALUES}, tags=redis_tags)
    assert isinstance(values, Plan)
    # sentinel.image is bitnami/redis-sentinel at the same tag: another image, left alone
    assert values.diff == (
        "--- a/charts/redis/values.yaml\n"
        "+++ b/charts/redis/values.yaml\n"
        "@@ -1,7 +1,7 @@\n"
        " # values for the redis chart, as `helm show values` printed them, trimmed\n"
        " image:\n"
        "   repository: redis\n"
        '-  tag: "6.0.5"\n'
        '+  tag: "6.0.16"\n'
        "   pullPolicy: IfNotPresent\n"
        " sentinel:\n"
        "   image:\n"
    )
    kustomize = plan(item, found, {"apps/redis/kustomization.yaml": repos.REDIS_KUSTOMIZATION}, tags=redis_tags)
    assert isinstance(kustomize, Plan)
    assert kustomize.operations == [
        BumpWorkloadImage(path="apps/redis/kustomization.yaml", image="docker.io/redis", current="6.0.5", new="6.0.16")
    ]
    assert kustomize.diff == (
        "--- a/apps/redis/kustomization.yaml\n"
        "+++ b/apps/redis/kustomization.yaml\n"
        "@@ -4,4 +4,4 @@\n"
        "   - https://github.com/GoogleCloudPlatform/kubernetes-engine-samples/guestbook?ref=main\n"
        " images:\n"
        "   - name: docker.io/redis\n"
        "-    newTag: 6.0.5\n"
        "+    newTag: 6.0.16\n"
    )
    deployment = repos.REDIS_FOLLOWER.replace("gcr.io/google_samples/gb-redis-follower:v2", "redis:6.0.5")
    direct = plan(item, found, {"apps/base/redis/deployment.yaml": deployment}, tags=redis_tags)
    assert isinstance(direct, Plan)
    assert direct.diff == (
        "--- a/apps/base/redis/deployment.yaml\n"
        "+++ b/apps/base/redis/deployment.yaml\n"
        "@@ -15,6 +15,6 @@\n"
        "     spec:\n"
        "       containers:\n"
        "         - name: follower\n"
        "-          image: redis:6.0.5\n"
        "+          image: redis:6.0.16\n"
        "           ports:\n"
        "             - containerPort: 6379\n"
    )


def test_image_without_a_newer_tag_in_its_line_or_not_run_here_is_not_fixable() -> None:
    item, found = redis_item("gcr.io/google_samples/gb-redis-follower:v2")
    result = plan(item, found, repos.REDIS, tags=lambda repository: ["v1", "v2", "v3", "latest"])
    assert isinstance(result, NotLocated)
    assert result.reason == (
        "gcr.io/google_samples/gb-redis-follower: the registry lists no newer tag of "
        "gcr.io/google_samples/gb-redis-follower:v2 in the same line and variant"
    )
    nowhere = plan(item, found, {"apps/base/redis/helmrelease.yaml": repos.REDIS_HELMRELEASE}, tags=redis_tags)
    assert isinstance(nowhere, NotLocated)
    assert nowhere.reason.endswith(
        "; no manifest or Helm values fixloop may change runs gcr.io/google_samples/gb-redis-follower:v2"
    )


@pytest.mark.parametrize(
    ("report", "kind", "target", "files"),
    [
        (OSV, DEP, POETRY_TARGET, repos.POETRY),
        (PIP_AUDIT, DEP, None, repos.PIPENV),
        (MYFRAMEWORK, DEP, None, repos.MYFRAMEWORK),
        (K8S, OS, None, repos.REDIS),
    ],
)
def test_replanning_gives_byte_identical_output(
    report: str, kind: WorkItemKind, target: str | None, files: dict[str, str]
) -> None:
    found = signals(report)
    items = [w for w in triage_rules(found).work_items if w.kind is kind and (target is None or w.target == target)]
    item = next(w for w in items if kind is DEP or w.artifact == "docker.io/redis:6.0.5")
    first = plan(item, found, files, tags=redis_tags)
    again = plan(item, list(reversed(found)), dict(reversed(list(files.items()))), tags=redis_tags)
    assert isinstance(first, Plan) and first.model_dump_json() == again.model_dump_json()


# ---------------------------------------------------------------- traversal and injection, per format


def test_python_manifests_traversal_target_and_denied_copies_stay_untouched() -> None:
    files = {
        **repos.POETRY,
        ".gitlab-ci.yml": 'aiohttp = "^3.8.6"\n',
        "services/report-operator/scripts/pyproject.toml": repos.POETRY_PYPROJECT,  # a denied directory
    }
    item, found = work_item(OSV, DEP, POETRY_TARGET)
    hostile = [evil(s, target="../../.gitlab-ci.yml") for s in found if s.fingerprint in item.signals]
    item = item.model_copy(update={"signals": [s.fingerprint for s in hostile], "target": "../../.gitlab-ci.yml"})
    result = plan(item, hostile, files)
    assert isinstance(result, Plan) and list(result.edits) == ["services/report-operator/pyproject.toml"]


@pytest.mark.parametrize("name", ['aiohttp"\n[tool.poetry.scripts]\nx = "evil:main', "../../aiohttp", "aiohttp;reboot"])
def test_python_package_name_that_tries_to_reach_other_text_is_not_located(name: str) -> None:
    item, found = work_item(OSV, DEP, POETRY_TARGET)
    hostile = [evil(s, package=name) for s in found if s.fingerprint in item.signals]
    result = plan(item.model_copy(update={"signals": [s.fingerprint for s in hostile]}), hostile, repos.POETRY)
    assert isinstance(result, NotLocated)
    assert "\n" not in result.reason and result.reason.endswith("no file fixloop may change pins it at 3.8.6")


@pytest.mark.parametrize("value", [SHELL, '3.9.2"\n[tool.poetry.scripts]\nx = "evil:main', "3.9.2 ; rm -rf /"])
def test_python_fixed_version_with_metacharacters_is_never_written(value: str) -> None:
    item, found = work_item(PIP_AUDIT, DEP)
    hostile = [evil(s, fixed_version=value, fixed_versions=[value]) for s in found if s.fingerprint in item.signals]
    item = item.model_copy(update={"signals": [s.fingerprint for s in hostile]})
    result = plan(item, hostile, repos.PIPENV)
    assert isinstance(result, NotLocated)
    assert "django: no fixed version above 3.2.9 fixes every advisory" in result.reason
    with pytest.raises(ValidationError, match="pattern"):
        BumpPythonPin(path="services/payments/Pipfile", package="django", current="3.2.9", new=value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (
            "1.4.15</version><scope>system</scope><version>",
            "the fixed version '1.4.15</version><scope>system</scope><version>' is not a version fixloop can write",
        ),
        ("1.4.15; rm -rf /", "the fixed version '1.4.15; rm -rf /' is not a version fixloop can write"),
        (SHELL, "no fixed version above 1.4.14 fixes every advisory"),
    ],
)
def test_maven_fixed_version_with_markup_or_metacharacters_is_never_written(value: str, reason: str) -> None:
    item, found = work_item(MYFRAMEWORK, DEP)
    hostile = [
        evil(s, fixed_version=value, fixed_versions=[value]) if s.package == "com.thoughtworks.xstream:xstream" else s
        for s in found
        if s.fingerprint in item.signals
    ]
    item = item.model_copy(update={"signals": [s.fingerprint for s in hostile]})
    result = plan(item, hostile, repos.MYFRAMEWORK)
    assert isinstance(result, Plan)
    assert {n.package: n.reason for n in result.not_fixable}["com.thoughtworks.xstream:xstream"] == reason
    assert "xstream" not in result.diff


def test_maven_traversal_names_and_entities_are_refused_with_their_reason() -> None:
    item, found = work_item(ALL_PROJECTS, DEP, "pom.xml")
    hostile = [evil(s, target="..\\..\\.gitlab-ci.yml") for s in found if s.fingerprint in item.signals]
    item = item.model_copy(update={"signals": [s.fingerprint for s in hostile], "target": "..\\..\\.gitlab-ci.yml"})
    ambiguous = plan(item, hostile, repos.ALL_PROJECTS)
    assert isinstance(ambiguous, NotLocated)  # the traversal target narrows nothing: pom.xml and project-b/pom.xml
    assert ambiguous.reason.endswith("in several files (pom.xml, project-b/pom.xml); the scan does not say which")
    renamed = [evil(s, package="../../pom.xml:guava") for s in hostile]
    item = item.model_copy(update={"signals": [s.fingerprint for s in renamed]})
    result = plan(item, renamed, repos.ALL_PROJECTS)
    assert isinstance(result, NotLocated)  # a name, never a path: it matches no <dependency>
    assert result.reason.startswith("../../pom.xml:guava: no pom.xml declares it: a transitive dependency at 29.0-jre")
    xxe = repos.ALL_PROJECTS["pom.xml"].replace(
        "<project", '<!DOCTYPE project [<!ENTITY v SYSTEM "file:///etc/passwd">]>\n<project', 1
    )
    op = BumpMavenDependency(path="pom.xml", package="com.google.guava:guava", current="29.0-jre", new="30.0-jre")
    with pytest.raises(PolicyViolation, match="pom.xml: declares a DOCTYPE or entities; refusing to read it"):
        apply([op], {"pom.xml": xxe}.get)
    with pytest.raises(PolicyViolation, match="declares a DOCTYPE"):
        check_parses("pom.xml", xxe)
    with pytest.raises(ValidationError, match="pattern"):
        BumpMavenDependency(
            path="pom.xml", package="com.google.guava:guava", property="v}</x><y>", current="1", new="2"
        )
    with pytest.raises(ValidationError, match="pattern"):
        BumpMavenDependency(path="pom.xml", package="../../etc:passwd", current="1", new="2")
    with pytest.raises(ValidationError, match="not normalised"):
        BumpMavenDependency(path="services/../pom.xml", package="a:b", current="1", new="2")


@pytest.mark.parametrize(
    "artifact", ["docker.io/redis:6.0.5$(reboot)", "docker.io/redis:6.0.5\nimage: evil", "../../redis:6.0.5"]
)
def test_helm_artifact_with_metacharacters_or_traversal_locates_nothing(artifact: str) -> None:
    item, found = redis_item()
    hostile = [evil(s, artifact=artifact) for s in found if s.fingerprint in item.signals]
    item = item.model_copy(update={"signals": [s.fingerprint for s in hostile], "artifact": artifact})
    result = plan(item, hostile, repos.REDIS, tags=redis_tags)
    assert isinstance(result, NotLocated)  # not an image reference: no manifest is even searched for it
    assert result.reason == (
        "no Dockerfile fixloop may change has a FROM on debian 10.4: the image is probably built on another base "
        "image (rebuild it on a patched one) or its Dockerfile is not in this repository"
    )


def test_helm_values_in_denied_files_and_hostile_registry_tags_are_ignored() -> None:
    files = {
        **repos.REDIS,
        "deploy/scripts/values.yaml": repos.REDIS_VALUES,  # scripts: never changed
        ".github/workflows/values.yaml": repos.REDIS_VALUES,
    }
    item, found = redis_item()
    hostile_tags = ["6.0.99;reboot", "6.0.17\nimage: evil", "6.0.18 # x", "../6.0.19", *repos.REDIS_TAGS]
    result = plan(item, found, files, tags=lambda repository: hostile_tags)
    assert isinstance(result, Plan)
    assert list(result.edits) == ["apps/base/redis/helmrelease.yaml"] and result.operations[0].new == "6.0.16"
    with pytest.raises(ValidationError, match="pattern"):
        SetHelmValue(path="charts/redis/values.yaml", key="image.tag\nevil", current="6.0.5", new="6.0.16")
    with pytest.raises(ValidationError, match="pattern"):
        SetHelmValue(path="charts/redis/values.yaml", key="image.tag", current="6.0.5", new="6.0.16 # $(reboot)")
    with pytest.raises(PolicyViolation, match="not on the policy allow-list"):
        validate({"deploy/scripts/values.yaml": repos.REDIS_VALUES}, files.get, Policy())


def test_default_policy_allows_the_new_manifests() -> None:
    default = Policy()
    for path in ("svc/Pipfile", "svc/Pipfile.lock", "svc/pyproject.toml", "svc/poetry.lock", "a/b/pom.xml"):
        assert default.allows(path), path
    check_parses("svc/Pipfile", repos.PIPFILE)
    with pytest.raises(PolicyViolation, match="does not parse after the change"):
        check_parses("svc/Pipfile", repos.PIPFILE + "[packages\n")


def test_requirements_and_pyproject_of_one_service_move_together_and_uv_lock_gets_its_note() -> None:
    files = {p: t for p, t in SEED.items() if p != "fixloop.yaml"}  # the default policy: pyproject.toml allowed
    files.update(repos.PEP621)
    files[f"{repos.PAYMENTS}/uv.lock"] = (
        'version = 1\nrequires-python = ">=3.9"\n\n[[package]]\nname = "django"\nversion = "3.2.9"\n'
        'source = { registry = "https://pypi.org/simple" }\n'
    )
    result = planned(PIP_AUDIT, DEP, files)
    assert sorted(result.edits) == ["services/payments/pyproject.toml", "services/payments/requirements.txt"]
    assert "-Django==3.2.9\n+Django==3.2.10\n" in result.diff
    assert '-    "Django==3.2.9",  # LTS line\n' in result.diff
    assert result.notes == [
        "services/payments/uv.lock is not changed (fixloop cannot compute its hashes) and still pins the old "
        "versions: regenerate it on this branch before merging: `uv lock`"
    ]


@pytest.mark.parametrize(
    ("installed", "fixed", "advisories", "variants"),
    [
        ("22.0", "30.0-android", [["30.0-android", "30.0-jre"]], ["30.0-android", "30.0-jre"]),
        ("29.0-jre", "30.0-jre", [["30.0-android", "30.0-jre"]], []),
        ("29.0-jre", "30.0-android", [["30.0-android"]], ["30.0-android"]),  # another variant, not a fix of this one
        ("6.13.1", "7.0.0-beta4", [["7.0.0-beta4"]], []),  # a maturity, not a variant
        ("3.1.1.Final", "4.5.8.SP1", [["4.5.8.SP1"]], []),
    ],
)
def test_maven_variants_are_not_guessed(
    installed: str, fixed: str, advisories: list[list[str]], variants: list[str]
) -> None:
    assert required_version("maven", installed, advisories) == fixed
    assert maven_variants(installed, fixed, advisories) == variants


def test_an_image_the_repository_builds_is_rebuilt_not_redeployed_at_a_newer_tag() -> None:
    # the catalog image at 1.4.2 (apps/staging pins it), scanned on alpine 3.9.2: services/catalog/Dockerfile is
    # already on 3.9.4, so there is no FROM to bump; a newer registry tag of catalog is no fix fixloop deploys
    base = signals("trivy/trivy-head_alpine-39.json")
    artifact = "registry.sandbox.local/shop/catalog:1.4.2"
    found = [evil(s, artifact=artifact, target=f"{artifact} (alpine 3.9.2)") for s in base]
    (item,) = [w for w in triage_rules(found).work_items if w.kind is OS]
    catalog_tags = {"registry.sandbox.local/shop/catalog": ["1.4.2", "1.4.3", "1.5.0"]}
    result = plan(item, found, SEED, tags=lambda repository: catalog_tags.get(repository, []))
    assert isinstance(result, NotLocated)
    assert result.reason == (
        "no Dockerfile fixloop may change has a FROM on alpine 3.9.2: the image is probably built on another base "
        "image (rebuild it on a patched one) or its Dockerfile is not in this repository"
    )
    elsewhere = {p: t for p, t in SEED.items() if p != "services/catalog/Dockerfile"}  # built elsewhere: deploy it
    both = plan(item, found, elsewhere, tags=lambda repository: catalog_tags.get(repository, []))
    assert isinstance(both, NotLocated)
    assert both.reason.endswith(
        "; several manifests run registry.sandbox.local/shop/catalog:1.4.2 (apps/production/kustomization.yaml, "
        "apps/staging/kustomization.yaml); the scan does not say which"
    )
    del elsewhere["apps/production/kustomization.yaml"]
    deployed = plan(item, found, elsewhere, tags=lambda repository: catalog_tags.get(repository, []))
    assert isinstance(deployed, Plan)
    assert deployed.operations == [
        BumpWorkloadImage(
            path="apps/staging/kustomization.yaml",
            image="registry.sandbox.local/shop/catalog",
            current="1.4.2",
            new="1.4.3",
        )
    ]


def test_mr_text_of_maven_and_helm_changes_names_them_and_lists_the_findings() -> None:
    root = planned(ALL_PROJECTS, DEP, repos.ALL_PROJECTS, target="pom.xml")
    item, found = work_item(ALL_PROJECTS, DEP, "pom.xml")
    mr = render(item, root, found)
    assert mr.title.startswith("Breaking: Bump com.google.guava:guava 29.0-jre \u2192 30.0-jre (fixes ")  # a new major
    assert mr.description.startswith(
        "> **Breaking:** `com.google.guava:guava` `29.0-jre` \u2192 `30.0-jre` is a major jump (the advisories name no "
        "release line between them; no release list was read: not looked up): read its release notes before "
        "approving.\n\nfixloop work item "
    )
    assert "| `com.google.guava:guava` | `29.0-jre` \u2192 `30.0-jre` |" in mr.description
    redis, redis_found = redis_item()
    helm = plan(redis, redis_found, repos.REDIS, tags=redis_tags)
    assert isinstance(helm, Plan)
    text = render(redis, helm, redis_found)
    assert text.title.startswith("Bump spec.values.image.tag image 6.0.5 \u2192 6.0.16 in apps/base/redis (fixes ")
    rows = [line for line in text.description.splitlines() if line.startswith("| ") and "\u2192" in line]
    assert len(rows) > 1  # the new image closes the old image's OS findings
