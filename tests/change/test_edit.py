"""Edits keep everything but the value they change, and refuse a file that does not hold the expected value."""

from __future__ import annotations

import json

import pytest

from fixloop.core.change.edit import apply
from fixloop.core.change.ops import (
    BumpBaseImage,
    BumpGoModule,
    BumpNpmPackage,
    BumpPythonPin,
    BumpWorkloadImage,
    Operation,
    PolicyViolation,
    SetHelmValue,
)
from fixloop.core.change.policy import unified_diff
from tests.change.helpers import SEED


def edited(files: dict[str, str], *ops: Operation) -> tuple[str, list[str]]:
    edits, notes = apply(ops, files.get)
    return unified_diff(files.get, edits), notes


def test_from_line_keeps_platform_and_stage_name() -> None:
    files = {
        "Dockerfile": "# syntax=docker/dockerfile:1\n"
        "FROM --platform=$BUILDPLATFORM node:14.17-alpine AS build\n"
        "RUN npm ci\n"
        "from node:14.17-alpine\r\n"
    }
    diff, _ = edited(
        files,
        BumpBaseImage(path="Dockerfile", stage=0, current="node:14.17-alpine", new="node:14.21-alpine"),
        BumpBaseImage(path="Dockerfile", stage=1, current="node:14.17-alpine", new="node:14.21-alpine"),
    )
    assert diff == (
        "--- a/Dockerfile\n+++ b/Dockerfile\n@@ -1,4 +1,4 @@\n # syntax=docker/dockerfile:1\n"
        "-FROM --platform=$BUILDPLATFORM node:14.17-alpine AS build\n"
        "+FROM --platform=$BUILDPLATFORM node:14.21-alpine AS build\n"
        " RUN npm ci\n-from node:14.17-alpine\r\n+from node:14.21-alpine\r\n"
    )


def test_from_line_that_moved_on_is_refused() -> None:
    op = BumpBaseImage(path="services/catalog/Dockerfile", stage=0, current="alpine:3.9.5", new="alpine:3.9.6")
    with pytest.raises(PolicyViolation, match="stage 0 is FROM 'alpine:3.9.4', expected 'alpine:3.9.5'"):
        apply([op], SEED.get)


def test_requirements_pin_keeps_case_extras_markers_and_comments() -> None:
    files = {
        "requirements-prod.txt": "# pinned\n"
        "Django[argon2] == 3.2.9 ; python_version >= '3.8'  # web framework\n"
        "django-environ==0.4.5\n"
    }
    diff, _ = edited(
        files, BumpPythonPin(path="requirements-prod.txt", package="django", current="3.2.9", new="3.2.10")
    )
    assert diff == (
        "--- a/requirements-prod.txt\n+++ b/requirements-prod.txt\n@@ -1,3 +1,3 @@\n # pinned\n"
        "-Django[argon2] == 3.2.9 ; python_version >= '3.8'  # web framework\n"
        "+Django[argon2] == 3.2.10 ; python_version >= '3.8'  # web framework\n"
        " django-environ==0.4.5\n"
    )


def test_hash_pinned_requirement_is_refused() -> None:
    files = {"requirements.txt": "Werkzeug==0.11 \\\n    --hash=sha256:abc\n"}
    with pytest.raises(PolicyViolation, match="pinned with hashes"):
        apply([BumpPythonPin(path="requirements.txt", package="werkzeug", current="0.11", new="0.15.3")], files.get)


def test_go_mod_single_line_require_and_replace_block_left_alone() -> None:
    files = {
        "go.mod": "module example.com/m\n\ngo 1.21\n\n"
        "require golang.org/x/text v0.3.6 // indirect\n\n"
        "replace (\n\tgolang.org/x/text v0.3.6 => ../text\n)\n"
    }
    diff, _ = edited(files, BumpGoModule(path="go.mod", module="golang.org/x/text", current="v0.3.6", new="v0.3.7"))
    assert diff == (
        "--- a/go.mod\n+++ b/go.mod\n@@ -2,7 +2,7 @@\n \n go 1.21\n \n"
        "-require golang.org/x/text v0.3.6 // indirect\n"
        "+require golang.org/x/text v0.3.7 // indirect\n"
        " \n replace (\n \tgolang.org/x/text v0.3.6 => ../text\n"
    )


