"""The Prometheus HTTP API client offline: the parsers on recorded answers (``tests/fixtures/recorded/prometheus``),
the client against an ``httpx.MockTransport`` (the query parameters and credentials sent, Prometheus's error
envelope read into ``Invalid``, the status mapping, the byte cap, no credential in a message), ``config check``'s
line, and the parsers' input boundary under hypothesis."""

from __future__ import annotations

import base64
import copy
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.integrations import prometheus
from fixloop.integrations.checks import Status
from fixloop.integrations.errors import AuthError, HttpStatusError, IntegrationError, Invalid, NotFound, TransportError
from fixloop.integrations.prometheus import (
    MAX_POINTS,
    MAX_SERIES,
    PrometheusClient,
    PrometheusSettings,
    PromSeries,
    parse_matrix,
    parse_vector,
)
from tests.fuzz.mutate import Mutant, json_values, mutated

RECORDED = Path(__file__).parents[1] / "fixtures" / "recorded" / "prometheus"
MATRIX = RECORDED / "kube-cam_query-range_istio-request-count_by-response-code.json"
ALERTS = RECORDED / "kured_query_alerts-vector_5alerts.json"
UP = RECORDED / "prometheus-docs_api-v1-query_up_vector.json"
BAD_DATA = RECORDED / "ryotarai-prometheus-query-issue1_error_bad-data_max-resolution.json"
TOKEN = "prom-token-8d1e77"
BUILDINFO = {"status": "success", "data": {"version": "2.53.0", "revision": "abc", "branch": "HEAD"}}


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def prom_settings(**kw: Any) -> PrometheusSettings:
    return PrometheusSettings(url="https://prometheus.example:9090/", _env_file=None, **kw)


Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kw: Any) -> PrometheusClient:
    return PrometheusClient(prom_settings(**kw), transport=httpx.MockTransport(handler))


def answer(path: Path, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, content=path.read_bytes())


# ---------------------------------------------------------------- the parsers on recorded answers


def test_a_recorded_range_answer() -> None:
    series = parse_matrix(load(MATRIX))
    assert len(series) == 10
    first = series[0]
    assert first.labels["__name__"] == "istio_request_count"
    assert first.labels["response_code"] == "200"
    assert first.labels["source_service"] == "playground-frontend-app.default.svc.cluster.local"
    assert first.points == [(1520142489.132, 25.0), (1520142494.132, 25.0)]
    codes = sorted({s.labels["response_code"] for s in series})
    assert codes == ["200", "304", "404", "405", "503"]
    assert all(len(s.points) == 2 for s in series)


def test_recorded_instant_answers() -> None:
    up = parse_vector(load(UP))
    assert [(s.labels["job"], s.points) for s in up] == [
        ("prometheus", [(1435781451.781, 1.0)]),
        ("node", [(1435781451.781, 0.0)]),
    ]
    alerts = parse_vector(load(ALERTS))
    assert [s.labels["alertstate"] for s in alerts] == ["firing"] * 4 + ["pending"]
    assert alerts[1].labels["pod"] == "dev-deployment-78dcbmf25v"
    assert all(s.values() == [1.0] for s in alerts)


def test_a_recorded_error_envelope_is_an_integration_error_with_its_reason() -> None:
    for parse in (parse_matrix, parse_vector):
        with pytest.raises(IntegrationError) as e:
            parse(load(BAD_DATA))
        assert "bad_data: exceeded maximum resolution of 11,000 points per timeseries" in str(e.value)


def test_the_other_result_type_is_refused_naming_the_pointer() -> None:
    with pytest.raises(IntegrationError, match=r"/data/resultType is not matrix"):
        parse_matrix(load(UP))
    with pytest.raises(IntegrationError, match=r"/data/resultType is not vector or scalar"):
        parse_vector(load(MATRIX))


def test_nan_and_infinities() -> None:
    doc = load(MATRIX)
    doc["data"]["result"][0]["values"] = [[1, "NaN"], [2, "+Inf"], [3, "-Inf"], [4, "1.5e3"], [5, "-0.25"]]
    (series, *_) = parse_matrix(doc)
    assert series.points[0] == (1.0, None)
    assert series.points[1:] == [(2.0, math.inf), (3.0, -math.inf), (4.0, 1500.0), (5.0, -0.25)]
    assert series.values() == [math.inf, -math.inf, 1500.0, -0.25]


