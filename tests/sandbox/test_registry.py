"""The registry stand-in (OCI distribution API behind the token flow) and fixloop's registry client over HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fixloop.integrations.errors import AuthError, Invalid, NotFound
from fixloop.integrations.registry import (
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    RegistryClient,
    RegistrySettings,
    parse_challenges,
)
from fixloop.sandbox.registry import SERVICE, TAGS, TOKEN_TTL
from tests.sandbox.conftest import Clock, Running


def settings(reg: Running, **extra: Any) -> RegistrySettings:
    return RegistrySettings(_env_file=None, url=reg.service("/registry"), timeout=5, **extra)  # type: ignore[call-arg]


def pull(base: str, name: str | None = None) -> dict[str, str]:
    """The headers of an anonymous pull token for ``name`` (the token flow by hand)."""
    params = {"service": SERVICE} | ({"scope": f"repository:{name}:pull"} if name else {})
    token = httpx.get(f"{base}/token", params=params, timeout=5).json()["token"]
    return {"Authorization": f"Bearer {token}"}


class Recording(httpx.HTTPTransport):
    """The real transport, noting ``(method, path, status)`` of every exchange."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append((request.method, request.url.path.removeprefix("/registry"), response.status_code))
        return response


@pytest.fixture
def reg(start_sandbox: Callable[..., Running]) -> Running:
    return start_sandbox("/registry")


def test_version_check_and_full_listing(reg: Running) -> None:
    base = reg.service("/registry")
    root = httpx.get(f"{base}/v2/", headers=pull(base), timeout=5)
    assert (root.status_code, root.json()) == (200, {})
    assert root.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    full = httpx.get(f"{base}/v2/library/debian/tags/list", headers=pull(base, "library/debian"), timeout=5).json()
    assert full["name"] == "library/debian" and full["tags"] == sorted(full["tags"])
    assert {"buster", "buster-20190910", "buster-slim", "10", "10.1", "10.13", "bullseye", "bookworm"} <= set(
        full["tags"]
    )
    alpine = set(TAGS["library/alpine"])
    assert {"3.8.5", "3.9", "3.9.0", "3.9.6", "3.10.9", "3.20.3", "latest", "edge"} <= alpine


def test_pagination_follows_the_spec(reg: Running) -> None:
    base = reg.service("/registry")
    auth = pull(base, "library/alpine")
    page = httpx.get(f"{base}/v2/library/alpine/tags/list", params={"n": 3, "last": "3.9.4"}, headers=auth, timeout=5)
    assert page.json() == {"name": "library/alpine", "tags": ["3.9.5", "3.9.6", "edge"]}
    assert page.headers["Link"] == '</registry/v2/library/alpine/tags/list?n=3&last=edge>; rel="next"'
    end = httpx.get(f"{base}/v2/library/alpine/tags/list", params={"n": 3, "last": "3.9.6"}, headers=auth, timeout=5)
    assert end.json()["tags"] == ["edge", "latest"] and "Link" not in end.headers


def test_client_reads_every_page(reg: Running) -> None:
    with RegistryClient(settings(reg)) as client:
        client.check()
        python = client.tags("library/python")
        assert len(python) > 100 * 4  # five pages of 100
        assert python == sorted(set(TAGS["library/python"]))
        assert client.tags("golang") == sorted(set(TAGS["library/golang"]))  # Docker Hub's library/ prefix
        assert "3.11.9-slim" in python and "1.22.9-alpine" in client.tags("library/golang")


