"""The policy: which paths a change may touch, how big it may be, and that the result still parses."""

from __future__ import annotations

import pytest

from fixloop.core.change.locate import MappingRepo
from fixloop.core.change.ops import PolicyViolation, check_path
from fixloop.core.change.plan import policy_of
from fixloop.core.change.policy import Policy, load_policy, validate
from tests.change.helpers import SEED

SEEDED = policy_of(MappingRepo(SEED))


def test_seeded_policy_is_read() -> None:
    assert SEEDED.limits.max_files == 5 and SEEDED.limits.max_changed_lines == 200
    assert SEEDED.allows("services/payments/requirements.txt")
    assert SEEDED.allows("apps/production/kustomization.yaml")
    assert not SEEDED.allows("clusters/sandbox/apps-production.yaml")  # not on its allow-list
    assert not SEEDED.allows("services/payments/payments/server.py")


@pytest.mark.parametrize(
    "path",
    [
        ".gitlab-ci.yml",
        "services/payments/.gitlab-ci.yml",
        ".github/workflows/ci.yaml",
        "deploy/scripts/values.yaml",
        "apps/base/payments/secrets/db.yaml",
        "build.sh",
        "fixloop.yaml",
        "certs/tls.key",
        ".env",
    ],
)
def test_ci_config_scripts_and_secrets_are_never_allowed(path: str) -> None:
    permissive = Policy(allow=("**",))
    assert not permissive.allows(path)
    assert not Policy().allows(path)


def test_default_policy_allows_dockerfiles_manifests_and_lockfiles() -> None:
    default = load_policy(None)
    for path in ("Dockerfile", "svc/Dockerfile.prod", "k8s/deploy.yaml", "go.sum", "web/package-lock.json"):
        assert default.allows(path), path
    assert not default.allows("src/main.go") and not default.allows("README.md")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../../.gitlab-ci.yml", "not normalised"),
        ("services/../.gitlab-ci.yml", "not normalised"),
        ("/etc/passwd", "absolute path"),
        ("C:/x/Dockerfile", "absolute path"),
        ("services\\payments\\requirements.txt", "backslash"),
        ("Dockerfile\x00.txt", "control character"),
        (".git/config", "inside .git/"),
        ("a/.git/hooks/pre-commit", "inside .git/"),
        ("services//Dockerfile", "not normalised"),
        ("", "empty"),
    ],
)
def test_path_checks(path: str, reason: str) -> None:
    with pytest.raises(PolicyViolation, match=reason):
        check_path(path)


def test_validate_rejects_paths_size_and_unparsable_results() -> None:
    before = SEED.get
    with pytest.raises(PolicyViolation, match=r"\.gitlab-ci\.yml: not on the policy allow-list"):
        validate({".gitlab-ci.yml": "stages: []\n"}, before, SEEDED)
    many = {f"services/s{i}/Dockerfile": "FROM alpine:3.9.6\n" for i in range(6)}
    with pytest.raises(PolicyViolation, match="changes 6 files, more than the limit of 5"):
        validate(many, before, SEEDED)
    big = {"services/payments/requirements.txt": "".join(f"pkg{i}==1.0\n" for i in range(300))}
    with pytest.raises(PolicyViolation, match="lines, more than the limit of 200"):
        validate(big, before, SEEDED)
    with pytest.raises(PolicyViolation, match="package.json: does not parse after the change"):
        validate({"services/storefront/package.json": "{"}, before, SEEDED)
    with pytest.raises(PolicyViolation, match="Dockerfile: does not parse after the change .no FROM"):
        validate({"services/catalog/Dockerfile": "RUN true\n"}, before, SEEDED)
    with pytest.raises(PolicyViolation, match="kustomization.yaml: does not parse"):
        validate({"apps/staging/kustomization.yaml": "images: [\n"}, before, SEEDED)


def test_malformed_policy_is_an_error_not_a_guess() -> None:
    with pytest.raises(PolicyViolation, match="fixloop.yaml: is not a valid policy"):
        load_policy("limits: {max_files: lots}\n")
    with pytest.raises(PolicyViolation, match="fixloop.yaml: is not a valid policy"):
        load_policy("- just\n- a list\n")


def test_max_jump_is_read_and_a_wrong_value_is_named() -> None:
    assert load_policy(None).max_jump == policy_of(MappingRepo(SEED)).max_jump == "major"  # today's behaviour
    values = ("major", "minor", "patch")
    assert [load_policy(f"max_jump: {v}\n").max_jump for v in values] == list(values)
    assert load_policy("max_jump:\nallow: ['**/*.txt']\n").max_jump == "major"  # empty: the default
    for text, shown in (
        ("max_jump: mayor\n", "'mayor'"),
        ("max_jump: Minor\n", "'Minor'"),  # the values are lower case
        ("max_jump: 1\n", "1"),
        ("max_jump: [minor]\n", "a list"),
        ("max_jump: {minor: true}\n", "a mapping"),
    ):
        with pytest.raises(PolicyViolation) as raised:
            load_policy(text)
        assert str(raised.value) == (
            f"fixloop.yaml: is not a valid policy (max_jump: must be one of major, minor, patch, not {shown})"
        )
