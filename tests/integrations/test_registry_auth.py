"""The registry token flow offline: the WWW-Authenticate parser (Docker Hub's recorded challenge, GHCR's and the
GitLab registry's shapes, RFC 9110's example, garbage), the flow against the recorded Docker Hub exchange, the
docker config.json credentials."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.integrations.errors import AuthError, IntegrationError
from fixloop.integrations.registry import (
    ChallengeError,
    CredentialsError,
    DockerConfig,
    RegistryClient,
    RegistrySettings,
    parse_challenges,
    path_scope,
    registry_host,
)

RECORDED = Path(__file__).parents[1] / "fixtures" / "recorded" / "registry"
CHALLENGE = json.loads((RECORDED / "distribution-docs_dockerhub_401-bearer-challenge_transcribed.json").read_text())
TOKEN = json.loads((RECORDED / "distribution-docs_dockerhub_token-endpoint-response_transcribed.json").read_text())


def test_docker_hub_recorded_challenge() -> None:
    [c] = parse_challenges(CHALLENGE["headers"]["Www-Authenticate"])
    assert c.scheme == "bearer"
    assert (c.realm, c.service) == ("https://auth.docker.io/token", "registry.docker.io")
    assert c.scopes == ("repository:samalba/my-app:pull,push",)


def test_ghcr_gitlab_and_rfc_shapes() -> None:
    # GHCR (docs.github.com "Working with the Container registry"): realm on ghcr.io itself
    [ghcr] = parse_challenges('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/app:pull"')
    assert (ghcr.realm, ghcr.service, ghcr.scopes) == ("https://ghcr.io/token", "ghcr.io", ("repository:o/app:pull",))
    # the GitLab registry (docs.gitlab.com container registry, token auth at /jwt/auth), with an error param
    [gl] = parse_challenges(
        'Bearer realm="https://gitlab.com/jwt/auth", service="container_registry", '
        'scope="repository:group/project:pull", error="insufficient_scope"'
    )
    assert (gl.realm, gl.service, gl.params["error"]) == (
        "https://gitlab.com/jwt/auth",
        "container_registry",
        "insufficient_scope",
    )
    # several scopes: space-separated in one parameter, or repeated
    [many] = parse_challenges('Bearer realm="r",scope="repository:a:pull repository:b:pull",scope=registry:catalog:*')
    assert many.scopes == ("repository:a:pull", "repository:b:pull", "registry:catalog:*")
    # RFC 9110 section 11.6.1's example: two challenges in one value, an escaped quote, a token value
    rfc = parse_challenges('Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"')
    assert [(c.scheme, c.params) for c in rfc] == [
        ("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        ("basic", {"realm": "simple"}),
    ]
    [t68] = parse_challenges("Negotiate a87421000492aa874209af8bc028==")
    assert (t68.scheme, t68.token68) == ("negotiate", "a87421000492aa874209af8bc028==")
    assert [c.scheme for c in parse_challenges(["Basic realm=x", "Bearer realm=y"])] == ["basic", "bearer"]


@pytest.mark.parametrize(
    "garbage", ['Bearer realm="unterminated', 'Bearer realm="a" "b"', "=x", "Bearer \x00", 'Bearer realm="x" junk']
)
def test_garbage_is_a_challenge_error(garbage: str) -> None:
    with pytest.raises(ChallengeError):
        parse_challenges(garbage)


def test_an_oversized_header_is_refused() -> None:
    with pytest.raises(ChallengeError, match="over 8192 bytes"):
        parse_challenges("Bearer " + ",".join(f'p{i}="{"x" * 20}"' for i in range(400)))


@given(st.text(max_size=300))
def test_parser_never_raises_anything_but_a_challenge_error(text: str) -> None:
    try:
        challenges = parse_challenges(text)
    except ChallengeError:
        return
    assert all(c.scheme and c.scheme == c.scheme.lower() for c in challenges)


@given(st.lists(st.from_regex(r"[a-z0-9/:,._*-]{1,30}", fullmatch=True), min_size=1, max_size=5))
def test_any_scopes_round_trip(scopes: list[str]) -> None:
    header = 'Bearer realm="https://auth.example/token",' + ",".join(f'scope="{s}"' for s in scopes)
    [c] = parse_challenges(header)
    assert c.scopes == tuple(scopes)


def test_path_scope_and_hosts() -> None:
    assert path_scope("/v2/library/alpine/tags/list") == "repository:library/alpine:pull"
    assert path_scope("/registry/v2/shop/catalog/manifests/1.4.2") == "repository:shop/catalog:pull"
    assert path_scope("/v2/") == ""
    assert registry_host("https://index.docker.io/v1/") == registry_host("registry-1.docker.io") == "docker.io"
    assert registry_host("https://Registry.GitLab.com") == "registry.gitlab.com"
    assert registry_host("127.0.0.1:5000") == "127.0.0.1:5000"


# -- the recorded Docker Hub exchange ---------------------------------------------------------------------------
class DockerHub:
    """registry-1.docker.io answering the recorded 401 until the recorded token is sent; auth.docker.io answering
    the recorded token response."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []  # (host, Authorization) as sent (a retry reuses the request)
        self.accounts: list[str | None] = []  # the token requests' account parameter

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.host, request.headers.get("Authorization")))
        if request.url.host == "auth.docker.io":
            recorded = httpx.URL(TOKEN["request"].removeprefix("GET "))  # the same URL, percent-encoding aside
            assert request.url.copy_with(query=None) == recorded.copy_with(query=None)
            sent = request.url.params.multi_items()
            assert [kv for kv in sent if kv[0] != "account"] == recorded.params.multi_items()
            self.accounts.append(request.url.params.get("account"))
            return httpx.Response(TOKEN["status"], headers=TOKEN["headers"], json=TOKEN["body"])
        if request.headers.get("Authorization") == f"Bearer {TOKEN['body']['token']}":
            return httpx.Response(200, json={"name": "samalba/my-app", "tags": ["1.0", "latest"]})
        return httpx.Response(CHALLENGE["status"], headers=CHALLENGE["headers"], json=CHALLENGE["body"])