def test_unknown_and_invalid_names(reg: Running) -> None:
    base = reg.service("/registry")
    missing = httpx.get(f"{base}/v2/acme/nothing/tags/list", headers=pull(base, "acme/nothing"), timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {
        "errors": [
            {
                "code": "NAME_UNKNOWN",
                "message": "repository name not known to registry",
                "detail": {"name": "acme/nothing"},
            }
        ]
    }
    with RegistryClient(settings(reg)) as client:
        with pytest.raises(NotFound, match="NAME_UNKNOWN"):
            client.tags("acme/nothing")
        with pytest.raises(Invalid, match="NAME_INVALID"):
            client.tags("library/Alpine")
    auth = pull(base, "library/alpine")
    bad_n = httpx.get(f"{base}/v2/library/alpine/tags/list", params={"n": "x"}, headers=auth, timeout=5)
    assert bad_n.status_code == 400 and bad_n.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


# -- the token flow -------------------------------------------------------------------------------------------------
def test_401_with_a_challenge_then_a_token_then_200(reg: Running) -> None:
    base = reg.service("/registry")
    first = httpx.get(f"{base}/v2/library/alpine/tags/list", timeout=5)
    assert first.status_code == 401 and first.json()["errors"][0]["code"] == "UNAUTHORIZED"
    [challenge] = parse_challenges(first.headers["WWW-Authenticate"])
    assert (challenge.scheme, challenge.realm, challenge.service) == ("bearer", f"{base}/token", SERVICE)
    assert challenge.scopes == ("repository:library/alpine:pull",)
    token = httpx.get(challenge.realm or "", params={"service": SERVICE, "scope": challenge.scopes}, timeout=5)
    body = token.json()
    assert body["expires_in"] == TOKEN_TTL and body["token"] == body["access_token"]
    again = httpx.get(f"{base}/v2/library/alpine/tags/list", headers={"Authorization": f"Bearer {body['token']}"})
    assert again.status_code == 200 and "3.9.6" in again.json()["tags"]
    other = httpx.get(f"{base}/v2/library/debian/tags/list", headers={"Authorization": f"Bearer {body['token']}"})
    assert other.status_code == 401  # the token's scope is alpine's only
    assert 'scope="repository:library/debian:pull"' in other.headers["WWW-Authenticate"]
    root = httpx.get(f"{base}/v2/", timeout=5)
    assert root.status_code == 401 and "scope" not in root.headers["WWW-Authenticate"]


def test_the_client_fetches_once_and_reuses_the_token(reg: Running) -> None:
    rec = Recording()
    with RegistryClient(settings(reg), transport=rec) as client:
        assert len(client.tags("library/debian")) < 100  # one page
        client.tags("library/debian")
    assert rec.seen == [
        ("GET", "/v2/library/debian/tags/list", 401),
        ("GET", "/token", 200),
        ("GET", "/v2/library/debian/tags/list", 200),
        ("GET", "/v2/library/debian/tags/list", 200),  # the cached token, sent up front
    ]


def test_an_expired_token_is_fetched_again(start_sandbox: Callable[..., Running]) -> None:
    sandbox_clock = Clock(datetime(2025, 1, 1, tzinfo=UTC))
    reg = start_sandbox("/registry", clock=sandbox_clock)
    now = [1000.0]
    rec = Recording()
    with RegistryClient(settings(reg), transport=rec, clock=lambda: now[0]) as client:
        client.check()
        now[0] += TOKEN_TTL + 1  # the client's clock says the token expired: it is not sent
        client.check()
        assert rec.seen[3:] == [("GET", "/v2/", 401), ("GET", "/token", 200), ("GET", "/v2/", 200)]
        rec.seen.clear()
        sandbox_clock.now += timedelta(seconds=TOKEN_TTL + 1)  # the registry's says so first: one retry
        client.check()
        assert rec.seen == [("GET", "/v2/", 401), ("GET", "/token", 200), ("GET", "/v2/", 200)]


def test_credentials_from_settings_and_wrong_ones(start_sandbox: Callable[..., Running]) -> None:
    reg = start_sandbox("/registry", registry_anonymous=False)
    c = reg.sb.credentials
    with RegistryClient(settings(reg, username=c.registry_username, password=c.registry_password)) as client:
        assert "3.9.6" in client.tags("alpine")
    with RegistryClient(settings(reg, username=c.registry_username, password="wrong-pass")) as client:
        with pytest.raises(AuthError, match="refused the credentials") as wrong:
            client.tags("alpine")
    assert "wrong-pass" not in str(wrong.value) and wrong.value.retryable is False
    with RegistryClient(settings(reg)) as client:  # anonymous, and this registry wants credentials
        with pytest.raises(AuthError, match="refused the credentials"):
            client.check()


def test_credentials_per_host_from_a_docker_config(start_sandbox: Callable[..., Running], tmp_path: Path) -> None:
    import base64

    reg = start_sandbox("/registry", registry_anonymous=False)
    c = reg.sb.credentials
    host = reg.url.removeprefix("http://")
    auth = base64.b64encode(f"{c.registry_username}:{c.registry_password.get_secret_value()}".encode()).decode()
    basic = tmp_path / "basic.json"
    basic.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "eDp5"}, f"http://{host}": {"auth": auth}}}))
    with RegistryClient(settings(reg, docker_config=basic)) as client:
        assert client.digest("alpine", "3.9.6").startswith("sha256:")
    refresh = tmp_path / "refresh.json"  # docker's identitytoken: the OAuth2 refresh-token grant (POST)
    refresh.write_text(json.dumps({"auths": {host: {"identitytoken": c.registry_identity_token.get_secret_value()}}}))
    rec = Recording()
    with RegistryClient(settings(reg, docker_config=refresh), transport=rec) as client:
        assert client.tags("library/node")
    assert ("POST", "/token", 200) in rec.seen
    refresh.write_text(json.dumps({"auths": {host: {"identitytoken": "rt-revoked"}}}))
    with RegistryClient(settings(reg, docker_config=refresh)) as client:
        with pytest.raises(AuthError, match="refused the credentials"):
            client.check()