def test_a_scalar_and_an_empty_answer() -> None:
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1700000000.5, "1"]}}
    assert parse_vector(scalar) == [PromSeries(labels={}, points=[(1700000000.5, 1.0)])]
    empty = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    assert parse_matrix(empty) == []


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (lambda d: d["data"]["result"][3]["values"][1].__setitem__(1, 25), "/data/result/3/values/1/1"),
        (lambda d: d["data"]["result"][3]["values"][1].__setitem__(0, "1520142494"), "/data/result/3/values/1/0"),
        (lambda d: d["data"]["result"][3]["values"][1].__setitem__(1, "25 apples"), "/data/result/3/values/1/1"),
        (lambda d: d["data"]["result"][3]["values"][1].append("x"), "/data/result/3/values/1"),
        (lambda d: d["data"]["result"][2]["metric"].__setitem__("job/name", 1), "/data/result/2/metric/job~1name"),
        (lambda d: d["data"]["result"][2].__setitem__("values", {}), "/data/result/2/values"),
        (lambda d: d["data"].__setitem__("result", {}), "/data/result"),
        (lambda d: d.__setitem__("status", "ok"), "/status"),
        (lambda d: d.__setitem__("data", []), "/data"),
    ],
)
def test_a_wrong_shape_names_its_json_pointer(change: Callable[[Any], None], pointer: str) -> None:
    doc = load(MATRIX)
    change(doc)
    with pytest.raises(IntegrationError, match=f"{pointer} "):
        parse_matrix(doc)


def test_series_and_points_are_bounded() -> None:
    doc = load(MATRIX)
    one = doc["data"]["result"][0]
    doc["data"]["result"] = [one] * (MAX_SERIES + 1)
    with pytest.raises(IntegrationError, match="10001 series, over the limit of 10000"):
        parse_matrix(doc)
    doc["data"]["result"] = [{"metric": {}, "values": [[i, "1"] for i in range(MAX_POINTS + 1)]}]
    with pytest.raises(IntegrationError, match="/data/result/0/values holds 11001 points, over the limit of 11000"):
        parse_matrix(doc)
    doc["data"]["result"][0]["values"].pop()
    assert len(parse_matrix(doc)[0].points) == MAX_POINTS


# ---------------------------------------------------------------- the client


def test_query_range_sends_the_query_the_window_and_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=MATRIX.read_bytes())

    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with client(handler, token=TOKEN) as c:
        series = c.query_range('sum by (code) (rate(http_requests_total{job="api"}[5m]))', start, 1714565100.25, 30)
    assert len(series) == 10
    (request,) = seen
    assert request.method == "GET" and request.url.path == "/api/v1/query_range"
    assert dict(request.url.params) == {
        "query": 'sum by (code) (rate(http_requests_total{job="api"}[5m]))',
        "start": "1714564800.000",
        "end": "1714565100.250",
        "step": "30",
    }
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_query_sends_basic_authentication_and_the_time() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=UP.read_bytes())

    with client(handler, username="bot", password="s3cret-pw") as c:
        assert [s.values() for s in c.query("up")] == [[1.0], [0.0]]
        c.query("up", at=datetime(2015, 7, 1, 20, 10, 51, 781000, tzinfo=UTC))
    assert seen[0].url.path == "/api/v1/query" and dict(seen[0].url.params) == {"query": "up"}
    assert dict(seen[1].url.params) == {"query": "up", "time": "1435781451.781"}
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"bot:s3cret-pw").decode()


def test_a_base_path_behind_a_proxy_is_kept() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=BUILDINFO)

    settings_ = PrometheusSettings(url="https://monitor.example/prometheus/", _env_file=None)
    with PrometheusClient(settings_, transport=httpx.MockTransport(handler)) as c:
        assert c.buildinfo()["version"] == "2.53.0"
    assert seen == ["/prometheus/api/v1/status/buildinfo"]


def test_naive_times_and_a_zero_step_are_refused_before_any_request() -> None:
    with client(lambda r: pytest.fail("no request expected")) as c:
        with pytest.raises(ValueError, match="naive"):
            c.query_range("up", datetime(2024, 5, 1), 1714565100, 30)
        with pytest.raises(ValueError, match="step"):
            c.query_range("up", 0, 60, 0)