def test_the_recorded_docker_hub_flow() -> None:
    hub = DockerHub()
    settings = RegistrySettings(_env_file=None, url="https://registry-1.docker.io")  # type: ignore[call-arg]
    with RegistryClient(settings, transport=httpx.MockTransport(hub)) as client:
        assert client.tags("samalba/my-app") == ["1.0", "latest"]
        assert hub.seen == [
            ("registry-1.docker.io", None),
            ("auth.docker.io", None),  # anonymous: no credentials configured
            ("registry-1.docker.io", "Bearer REDACTED"),
        ]
        hub.seen.clear()
        client.tags("samalba/my-app")  # the challenge's scope is cached for the path's: one request
        assert hub.seen == [("registry-1.docker.io", "Bearer REDACTED")]


def test_basic_credentials_go_to_the_token_service_only() -> None:
    hub = DockerHub()
    settings = RegistrySettings(
        _env_file=None, url="https://registry-1.docker.io", username="fixloop", password="s3cret-pat"
    )  # type: ignore[call-arg]
    with RegistryClient(settings, transport=httpx.MockTransport(hub)) as client:
        client.tags("samalba/my-app")
    assert hub.seen == [
        ("registry-1.docker.io", None),
        ("auth.docker.io", "Basic " + base64.b64encode(b"fixloop:s3cret-pat").decode()),
        ("registry-1.docker.io", "Bearer REDACTED"),
    ]
    assert hub.accounts == ["fixloop"]


