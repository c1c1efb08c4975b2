"""The Alertmanager API v2 client offline: ``parse_alerts`` on a recorded answer
(``tests/fixtures/recorded/alertmanager``), ``matcher`` read back by Alertmanager's own unescaping rules (hypothesis),
the client against an ``httpx.MockTransport`` (the ``filter`` parameters as Alertmanager reads them, credentials,
the status mapping, the byte and count caps, no credential in a message) and ``config check``'s line."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.integrations.alertmanager import api
from fixloop.integrations.alertmanager.api import (
    MAX_ALERTS,
    AlertmanagerClient,
    AlertmanagerSettings,
    matcher,
    parse_alerts,
)
from fixloop.integrations.alertmanager.webhook import label_fingerprint
from fixloop.integrations.errors import AuthError, HttpStatusError, IntegrationError, Invalid, NotFound, TransportError
from tests.fuzz.mutate import Mutant, mutated

RECORDED = Path(__file__).parents[1] / "fixtures" / "recorded" / "alertmanager"
GROUPS = RECORDED / "karma_alertmanager-0.31.0_api-v2-alerts-groups.json"
TOKEN = "am-token-51c0de"
STATUS = {
    "cluster": {"name": "01HX", "peers": [], "status": "ready"},
    "config": {"original": "route: {}"},
    "uptime": "2026-03-11T12:48:00.000Z",
    "versionInfo": {"version": "0.31.0", "revision": "x", "branch": "HEAD"},
}


def recorded_alerts() -> list[dict[str, Any]]:
    """The ``gettableAlert`` objects of the recorded ``/api/v2/alerts/groups`` answer, as ``/api/v2/alerts``
    lists them (one flat array)."""
    return [alert for group in json.loads(GROUPS.read_bytes()) for alert in group["alerts"]]


def am_settings(**kw: Any) -> AlertmanagerSettings:
    return AlertmanagerSettings(url="https://alertmanager.example:9093", _env_file=None, **kw)


Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kw: Any) -> AlertmanagerClient:
    return AlertmanagerClient(am_settings(**kw), transport=httpx.MockTransport(handler))


# ---------------------------------------------------------------- parse_alerts on the recorded answer


def test_the_recorded_alerts() -> None:
    alerts = parse_alerts(recorded_alerts())
    assert len(alerts) == 24
    assert Counter(a.state for a in alerts) == {"active": 16, "suppressed": 8}
    first = alerts[0]
    assert first.fingerprint == "aae7a1432b5d2f1b"
    assert first.labels == {
        "alertname": "Free_Disk_Space_Too_Low",
        "cluster": "staging",
        "disk": "sda",
        "instance": "server5",
        "job": "node_exporter",
    }
    assert first.starts_at == datetime(2026, 3, 11, 12, 48, 38, 413000, tzinfo=UTC)
    assert first.ends_at == datetime(2026, 3, 11, 12, 54, 18, 427000, tzinfo=UTC)
    assert first.generator_url == "http://localhost/prometheus"
    assert first.silenced_by == [] and first.inhibited_by == []
    server7 = next(a for a in alerts if a.fingerprint == "cc58f2ac8260fb97")
    assert server7.state == "suppressed"
    assert server7.silenced_by == ["9bd58938-25fd-41c5-aba3-9bc373074484", "dcb3b5d0-9f10-4baa-977a-70073a1899bd"]


def test_api_fingerprints_are_the_webhooks_label_fingerprints() -> None:
    """The same alert is recognised in a webhook and in the API: Alertmanager's fingerprint is the one the webhook
    parser computes from the labels."""
    for alert in parse_alerts(recorded_alerts()):
        assert label_fingerprint(alert.labels) == alert.fingerprint


def test_zero_and_missing_times_are_none() -> None:
    doc = recorded_alerts()[:1]
    doc[0]["endsAt"] = "0001-01-01T00:00:00Z"
    del doc[0]["startsAt"], doc[0]["generatorURL"]
    (alert,) = parse_alerts(doc)
    assert alert.ends_at is None and alert.starts_at is None and alert.generator_url is None


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (lambda d: d[2].pop("fingerprint"), "/2/fingerprint"),
        (lambda d: d[2]["labels"].__setitem__("instance", 7), "/2/labels"),
        (lambda d: d[2]["status"].pop("state"), "/2/status/state"),
        (lambda d: d[2]["status"].__setitem__("silencedBy", "x"), "/2/status/silencedBy"),
        (lambda d: d[2]["status"].__setitem__("inhibitedBy", [1]), "/2/status/inhibitedBy"),
        (lambda d: d[2].__setitem__("startsAt", "yesterday"), "/2/startsAt"),
        (lambda d: d[2].__setitem__("endsAt", "2026-03-11T12:54:18"), "/2/endsAt"),
        (lambda d: d[2].__setitem__("generatorURL", 1), "/2/generatorURL"),
        (lambda d: d.__setitem__(3, []), "/3"),
    ],
)
def test_a_wrong_shape_names_its_json_pointer(change: Callable[[Any], None], pointer: str) -> None:
    doc = recorded_alerts()
    change(doc)
    with pytest.raises(IntegrationError, match=f"{pointer} "):
        parse_alerts(doc)
    with pytest.raises(IntegrationError, match="/ is not an array"):
        parse_alerts({"alerts": doc})


def test_alerts_are_bounded_in_count() -> None:
    one = recorded_alerts()[0]
    assert len(parse_alerts([one] * MAX_ALERTS)) == MAX_ALERTS
    with pytest.raises(IntegrationError, match="10001 alerts, over the limit of 10000"):
        parse_alerts([one] * (MAX_ALERTS + 1))


# ---------------------------------------------------------------- matcher


def go_unescape(matcher_text: str) -> tuple[str, str]:
    """``(name, value)`` of an equality matcher read as Alertmanager's ``pkg/labels/parse.go`` ``ParseMatcher``
    reads it: the regex ``^\\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\\s*(=~|=|!=|!~)\\s*((?s).*?)\\s*$``, then the value's
    leading quote dropped and its escapes undone (``\\n``, ``\\"``, ``\\\\``; any other backslash literal), an
    unescaped double quote refused unless it is the trailing one, which must be there."""
    found = re.fullmatch(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*((?s:.*?))\s*", matcher_text)
    assert found, matcher_text
    name, op, raw = found.groups()
    assert op == "="
    assert raw.startswith('"')
    raw, expect_quote, escaped, out = raw[1:], True, False, []
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(ch, "\\" + ch))
            continue
        if ch == "\\":
            if i < len(raw) - 1:
                escaped = True
                continue
            out.append("\\")
        elif ch == '"':
            assert expect_quote and i == len(raw) - 1, f"unescaped double quote in {matcher_text!r}"
            expect_quote = False
        else:
            out.append(ch)
    assert not expect_quote, f"missing trailing quote in {matcher_text!r}"
    return name, "".join(out)


def test_matcher_examples() -> None:
    assert matcher("alertname", "KubePodCrashLooping") == 'alertname="KubePodCrashLooping"'
    assert matcher("pod", 'a"b') == r'pod="a\"b"'
    assert matcher("path", "C:\\temp\\") == r'path="C:\\temp\\"'
    assert matcher("msg", "two\nlines") == r'msg="two\nlines"'
    assert matcher("_x1", "") == '_x1=""'


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a.b", "a b", "é", "a:b", 'a="x",b', "x\n"])
def test_matcher_refuses_what_is_not_a_label_name(name: str) -> None:
    with pytest.raises(ValueError, match="not a label name"):
        matcher(name, "v")


def test_matcher_refuses_a_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        matcher("a", "\ud800")


label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
tricky_values = st.text(alphabet=st.sampled_from(['"', "\\", "\n", "n", " ", "\t", ",", "}", "=", "~", "é"]))


@settings(max_examples=300, deadline=None)
@given(label_names, st.text() | tricky_values)
def test_matcher_round_trips_through_alertmanagers_unescaping(name: str, value: str) -> None:
    text = matcher(name, value)
    assert go_unescape(text) == (name, value)
    body = text[len(name) + 2 : -1]  # between the quotes
    assert re.search(r'(?<!\\)(?:\\\\)*"', body) is None, "an unescaped double quote"
    assert "\n" not in text


# ---------------------------------------------------------------- the client


def test_alerts_sends_each_matcher_as_its_own_filter_and_the_flags() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=recorded_alerts()[:3])

    with client(handler, token=TOKEN) as c:
        alerts = c.alerts({"alertname": "Host_Down", "instance": 'srv"7'}, silenced=False, inhibited=False)
    assert [a.fingerprint for a in alerts] == [a["fingerprint"] for a in recorded_alerts()[:3]]
    (request,) = seen
    assert request.method == "GET" and request.url.path == "/api/v2/alerts"
    assert request.url.params.get_list("filter") == ['alertname="Host_Down"', 'instance="srv\\"7"']
    assert [(k, v) for k, v in request.url.params.multi_items() if k != "filter"] == [
        ("active", "true"),
        ("silenced", "false"),
        ("inhibited", "false"),
        ("unprocessed", "true"),
    ]
    assert request.url.query.startswith(b"filter=alertname%3D%22Host_Down%22&filter=instance%3D%22srv%5C%227%22&")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_status_and_basic_authentication() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=STATUS)

    with client(handler, username="bot", password="pw-0c4e") as c:
        assert c.status()["versionInfo"]["version"] == "0.31.0"
    assert seen[0].url.path == "/api/v2/status"
    assert seen[0].headers["Authorization"].startswith("Basic ")


def test_a_bad_matcher_name_fails_before_any_request() -> None:
    with client(lambda r: pytest.fail("no request expected")) as c, pytest.raises(ValueError):
        c.alerts({"alert-name": "x"})


@pytest.mark.parametrize(
    ("status", "body", "error", "retryable", "reason"),
    [
        (400, b'"bad matcher format: alertname=~\\"(\\""\n', Invalid, False, 'bad matcher format: alertname=~"("'),
        (401, b"Unauthorized\n", AuthError, False, None),
        (403, b"forbidden", AuthError, False, None),
        (404, b"404 page not found", NotFound, False, None),
        (429, b"", HttpStatusError, True, None),
        (500, b'{"code": 500, "message": "storage failed"}', HttpStatusError, True, "storage failed"),
        (503, b"", HttpStatusError, True, None),
    ],
)
def test_status_mapping(status: int, body: bytes, error: type, retryable: bool, reason: str | None) -> None:
    with client(lambda r: httpx.Response(status, content=body), token=TOKEN) as c, pytest.raises(error) as e:
        c.alerts({"alertname": "X"})
    assert type(e.value) is error and e.value.status == status and e.value.retryable is retryable
    assert str(e.value).startswith(f"alertmanager: HTTP {status}: GET /api/v2/alerts")
    if reason:
        assert reason in str(e.value)


def test_no_answer_is_a_transport_error_without_the_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout(f"timed out ({request.headers['Authorization']})", request=request)

    with client(refuse, token=TOKEN) as c, pytest.raises(TransportError) as e:
        c.status()
    assert str(e.value) == "alertmanager: GET /api/v2/status: ReadTimeout" and TOKEN not in str(e.value)


def test_a_token_echoed_in_an_error_is_masked() -> None:
    echo = json.dumps({"message": f"invalid token {TOKEN}"}).encode()
    with client(lambda r: httpx.Response(401, content=echo), token=TOKEN) as c, pytest.raises(AuthError) as e:
        c.alerts({})
    assert TOKEN not in str(e.value) and "invalid token ***" in str(e.value)


def test_the_answer_is_capped_in_bytes() -> None:
    body = json.dumps(recorded_alerts()).encode()
    with client(lambda r: httpx.Response(200, content=body), max_bytes=len(body) - 1) as c:
        with pytest.raises(IntegrationError, match=f"over {len(body) - 1} bytes"):
            c.alerts({})
    with client(lambda r: httpx.Response(200, content=body), max_bytes=len(body)) as c:
        assert len(c.alerts({})) == 24


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="FIXLOOP_ALERTMANAGER_TOKEN and FIXLOOP_ALERTMANAGER_USERNAME"):
        am_settings(token=TOKEN, password="pw")
    with pytest.raises(ValueError, match="http:// or https://"):
        AlertmanagerSettings(url="file:///etc/passwd", _env_file=None)
    assert AlertmanagerSettings(url="http://am:9093/", _env_file=None).url == "http://am:9093"


# ---------------------------------------------------------------- config check


def checked(monkeypatch: pytest.MonkeyPatch, handler: Handler, **kw: Any) -> str:
    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(api, "AlertmanagerClient", lambda s: AlertmanagerClient(s, transport=transport))
    result = api.check(am_settings(**kw), timeout=2)
    return f"{result.status.value} {result.text}"


def test_check_reports_version_and_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=STATUS if request.url.path == "/api/v2/status" else [])

    text = checked(monkeypatch, handler)
    assert text == "ok https://alertmanager.example:9093 (Alertmanager 0.31.0, cluster ready, alert filters answer)"
    assert seen[1].url.params.get_list("filter") == ['alertname="fixloop-config-check"']


def test_check_failure_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    text = checked(monkeypatch, lambda r: httpx.Response(403), token=TOKEN)
    assert text.startswith("FAIL https://alertmanager.example:9093: HTTP 403: GET /api/v2/status")
    assert "check FIXLOOP_ALERTMANAGER_TOKEN or FIXLOOP_ALERTMANAGER_USERNAME/_PASSWORD" in text


# ---------------------------------------------------------------- the input boundary

RECORDED_DOCS = {"alerts": recorded_alerts(), "status": STATUS}


@settings(max_examples=150, deadline=None)
@given(mutated(RECORDED_DOCS))
def test_mutated_answers_raise_only_integration_errors(mutant: Mutant) -> None:
    """The recorded alerts changed as a careless proxy or an attacker would (``tests/fuzz/mutate.py``), served to
    the client: alerts or an ``IntegrationError``, never another exception."""
    with client(lambda r: httpx.Response(200, content=mutant.body), max_bytes=8 << 20) as c:
        try:
            alerts = c.alerts({"alertname": "X"})
        except IntegrationError:
            pass
        else:
            assert len(alerts) <= MAX_ALERTS
            assert all(isinstance(v, str) for a in alerts for v in a.labels.values())
        try:
            c.status()
        except IntegrationError:
            pass


def test_parse_alerts_does_not_change_its_input() -> None:
    doc = recorded_alerts()
    before = copy.deepcopy(doc)
    parse_alerts(doc)
    assert doc == before