def test_digests(reg: Running) -> None:
    base = reg.service("/registry")
    with RegistryClient(settings(reg)) as client:
        digest = client.digest("alpine", "3.9.6")
        assert digest == client.digest("library/alpine", "3.9.6") != client.digest("alpine", "3.9.5")
        with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
            client.digest("alpine", "9.9.9")
        with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
            client.digest("acme/nothing", "1.0")
    auth = pull(base, "library/alpine")
    oci = httpx.get(f"{base}/v2/library/alpine/manifests/3.9.6", headers=auth | {"Accept": OCI_INDEX})
    assert oci.headers["Content-Type"] == OCI_INDEX and oci.headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(oci.content).hexdigest() == digest
    assert [m["platform"]["architecture"] for m in oci.json()["manifests"]] == ["amd64", "arm64"]
    by_digest = httpx.get(f"{base}/v2/library/alpine/manifests/{digest}", headers=auth)
    assert by_digest.content == oci.content
    head = httpx.head(f"{base}/v2/library/alpine/manifests/3.9.6", headers=auth | {"Accept": OCI_INDEX})
    assert head.content == b"" and head.headers["Docker-Content-Digest"] == digest
    docker = httpx.get(f"{base}/v2/library/alpine/manifests/3.9.6", headers=auth | {"Accept": DOCKER_MANIFEST_LIST})
    assert docker.headers["Content-Type"] == DOCKER_MANIFEST_LIST and docker.headers["Docker-Content-Digest"] != digest
    neither = httpx.get(f"{base}/v2/library/alpine/manifests/3.9.6", headers=auth | {"Accept": "application/json"})
    assert neither.status_code == 404 and neither.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_a_pushed_tag_serves_its_manifest_with_the_recorded_digest(start_sandbox: Callable[..., Running]) -> None:
    """A tag the CI stand-in pushed (here the seeded catalog 1.4.2, pushed when the GitLab stand-in starts): HEAD and
    GET by tag and by digest answer the OCI image manifest whose sha256 is the digest ``push_tag`` recorded, so the
    registry client's ``digest()`` works for it."""
    from fixloop.sandbox.registry import OCI_MANIFEST, registry_store

    run = start_sandbox("/gitlab", "/registry", clock=Clock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC)))
    record = registry_store(run.sb).data["pushed"]["shop/catalog"]["1.4.2"]
    head = run.sb.repos.branches("platform/gitops")["main"]
    assert record["source"] == head  # built from the seed commit
    with RegistryClient(settings(run)) as client:
        assert client.digest("shop/catalog", "1.4.2") == record["digest"]
        with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
            client.digest("shop/catalog", "9.9.9")
    base = run.service("/registry")
    auth = pull(base, "shop/catalog")
    got = httpx.get(f"{base}/v2/shop/catalog/manifests/1.4.2", headers=auth | {"Accept": OCI_MANIFEST})
    assert (
        got.headers["Docker-Content-Digest"] == record["digest"] == "sha256:" + hashlib.sha256(got.content).hexdigest()
    )
    assert got.headers["Content-Type"] == OCI_MANIFEST
    body = got.json()
    assert body["mediaType"] == OCI_MANIFEST and body["annotations"]["org.opencontainers.image.revision"] == head
    by_digest = httpx.get(
        f"{base}/v2/shop/catalog/manifests/{record['digest']}", headers=auth | {"Accept": OCI_MANIFEST}
    )
    assert by_digest.content == got.content
    headed = httpx.head(f"{base}/v2/shop/catalog/manifests/1.4.2", headers=auth | {"Accept": OCI_MANIFEST})
    assert headed.content == b"" and headed.headers["Docker-Content-Digest"] == record["digest"]
    index_only = httpx.get(f"{base}/v2/shop/catalog/manifests/1.4.2", headers=auth | {"Accept": OCI_INDEX})
    assert index_only.status_code == 404 and index_only.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


@hsettings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_pushed_reads_any_reference_without_raising(tmp_path_factory: pytest.TempPathFactory, ref: str) -> None:
    """``pushed`` (what the Flux stand-in asks for every rendered image): any text is a record or None, never an
    error; only an exact ``registry.sandbox.local/<name>:<tag>`` (a digest suffix dropped) finds one."""
    from fixloop.sandbox.registry import push_tag, pushed
    from fixloop.sandbox.store import JsonStore

    store = JsonStore(tmp_path_factory.mktemp("reg") / "registry.json")
    with store.lock:
        store.data.setdefault("pushed", {})
    when = datetime(2026, 1, 1, tzinfo=UTC)
    digest = push_tag(store, "registry.sandbox.local/shop/catalog", "1.4.3", when, source="a" * 40)
    assert pushed(store, ref) is None or ref.partition("@")[0] == "registry.sandbox.local/shop/catalog:1.4.3"
    found = pushed(store, "registry.sandbox.local/shop/catalog:1.4.3@sha256:" + "0" * 64)
    assert found is not None and found["digest"] == digest and found["source"] == "a" * 40
    assert pushed(store, "docker.io/shop/catalog:1.4.3") is None and pushed(store, "registry.sandbox.local/x") is None