def error_envelope(kind: str, text: str) -> bytes:
    return json.dumps({"status": "error", "errorType": kind, "error": text}).encode()


@pytest.mark.parametrize(
    ("status", "body", "error", "retryable", "reason"),
    [
        (400, BAD_DATA.read_bytes(), Invalid, False, "bad_data: exceeded maximum resolution of 11,000 points"),
        (422, error_envelope("execution", "query timed out in expression evaluation"), Invalid, False, "execution:"),
        (401, b"Unauthorized\n", AuthError, False, None),
        (403, b"<html>forbidden</html>", AuthError, False, None),
        (404, b"404 page not found\n", NotFound, False, None),
        (429, b"", HttpStatusError, True, None),
        (503, b"Service Unavailable", HttpStatusError, True, None),
        (500, error_envelope("internal", "boom"), HttpStatusError, True, "internal: boom"),
    ],
)
def test_status_mapping(status: int, body: bytes, error: type, retryable: bool, reason: str | None) -> None:
    with client(lambda r: httpx.Response(status, content=body), token=TOKEN) as c, pytest.raises(error) as e:
        c.query_range("rate(x[5m])", 0, 3600, 60)
    assert type(e.value) is error
    assert e.value.status == status and e.value.retryable is retryable
    assert str(e.value).startswith(f"prometheus: HTTP {status}: GET /api/v1/query_range")
    if reason:
        assert reason in str(e.value)
    assert "rate(x" not in str(e.value)  # the query is not in the message


def test_no_answer_is_a_transport_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"connection refused (Authorization: Bearer {TOKEN})", request=request)

    with client(refuse, token=TOKEN) as c, pytest.raises(TransportError) as e:
        c.query("up")
    assert e.value.retryable and str(e.value) == "prometheus: GET /api/v1/query: ConnectError"


def test_credentials_echoed_by_a_server_are_masked() -> None:
    echo = error_envelope("bad_data", f"bad header Authorization: Bearer {TOKEN}")
    with client(lambda r: httpx.Response(400, content=echo), token=TOKEN) as c, pytest.raises(Invalid) as e:
        c.query("up")
    assert TOKEN not in str(e.value) and "Bearer ***" in str(e.value)
    basic = base64.b64encode(b"bot:pw-7f3a9c").decode()
    echo = error_envelope("bad_data", f"got Basic {basic} for bot, password pw-7f3a9c")
    with client(lambda r: httpx.Response(400, content=echo), username="bot", password="pw-7f3a9c") as c:
        with pytest.raises(Invalid) as e:
            c.query("up")
    assert basic not in str(e.value) and "pw-7f3a9c" not in str(e.value)


def test_the_answer_is_capped_in_bytes() -> None:
    body = MATRIX.read_bytes()
    size = len(body)
    with client(lambda r: httpx.Response(200, content=body), max_bytes=size - 1) as c:
        with pytest.raises(IntegrationError, match=f"over {size - 1} bytes"):
            c.query_range("x", 0, 60, 15)
    with client(lambda r: httpx.Response(200, content=body), max_bytes=size) as c:
        assert len(c.query_range("x", 0, 60, 15)) == 10


def test_not_json_is_an_integration_error() -> None:
    with client(lambda r: httpx.Response(200, content=b"<html>login</html>")) as c:
        with pytest.raises(IntegrationError, match="not JSON"):
            c.query("up")


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="TOKEN and FIXLOOP_PROMETHEUS_USERNAME/FIXLOOP_PROMETHEUS_PASSWORD"):
        prom_settings(token=TOKEN, username="bot", password="pw")
    with pytest.raises(ValueError, match="USERNAME and FIXLOOP_PROMETHEUS_PASSWORD go together"):
        prom_settings(username="bot")
    with pytest.raises(ValueError, match="http:// or https://"):
        PrometheusSettings(url="prometheus:9090", _env_file=None)
    with pytest.raises(ValueError):
        prom_settings(timeout=0)
    assert prom_settings().url == "https://prometheus.example:9090"


def test_an_unreadable_ca_file_is_an_integration_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(IntegrationError, match="CA file cannot be read"):
        PrometheusClient(prom_settings(ca_file=bad))


