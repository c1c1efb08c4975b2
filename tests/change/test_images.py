"""The image chain of fixloop.yaml: its validation (errors name the key), which image a change builds, the next tag
by rule, and the in-place newTag edit of an environment's Kustomization."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.core.change.images import (
    Environment,
    ImageChain,
    ImageChainError,
    current_tag,
    next_tag,
    set_tag,
)
from fixloop.core.change.locate import MappingRepo
from fixloop.core.change.ops import PolicyViolation
from fixloop.core.change.plan import policy_of
from fixloop.core.change.policy import load_policy
from tests.change.helpers import SEED

CHAIN = policy_of(MappingRepo(SEED)).chain
CATALOG = "registry.sandbox.local/shop/catalog"
STAGING = SEED["apps/staging/kustomization.yaml"]


def test_the_seeded_chain_names_five_images_and_two_environments_in_order() -> None:
    assert [s.name for s in CHAIN.images] == ["catalog", "inventory", "legacy-api", "payments", "storefront"]
    catalog = CHAIN.image("catalog")
    assert catalog is not None and catalog.source == "services/catalog" and catalog.image == CATALOG
    assert (catalog.tag, catalog.delivery) == ("semver-patch", "merge-request")
    assert [(e.name, e.kustomization, e.flux) for e in CHAIN.environments] == [
        ("staging", "apps/staging/kustomization.yaml", "flux-system/apps-staging"),
        ("production", "apps/production/kustomization.yaml", "flux-system/apps-production"),
    ]
    for spec in CHAIN.images:  # every declared image is in every environment's Kustomization
        for env in CHAIN.environments:
            assert current_tag(SEED[env.kustomization], env, spec.image) is not None, (spec.name, env.name)


def test_without_the_sections_there_is_no_image_and_one_production_environment() -> None:
    chain = load_policy("limits: {max_files: 3}\n").chain
    assert chain.images == () and chain.image_for_paths(["services/catalog/Dockerfile"]) == ()
    assert [(e.name, e.kustomization) for e in chain.environments] == [
        ("production", "apps/production/kustomization.yaml")
    ]


@pytest.mark.parametrize(
    ("paths", "built"),
    [
        (["services/catalog/Dockerfile"], ["catalog"]),
        (["services/payments/requirements.txt", "services/storefront/package-lock.json"], ["payments", "storefront"]),
        (["services/catalog/src/deep/main.go"], ["catalog"]),
        (["apps/staging/kustomization.yaml"], []),  # a manifest change skips the build
        (["apps/base/catalog/deployment.yaml", "fixloop.yaml"], []),
        (["services/catalogue/Dockerfile", "services/catalog"], []),  # a sibling prefix; the folder itself
        ([], []),
    ],
)
def test_image_for_paths_is_the_images_whose_source_folder_holds_a_path(paths: list[str], built: list[str]) -> None:
    assert [s.name for s in CHAIN.image_for_paths(paths)] == built


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images: [catalog]", "images: must be a mapping"),
        ("images: {catalog: services/catalog}", "images.catalog: must be a mapping"),
        ("images: {Catalog: {source: s, image: r.io/a}}", "images.Catalog: the name must be a DNS label"),
        ("images: {catalog: {image: r.io/a}}", "images.catalog.source: Field required"),
        ("images: {catalog: {source: ../x, image: r.io/a}}", "images.catalog.source: ../x: the path is not normal"),
        ("images: {catalog: {source: s, image: r.io/a:1.0}}", "images.catalog.image: 'r.io/a:1.0' is not a repo"),
        ("images: {catalog: {source: s, image: R.io/A}}", "images.catalog.image:"),
        ("images: {catalog: {source: s, image: r.io/a, tag: latest}}", "images.catalog.tag: Input should be"),
        ("images: {catalog: {source: s, image: r.io/a, delivery: push}}", "images.catalog.delivery: Input should"),
        ("images: {catalog: {source: s, image: r.io/a, tags: sha}}", "images.catalog.tags: Extra inputs"),
        ("images: {a: {source: s, image: r.io/a}, b: {source: s/b, image: r.io/b}}", "images.b.source: s/b is inside"),
        ("images: {a: {source: s, image: r.io/a}, b: {source: t, image: r.io/a}}", "images.b.image: r.io/a is also"),
        ("environments: staging", "environments: must be a list"),
        ("environments: []", "environments: Tuple should have at least 1 item"),
        ("environments: [staging, staging]", "environments: staging is listed twice"),
        ("environments: [{name: qa, kustomization: /etc/k.yaml}]", "environments[0].kustomization: /etc/k.yaml: abs"),
        ("environments: [{name: qa, flux: apps-qa}]", "environments[0].flux: String should match"),
        ("environments: [{name: qa, cluster: x}]", "environments[0].cluster: Extra inputs"),
    ],
)
def test_an_invalid_chain_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(PolicyViolation, match="^fixloop.yaml: is not a valid policy") as e:
        load_policy(text)
    assert message in str(e.value), str(e.value)


def test_environments_as_mappings_keep_their_paths() -> None:
    chain = ImageChain.from_policy(
        {"web": {"source": "web", "image": "ghcr.io/acme/web", "tag": "sha", "delivery": "flux-image-automation"}},
        ["qa", {"name": "prod", "kustomization": "clusters/prod/apps/kustomization.yaml", "flux": "flux-system/prod"}],
    )
    assert [(e.kustomization, e.flux) for e in chain.environments] == [
        ("apps/qa/kustomization.yaml", "flux-system/apps-qa"),
        ("clusters/prod/apps/kustomization.yaml", "flux-system/prod"),
    ]
    assert chain.environment("prod") is chain.environments[1] and chain.environment("dev") is None
    assert chain.images[0].delivery == "flux-image-automation"


# -- the next tag -------------------------------------------------------------------------------------------------
NUMBER = st.integers(min_value=0, max_value=10**8)


@given(major=NUMBER, minor=NUMBER, patch=NUMBER, v=st.sampled_from(["", "v"]))
def test_semver_patch_adds_one_to_the_patch_and_keeps_the_rest(major: int, minor: int, patch: int, v: str) -> None:
    new = next_tag("semver-patch", f"{v}{major}.{minor}.{patch}")
    assert new == f"{v}{major}.{minor}.{patch + 1}"
    assert next_tag("semver-patch", new) == f"{v}{major}.{minor}.{patch + 2}"  # a tag it makes is a valid current


@given(st.text(max_size=30))
def test_semver_patch_refuses_what_is_not_major_minor_patch(current: str) -> None:
    if re.fullmatch(r"v?(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})", current):
        assert next_tag("semver-patch", current).count(".") == 2
    else:
        with pytest.raises(ImageChainError, match="semver-patch: the current tag .* is not MAJOR.MINOR.PATCH"):
            next_tag("semver-patch", current)


@pytest.mark.parametrize("current", ["1.4", "1.4.2-rc.1", "1.4.2+build", "01.4.2", "latest", " 1.4.2", "1.4.2\n"])
def test_semver_patch_refuses_partial_prerelease_and_padded_versions(current: str) -> None:
    with pytest.raises(ImageChainError, match="semver-patch"):
        next_tag("semver-patch", current)
    with pytest.raises(ImageChainError, match="semver-patch: no current tag"):
        next_tag("semver-patch", None)


@given(st.text(alphabet="0123456789abcdef", min_size=40, max_size=40))
def test_sha_is_the_short_sha_of_a_full_commit(sha: str) -> None:
    assert next_tag("sha", sha=sha) == sha[:8]


@pytest.mark.parametrize("sha", [None, "abc1234", "A" * 40, "g" * 40, "a" * 41])
def test_sha_refuses_what_is_not_a_full_commit_sha(sha: str | None) -> None:
    with pytest.raises(ImageChainError, match="^sha: "):
        next_tag("sha", sha=sha)


@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True))
def test_pipeline_takes_any_oci_tag_the_pipeline_reports(tag: str) -> None:
    assert next_tag("pipeline", "1.0.0", sha="a" * 40, pipeline=tag) == tag


@pytest.mark.parametrize("tag", [None, "", "-x", ".x", "a b", "a:b", "x" * 129, "1.0\n"])
def test_pipeline_refuses_a_missing_or_invalid_tag(tag: str | None) -> None:
    with pytest.raises(ImageChainError, match="^pipeline: the pipeline reported"):
        next_tag("pipeline", pipeline=tag)


# -- the environment's tag ----------------------------------------------------------------------------------------
def test_set_tag_changes_only_that_images_new_tag_keeping_quotes() -> None:
    staging = CHAIN.environments[0]
    out = set_tag(STAGING, staging, CATALOG, "1.4.2", "1.4.3")
    assert out == STAGING.replace('newTag: "1.4.2"', 'newTag: "1.4.3"', 1)
    assert current_tag(out, staging, CATALOG) == "1.4.3"
    assert current_tag(out, staging, "registry.sandbox.local/shop/payments") == "1.9.1"


def test_set_tag_quotes_a_sha_tag_that_would_read_as_a_number() -> None:
    env = Environment(name="qa")
    text = "images:\n  - name: r.io/a\n    newTag: 1.0.0 # pinned\n"
    assert (
        set_tag(text, env, "r.io/a", "1.0.0", "12345678")
        == 'images:\n  - name: r.io/a\n    newTag: "12345678" # pinned\n'
    )
    assert (
        set_tag(text, env, "r.io/a", "1.0.0", "1a2b3c4d")
        == "images:\n  - name: r.io/a\n    newTag: 1a2b3c4d # pinned\n"
    )


def test_set_tag_refuses_another_current_tag_a_missing_image_and_a_bad_tag() -> None:
    staging = CHAIN.environments[0]
    with pytest.raises(PolicyViolation, match=r"apps/staging/kustomization.yaml: newTag of .*catalog is '1.4.2'"):
        set_tag(STAGING, staging, CATALOG, "1.4.1", "1.4.3")
    with pytest.raises(PolicyViolation, match="has no images: entry for registry.sandbox.local/shop/search"):
        set_tag(STAGING, staging, "registry.sandbox.local/shop/search", "1.0.0", "1.0.1")
    with pytest.raises(ImageChainError, match="is not an OCI tag"):
        set_tag(STAGING, staging, CATALOG, "1.4.2", "1.4.3\nnewTag: evil")
    assert current_tag("images: [", staging, CATALOG) is None
