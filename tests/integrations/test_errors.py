"""The one exception translator (``fixloop.integrations.errors.map_exceptions``): the most specific mapped class wins,
whatever the mapping's order; unmapped exceptions (ours included) pass unchanged; the library's exception is not
chained, so what it holds (a request with its headers) is not in the traceback."""

from __future__ import annotations

import httpx
import pytest
import requests

from fixloop.integrations.errors import (
    AuthError,
    HttpStatusError,
    IntegrationError,
    NotFound,
    TransportError,
    answer_error,
    by_status,
    map_exceptions,
    transport_error,
)

SECRET = "Bearer glpat-not-in-any-message"


def _requests_errors() -> dict:
    # the general class first: the lookup must still find requests' JSONDecodeError (a RequestException too)
    return {
        requests.exceptions.RequestException: transport_error("jira"),
        requests.exceptions.JSONDecodeError: answer_error("jira", "the answer is not JSON"),
    }


def test_the_most_specific_class_wins_whatever_the_order() -> None:
    with pytest.raises(IntegrationError) as caught, map_exceptions(_requests_errors(), "myself"):
        requests.Response().json()  # an empty body: requests' own JSONDecodeError
    assert type(caught.value) is IntegrationError and not caught.value.retryable
    assert str(caught.value) == "jira: myself: the answer is not JSON"


def test_a_real_transport_failure_keeps_only_the_class_and_is_not_chained() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused while sending {request.headers['authorization']}", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse), headers={"Authorization": SECRET})
    mapping = {httpx.TransportError: transport_error("registry")}
    with pytest.raises(TransportError) as caught, map_exceptions(mapping, "GET /v2/"):
        client.get("https://registry.example/v2/")
    assert str(caught.value) == "registry: GET /v2/: ConnectError" and caught.value.retryable
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert SECRET not in str(caught.value)


class _LibraryError(Exception):
    def __init__(self, status: int | None, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


@pytest.mark.parametrize(
    ("status", "cls", "message", "retryable"),
    [
        (401, AuthError, "gitlab: HTTP 401: user: 401 Unauthorized", False),
        (404, NotFound, "gitlab: HTTP 404: user: 404 Not Found", False),
        (503, HttpStatusError, "gitlab: HTTP 503: user: 503 Service Unavailable", True),
        (None, IntegrationError, "gitlab: user: no answer parsed", False),
    ],
)
def test_by_status_maps_the_library_status(status: int | None, cls: type, message: str, retryable: bool) -> None:
    mapping = {_LibraryError: by_status("gitlab", lambda e: e.status, lambda e: e.text)}
    with pytest.raises(cls) as caught, map_exceptions(mapping, "user"):
        raise _LibraryError(status, message.rpartition(": ")[2])
    assert type(caught.value) is cls and str(caught.value) == message and caught.value.retryable is retryable


def test_unmapped_exceptions_and_our_own_pass_unchanged() -> None:
    ours = NotFound("gitlab", 404, "branch")
    with pytest.raises(NotFound) as caught, map_exceptions(_requests_errors(), "x"):
        raise ours
    assert caught.value is ours
    with pytest.raises(KeyError), map_exceptions(_requests_errors(), "x"):
        raise KeyError("a bug, not the library")