# ---------------------------------------------------------------- config check


def checked(monkeypatch: pytest.MonkeyPatch, handler: Handler, **kw: Any) -> str:
    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(prometheus, "PrometheusClient", lambda s: PrometheusClient(s, transport=transport))
    result = prometheus.check(prom_settings(**kw), timeout=2)
    return f"{result.status.value} {result.text}"


def test_check_reports_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/status/buildinfo":
            return httpx.Response(200, json=BUILDINFO)
        assert request.url.params["query"] == "vector(1)"
        return httpx.Response(
            200,
            json={"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]}},
        )

    text = checked(monkeypatch, handler)
    assert text == "ok https://prometheus.example:9090 (Prometheus 2.53.0, instant queries answer)"


def test_check_failures_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    text = checked(monkeypatch, lambda r: httpx.Response(401), token=TOKEN)
    assert text.startswith(
        f"{Status.FAIL.value} https://prometheus.example:9090: HTTP 401: GET /api/v1/status/buildinfo"
    )
    assert "check FIXLOOP_PROMETHEUS_TOKEN or FIXLOOP_PROMETHEUS_USERNAME/_PASSWORD" in text
    assert TOKEN not in text
    text = checked(monkeypatch, lambda r: httpx.Response(404, text="404 page not found"))
    assert "HTTP 404" in text and "check FIXLOOP_PROMETHEUS_URL" in text


# ---------------------------------------------------------------- the input boundary

_json = (
    json_values  # tests/fuzz/mutate.py's JSON values, and what a Prometheus answer's numbers and strings can be
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["NaN", "+Inf", "-Inf", "1e999", "0x10", "1_000", " 1", "success", "error", "matrix"])
)
_time = st.integers(min_value=-(10**400), max_value=10**400) | st.floats(allow_nan=True, allow_infinity=True)
_value = st.sampled_from(["1", "0.5", "NaN", "+Inf", "-Inf", "1e999", "0x10", "1_000", " 1", ""]) | st.text(max_size=8)
_point = st.tuples(_time, _value).map(list) | st.tuples(_time, _value).map(list) | _json
_labels = st.dictionaries(st.text(max_size=6), st.text(max_size=6) | _json, max_size=3)
_series = st.fixed_dictionaries(
    {}, optional={"metric": _labels, "values": st.lists(_point, max_size=5), "value": _point}
)
_data = st.fixed_dictionaries(
    {
        "resultType": st.sampled_from(["matrix", "vector", "scalar"]) | _json,
        "result": st.lists(_series, max_size=4) | st.lists(_series, max_size=4) | _point,
    }
)
_doc = st.fixed_dictionaries(
    {"status": st.sampled_from(["success", "success", "success", "error", "ok"]), "data": _data},
    optional={"errorType": _json, "error": _json},
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_doc, _json))
def test_the_parsers_raise_only_integration_errors(doc: object) -> None:
    for parse in (parse_matrix, parse_vector):
        try:
            series = parse(copy.deepcopy(doc))
        except IntegrationError as e:
            assert len(str(e)) < 600
            continue
        for s in series:
            assert all(isinstance(v, str) for v in s.labels.values())
            for t, v in s.points:
                assert math.isfinite(t) and (v is None or not math.isnan(v))


RECORDED_DOCS = {p.name: load(p) for p in sorted(RECORDED.glob("*.json"))}


@settings(max_examples=150, deadline=None)
@given(mutated(RECORDED_DOCS))
def test_mutated_recorded_answers_through_the_client_raise_only_integration_errors(mutant: Mutant) -> None:
    """Real answers changed as a careless proxy or an attacker would (``tests/fuzz/mutate.py``: replaced, deleted,
    repeated, retyped, deeply nested nodes, cut or flipped bytes), served to the client: a list of series or an
    ``IntegrationError``, never another exception."""
    with client(lambda r: httpx.Response(200, content=mutant.body), max_bytes=8 << 20) as c:
        for call in (lambda: c.query_range("x", 0, 60, 15), lambda: c.query("x")):
            try:
                series = call()
            except IntegrationError as e:
                assert len(str(e)) < 600
                continue
            assert len(series) <= MAX_SERIES and all(len(s.points) <= MAX_POINTS for s in series)