LOCK_V3 = {
    "name": "web",
    "lockfileVersion": 3,
    "requires": True,
    "packages": {
        "": {"name": "web", "dependencies": {"jquery": "^3.3.9", "widget": "1.0.0"}},
        "node_modules/jquery": {
            "version": "3.3.9",
            "resolved": "https://npm.example.com/jquery/-/jquery-3.3.9.tgz",
            "integrity": "sha512-AAAA",
        },
        "node_modules/widget/node_modules/jquery": {"version": "2.2.4", "integrity": "sha512-BBBB"},
    },
}


def test_lockfile_v3_drops_the_stale_integrity_and_says_so() -> None:
    lock = json.dumps(LOCK_V3, indent=2) + "\n"
    manifest = '{\n    "name": "web",\n    "dependencies": {\n        "jquery": "^3.3.9"\n    }\n}'
    files = {"web/package-lock.json": lock, "web/package.json": manifest}
    op = BumpNpmPackage(
        path="web/package.json", lockfile="web/package-lock.json", package="jquery", current="3.3.9", new="3.4.0"
    )
    edits, notes = apply([op], files.get)
    assert edits["web/package.json"] == manifest.replace("^3.3.9", "^3.4.0")  # 4 spaces, no trailing newline
    after = json.loads(edits["web/package-lock.json"])
    assert after["packages"]["node_modules/jquery"] == {
        "version": "3.4.0",
        "resolved": "https://npm.example.com/jquery/-/jquery-3.4.0.tgz",
    }
    assert after["packages"]["node_modules/widget/node_modules/jquery"]["version"] == "2.2.4"  # another version
    assert after["packages"][""]["dependencies"]["jquery"] == "^3.4.0"
    assert notes == [
        "web/package-lock.json: the integrity hash of jquery was removed (the old one is wrong for 3.4.0); "
        "`npm install --package-lock-only` restores it"
    ]


def test_json_not_laid_out_as_npm_writes_it_is_refused() -> None:
    files = {"package.json": '{"dependencies": {"jquery": "3.3.9"}}\n'}
    op = BumpNpmPackage(path="package.json", package="jquery", current="3.3.9", new="3.4.0")
    with pytest.raises(PolicyViolation, match="not laid out as npm writes it"):
        apply([op], files.get)


def test_kustomization_tag_and_deployment_image_keep_quotes_and_comments() -> None:
    diff, _ = edited(
        SEED,
        BumpWorkloadImage(
            path="apps/staging/kustomization.yaml",
            image="registry.sandbox.local/shop/catalog",
            current="1.4.2",
            new="1.10",
        ),
        BumpWorkloadImage(
            path="apps/base/catalog/deployment.yaml",
            image="registry.sandbox.local/shop/catalog",
            current="latest",
            new="1.4.3",
        ),
    )
    assert diff == (
        "--- a/apps/base/catalog/deployment.yaml\n+++ b/apps/base/catalog/deployment.yaml\n@@ -23,7 +23,7 @@\n"
        "         runAsNonRoot: true\n       containers:\n         - name: catalog\n"
        "-          image: registry.sandbox.local/shop/catalog:latest  # the tag is set per environment (apps/<env>)\n"
        "+          image: registry.sandbox.local/shop/catalog:1.4.3  # the tag is set per environment (apps/<env>)\n"
        "           ports:\n             - name: http\n               containerPort: 8080\n"
        "--- a/apps/staging/kustomization.yaml\n+++ b/apps/staging/kustomization.yaml\n@@ -9,7 +9,7 @@\n"
        "   - ../base/inventory\n images:\n   - name: registry.sandbox.local/shop/catalog\n"
        '-    newTag: "1.4.2"\n+    newTag: "1.10"\n'
        "   - name: registry.sandbox.local/shop/legacy-api\n"
        '     newTag: "2.0.7"\n   - name: registry.sandbox.local/shop/storefront\n'
    )


def test_helm_value_plain_scalar_that_would_read_as_a_number_is_quoted() -> None:
    files = {"charts/web/values.yaml": "image:\n  repository: nginx  # upstream\n  tag: 1.25.3\nreplicas: 2\n"}
    diff, _ = edited(files, SetHelmValue(path="charts/web/values.yaml", key="image.tag", current="1.25.3", new="1.30"))
    assert diff.endswith('-  tag: 1.25.3\n+  tag: "1.30"\n replicas: 2\n')
    with pytest.raises(PolicyViolation, match="image.tag is '1.25.3', expected '1.24.0'"):
        apply([SetHelmValue(path="charts/web/values.yaml", key="image.tag", current="1.24.0", new="1.30")], files.get)


def test_missing_file_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="services/nope/go.mod: no such file"):
        apply([BumpGoModule(path="services/nope/go.mod", module="a.b/c", current="v1.0.0", new="v1.0.1")], SEED.get)