def _answering(token_status: int, token_body: object, realm: str = "https://auth.docker.io/token"):
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(token_status, json=token_body)
        header = CHALLENGE["headers"]["Www-Authenticate"].replace("https://auth.docker.io/token", realm)
        return httpx.Response(401, headers={"WWW-Authenticate": header}, json=CHALLENGE["body"])

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, {"details": "incorrect username or password"}, AuthError, "refused the credentials"),
        (200, {"nothing": 1}, IntegrationError, "answered no token"),
        (200, {"token": "t", "expires_in": "soon"}, IntegrationError, "answered no token"),
        (503, {}, IntegrationError, "HTTP 503"),
    ],
)
def test_token_service_failures_are_named(status: int, body: object, error: type[Exception], text: str) -> None:
    settings = RegistrySettings(_env_file=None, url="https://registry-1.docker.io", username="u", password="pw-secret")  # type: ignore[call-arg]
    with RegistryClient(settings, transport=_answering(status, body)) as client:
        with pytest.raises(error, match=text) as info:
            client.tags("samalba/my-app")
    assert "pw-secret" not in str(info.value)


def test_a_plain_http_realm_of_an_https_registry_is_refused() -> None:
    settings = RegistrySettings(_env_file=None, url="https://registry-1.docker.io", username="u", password="p")  # type: ignore[call-arg]
    with RegistryClient(settings, transport=_answering(200, {}, realm="http://evil.example/token")) as client:
        with pytest.raises(ChallengeError, match="plain http"):
            client.check()


def test_still_401_after_the_token_is_an_auth_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.docker.io":
            return httpx.Response(200, json=TOKEN["body"])
        return httpx.Response(401, headers=CHALLENGE["headers"], json=CHALLENGE["body"])

    settings = RegistrySettings(_env_file=None, url="https://registry-1.docker.io")  # type: ignore[call-arg]
    with RegistryClient(settings, transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(AuthError, match="UNAUTHORIZED"):
            client.tags("samalba/my-app")


# -- docker config.json ---------------------------------------------------------------------------------------------
def _config(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def test_docker_config_entries(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hubuser:hub:pass").decode()},
                "ghcr.io": {"username": "octo", "password": "ghp_x"},
                "registry.gitlab.com": {"identitytoken": "refresh-1"},
                "quay.io": {},
            },
            "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"},
            "credsStore": "desktop",
        },
    )
    config = DockerConfig(path)
    hub = config.credential("registry-1.docker.io")
    assert hub is not None and hub.username == "hubuser" and hub.password is not None
    assert hub.password.get_secret_value() == "hub:pass"  # only the first colon splits
    ghcr = config.credential("https://ghcr.io")
    assert ghcr is not None and ghcr.username == "octo"
    gitlab = config.credential("registry.gitlab.com")
    assert gitlab is not None and gitlab.identity_token is not None and gitlab.password is None
    assert config.credential("registry.example.com") is None  # no entry: anonymous
    with pytest.raises(CredentialsError, match="docker-credential-ecr-login"):
        config.credential("123.dkr.ecr.eu-west-1.amazonaws.com")
    with pytest.raises(CredentialsError, match="docker-credential-desktop"):
        config.credential("quay.io")
    assert "ghp_x" not in repr(ghcr) and "hub:pass" not in repr(hub)


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("{not json", "not JSON"),
        ("[]", "not a JSON object"),
        (json.dumps({"auths": {"h": {"auth": "%%%"}}}), "not base64"),
        (json.dumps({"auths": {"h": {"auth": base64.b64encode(b"nocolon").decode()}}}), "not user:password"),
    ],
)
def test_unusable_docker_configs_are_named(tmp_path: Path, content: str, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(CredentialsError, match=text):
        DockerConfig(path)
    with pytest.raises(CredentialsError, match="FileNotFoundError"):
        DockerConfig(tmp_path / "missing.json")


def test_settings_pair_username_and_password() -> None:
    with pytest.raises(ValueError, match="go together"):
        RegistrySettings(_env_file=None, url="https://ghcr.io", username="octo")  # type: ignore[call-arg]
