"""The registry stand-in (OCI distribution tag listing) and fixloop's registry client."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from fixloop.integrations.errors import Invalid, NotFound
from fixloop.integrations.registry import RegistryClient, RegistrySettings
from fixloop.sandbox.registry import TAGS
from tests.sandbox.conftest import Running


@pytest.fixture
def reg(start_sandbox: Callable[..., Running]) -> Running:
    return start_sandbox("/registry")


def test_version_check_and_full_listing(reg: Running) -> None:
    base = reg.service("/registry")
    root = httpx.get(f"{base}/v2/", timeout=5)
    assert (root.status_code, root.json()) == (200, {})
    assert root.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    full = httpx.get(f"{base}/v2/library/debian/tags/list", timeout=5).json()
    assert full["name"] == "library/debian" and full["tags"] == sorted(full["tags"])
    assert {"buster", "buster-20190910", "buster-slim", "10", "10.1", "10.13", "bullseye", "bookworm"} <= set(
        full["tags"]
    )
    alpine = set(TAGS["library/alpine"])
    assert {"3.8.5", "3.9", "3.9.0", "3.9.6", "3.10.9", "3.20.3", "latest", "edge"} <= alpine


def test_pagination_follows_the_spec(reg: Running) -> None:
    base = reg.service("/registry")
    page = httpx.get(f"{base}/v2/library/alpine/tags/list", params={"n": 3, "last": "3.9.4"}, timeout=5)
    assert page.json() == {"name": "library/alpine", "tags": ["3.9.5", "3.9.6", "edge"]}
    assert page.headers["Link"] == '</registry/v2/library/alpine/tags/list?n=3&last=edge>; rel="next"'
    end = httpx.get(f"{base}/v2/library/alpine/tags/list", params={"n": 3, "last": "3.9.6"}, timeout=5)
    assert end.json()["tags"] == ["edge", "latest"] and "Link" not in end.headers


def test_client_reads_every_page(reg: Running) -> None:
    with RegistryClient(RegistrySettings(url=reg.service("/registry"), timeout=5)) as client:
        client.check()
        python = client.tags("library/python")
        assert len(python) > 100 * 4  # five pages of 100
        assert python == sorted(set(TAGS["library/python"]))
        assert client.tags("golang") == sorted(set(TAGS["library/golang"]))  # Docker Hub's library/ prefix
        assert "3.11.9-slim" in python and "1.22.9-alpine" in client.tags("library/golang")


def test_unknown_and_invalid_names(reg: Running) -> None:
    base = reg.service("/registry")
    missing = httpx.get(f"{base}/v2/acme/nothing/tags/list", timeout=5)
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
    with RegistryClient(RegistrySettings(url=base, timeout=5)) as client:
        with pytest.raises(NotFound, match="NAME_UNKNOWN"):
            client.tags("acme/nothing")
        with pytest.raises(Invalid, match="NAME_INVALID"):
            client.tags("library/Alpine")
    bad_n = httpx.get(f"{base}/v2/library/alpine/tags/list", params={"n": "x"}, timeout=5)
    assert bad_n.status_code == 400 and bad_n.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
