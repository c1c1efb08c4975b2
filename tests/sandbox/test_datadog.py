"""The Datadog stand-in, called by the official ``datadog-api-client`` and by fixloop's client over HTTP."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.api.metrics_api import MetricsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v2.api.events_api import EventsApi as EventsApiV2
from fastapi import FastAPI
from pydantic import SecretStr

from fixloop.integrations.datadog.api import DatadogClient, DatadogSettings
from fixloop.integrations.errors import AuthError, Invalid, NotFound, TransportError
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.sandbox.server import bind, endpoints, serve_in_thread
from fixloop.sandbox.world import MONITORS
from fixloop.sandbox.world import SERVICES as WORLD_SERVICES
from tests.activities.sandbox_world import configured
from tests.sandbox.conftest import Running, with_env
from tests.sandbox.fidelity import assert_same_shape, recorded, shape_mismatches

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PAYMENTS_ERRORS = next(m for m in MONITORS if m.service == "payments" and m.kind == "errors")


@pytest.fixture
def dd(start_sandbox: Callable[..., Running]) -> Running:
    running = start_sandbox("/datadog")
    running.sb.clock = lambda: NOW
    return running


def official(dd: Running, api_key: str | None = None, app_key: str | None = None) -> ApiClient:
    creds = dd.sb.credentials
    cfg = Configuration(
        host=dd.service("/datadog"),
        api_key={
            "apiKeyAuth": api_key or creds.datadog_api_key.get_secret_value(),
            "appKeyAuth": app_key or creds.datadog_app_key.get_secret_value(),
        },
    )
    return ApiClient(cfg)


@pytest.fixture
def client(dd: Running) -> Iterator[DatadogClient]:
    creds = dd.sb.credentials
    settings = DatadogSettings(
        host=dd.service("/datadog"), api_key=creds.datadog_api_key, app_key=creds.datadog_app_key, timeout=5
    )
    with DatadogClient(settings) as c:
        yield c


def raw(dd: Running, method: str, path: str, **kw: Any) -> httpx.Response:
    creds = dd.sb.credentials
    headers = {
        "DD-API-KEY": creds.datadog_api_key.get_secret_value(),
        "DD-APPLICATION-KEY": creds.datadog_app_key.get_secret_value(),
    }
    return httpx.request(method, dd.service("/datadog") + path, headers=headers, timeout=5, **kw)


def test_official_client_queries_the_world_deterministically(dd: Running) -> None:
    start, end = int((NOW - timedelta(hours=1)).timestamp()), int(NOW.timestamp())
    query = "sum:trace.http.request.hits{service:payments}.as_rate()"
    with official(dd) as api:
        first = MetricsApi(api).query_metrics(_from=start, to=end, query=query)
        second = MetricsApi(api).query_metrics(_from=start, to=end, query=query)
    assert first.to_dict() == second.to_dict()
    (series,) = first.series
    assert series.metric == "trace.http.request.hits" and series.scope == "service:payments"
    assert series.interval == 20 and series.length == len(series.pointlist) == 181
    world = dd.sb.world.series("payments", "hits", start, end, 20)
    assert [(p.value[0], p.value[1]) for p in series.pointlist] == [(float(t), v) for t, v in world]
    assert 30 < statistics.fmean(p.value[1] for p in series.pointlist) < 50  # ~40 req/s
    assert series.unit[0].name == "hit" and series.unit[1].name == "second"


def test_counts_groups_and_unknowns(dd: Running, client: DatadogClient) -> None:
    start, end = NOW - timedelta(days=1), NOW
    (day,) = client.query_metrics("sum:trace.http.request.hits{service:catalog}", start, end)
    assert day.interval == 300 and len(day.points) == 289  # a day -> 5-minute rollup, as real Datadog
    assert 80 * 300 < statistics.fmean(day.values()) < 100 * 300  # a count per interval
    grouped = client.query_metrics(
        "avg:trace.http.request.duration.by.service.95p{env:production} by {service}", start, end
    )
    assert sorted(s.tag_set[0] for s in grouped) == [
        "service:catalog", "service:inventory", "service:legacy-api", "service:payments", "service:storefront"
    ]  # fmt: skip
    catalog = next(s for s in grouped if s.tag_set == ["service:catalog"])
    assert catalog.scope == "env:production,service:catalog" and catalog.unit == "second"
    assert 0.07 < statistics.fmean(catalog.values()) < 0.11  # p95 in seconds (~90 ms)
    assert client.query_metrics("sum:no.such.metric{*}", start, end) == []
    assert client.query_metrics("sum:trace.http.request.hits{service:nope}", start, end) == []
    two = client.query_metrics(
        "sum:trace.http.request.errors{service:payments}.as_rate(),sum:trace.http.request.hits{service:payments}",
        start,
        end,
    )
    assert [s.metric for s in two] == ["trace.http.request.errors", "trace.http.request.hits"]


def test_a_breaking_deploy_shows_in_the_metrics_and_the_monitor(dd: Running, client: DatadogClient) -> None:
    deploy_at = NOW - timedelta(minutes=45)
    dd.sb.world.record_deploy(NOW - timedelta(days=1), "r1", {"payments": {"app": "python:3.11-slim"}})
    dd.sb.world.record_deploy(deploy_at, "r2", {"payments": {"app": "python:3.12-slim"}})
    query = "sum:trace.http.request.errors{service:payments}.as_rate()"
    (s,) = client.query_metrics(query, NOW - timedelta(hours=2), NOW)
    before = [v for t, v in s.points if v is not None and t < deploy_at.timestamp() - 60]
    after = [v for t, v in s.points if v is not None and t >= deploy_at.timestamp()]
    assert 2.4 < statistics.fmean(after) / statistics.fmean(before) < 3.6
    mon = client.get_monitor(PAYMENTS_ERRORS.id)
    assert mon.overall_state == "Alert" and mon.name == "High error rate on payments"
    assert "service:payments" in mon.tags and mon.query == PAYMENTS_ERRORS.query
    dd.sb.clock = lambda: deploy_at - timedelta(minutes=1)
    assert client.get_monitor(PAYMENTS_ERRORS.id).overall_state == "OK"


def test_a_monitor_read_late_is_dated_when_it_turned_not_when_it_was_read(dd: Running, client: DatadogClient) -> None:
    """Datadog evaluates continuously: a monitor last read before a breaking deploy and read again 40 minutes later
    says it turned Alert when its 5-minute average crossed the threshold (after the deploy, within the window),
    the same whenever it is read, so monitors read in one poll keep the order they really turned in."""
    deploy_at = NOW - timedelta(minutes=45)
    dd.sb.world.record_deploy(NOW - timedelta(days=1), "r1", {"payments": {"app": "python:3.11-slim"}})
    dd.sb.world.record_deploy(deploy_at, "r2", {"payments": {"app": "python:3.12-slim"}})
    dd.sb.clock = lambda: deploy_at - timedelta(minutes=1)
    assert client.get_monitor(PAYMENTS_ERRORS.id).overall_state == "OK"
    dd.sb.clock = lambda: deploy_at + timedelta(minutes=40)
    with official(dd) as api:
        mon = MonitorsApi(api).get_monitor(PAYMENTS_ERRORS.id)
        again = MonitorsApi(api).get_monitor(PAYMENTS_ERRORS.id)
    assert str(mon.overall_state) == "Alert" and again.overall_state_modified == mon.overall_state_modified
    turned = mon.overall_state_modified
    assert deploy_at < turned <= deploy_at + timedelta(minutes=5)
    world = dd.sb.world
    assert world.monitor_state(PAYMENTS_ERRORS, turned) == "Alert"
    assert world.monitor_state(PAYMENTS_ERRORS, turned - timedelta(seconds=2)) != "Alert"


def test_monitors_with_the_official_client(dd: Running) -> None:
    with official(dd) as api:
        monitors = MonitorsApi(api)
        one = monitors.get_monitor(PAYMENTS_ERRORS.id)
        assert one.id == PAYMENTS_ERRORS.id and str(one.overall_state) == "OK"
        assert len(monitors.list_monitors()) == len(MONITORS)
        mine = monitors.list_monitors(monitor_tags="service:payments")
        assert {m.name for m in mine} == {
            "High error rate on payments", "High p95 latency on payments", "Containers OOMKilled on payments"
        }  # fmt: skip
        assert [m.id for m in monitors.list_monitors(tags="service:legacy-api", name="error")] == [
            m.id for m in MONITORS if m.service == "legacy-api" and m.kind == "errors"
        ]
        pages = [monitors.list_monitors(page=p, page_size=4) for p in range(4)]
        assert [len(p) for p in pages] == [4, 4, 4, 3]
        found = monitors.search_monitors(query="service:inventory status:ok", per_page=1)
        assert found.metadata.total_count == 3 and len(found.monitors) == 1 and found.metadata.page_count == 3
        assert found.counts.to_dict()["status"] == [{"count": 3, "name": "OK"}]


def test_events_posted_and_listed(dd: Running, client: DatadogClient) -> None:
    event = client.post_event("fixloop: deploy verified", "%%%\nall good\n%%%", ["service:payments"], "wi-123")
    assert event.id > 0 and event.url and str(event.id) in event.url
    with official(dd) as api:
        other = EventsApi(api).create_event(body=EventCreateRequest(title="second", text="t", tags=["a:b"]))
        assert other.status == "ok" and other.event.title == "second"
        listed = EventsApiV2(api).list_events(filter_query="service:payments", page_limit=5)
    assert [e.attributes.attributes.title for e in listed.data] == ["fixloop: deploy verified"]
    assert listed.data[0].attributes.attributes.aggregation_key == "wi-123"
    stored = dd.sb.store("datadog").data["events"]
    assert [e["title"] for e in stored] == ["fixloop: deploy verified", "second"]


def test_errors_are_mapped(dd: Running, client: DatadogClient) -> None:
    bad = DatadogSettings(host=dd.service("/datadog"), api_key=SecretStr("0" * 32), app_key=SecretStr("1" * 40))
    with DatadogClient(bad) as wrong:
        with pytest.raises(AuthError) as e:
            wrong.check()
        assert e.value.status == 403 and "0000" not in str(e.value)
        with pytest.raises(AuthError):
            wrong.query_metrics("avg:trace.http.request.hits{*}", NOW - timedelta(hours=1), NOW)
    client.check()
    with pytest.raises(Invalid) as e:
        client.query_metrics("avg:trace.http.request.hits{service:payments", NOW - timedelta(hours=1), NOW)
    assert e.value.status == 400 and "Error parsing query" in str(e.value)
    with pytest.raises(NotFound, match="Monitor not found"):
        client.get_monitor(12345)
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    closed = DatadogSettings(host=f"http://127.0.0.1:{port}", api_key=SecretStr("k"), app_key=SecretStr("a"))
    with DatadogClient(closed) as down, pytest.raises(TransportError):
        down.check()
    # raw shapes: no FastAPI {"detail": ...}
    assert raw(dd, "GET", "/api/v1/query?from=1").json() == {"errors": ["Missing required parameter: to"]}
    assert raw(dd, "POST", "/api/v1/events", json={"text": "no title"}).status_code == 400
    forbidden = httpx.get(dd.service("/datadog") + "/api/v1/monitor", timeout=5)
    assert (forbidden.status_code, forbidden.json()) == (403, {"errors": ["Forbidden"]})


@pytest.mark.parametrize(
    "name", ["v1_query_timeseries_points_ok__rec2021-06-17", "v1_query_timeseries_points_ok__rec2022-01"]
)
def test_fidelity_query(dd: Running, name: str) -> None:
    real = recorded("datadog", f"{name}.interactions.json")[0]["response"]["body"]
    start = int((NOW - timedelta(days=1)).timestamp())
    params = {"from": start, "to": int(NOW.timestamp()), "query": "avg:trace.http.request.duration.by.service.95p{*}"}
    ours = raw(dd, "GET", "/api/v1/query", params=params).json()
    assert_same_shape(real, ours, only=[k for k in real if k != "series"])
    assert len(ours["series"]) == 1
    assert_same_shape(real["series"][0], ours["series"][0], only=[k for k in real["series"][0] if k != "unit"])
    assert_same_shape(real["series"][0]["unit"][0], ours["series"][0]["unit"][0])
    assert ours["series"][0]["unit"][1] is None  # a gauge: no per-unit, like the recording


def test_fidelity_monitors_and_events(dd: Running) -> None:
    def body(name: str, i: int = 0) -> Any:
        return recorded("datadog", f"{name}.interactions.json")[i]["response"]["body"]

    got = raw(dd, "GET", f"/api/v1/monitor/{PAYMENTS_ERRORS.id}", params={"with_downtimes": "true"}).json()
    real = body("v1_get_a_monitors_details_returns_ok_response", 1)  # a log alert: its options have log extras
    assert_same_shape(real, got, only=[k for k in real if k != "options"])
    assert_same_shape(real["options"], got["options"], only=[k for k in real["options"] if k != "enable_logs_sample"])
    missing = raw(dd, "GET", "/api/v1/monitor/12345")
    assert missing.status_code == 404
    assert missing.json() == body("v1_get_a_monitors_details_returns_monitor_not_found_error_response")
    listed = raw(dd, "GET", "/api/v1/monitor", params={"page_size": 2, "page": 0}).json()
    assert_same_shape(body("v1_get_all_monitors_returns_ok_response_with_pagination"), listed)
    assert len(listed) == 2
    assert_same_shape(body("v1_monitors_search_returns_ok_response"), raw(dd, "GET", "/api/v1/monitor/search").json())
    real_event = recorded("datadog", "v1_post_an_event_returns_ok_response.interactions.json")[0]
    posted = raw(dd, "POST", "/api/v1/events", json=real_event["request"]["body"])
    assert posted.status_code == 202
    assert_same_shape(real_event["response"]["body"], posted.json())
    events = raw(dd, "GET", "/api/v2/events", params={"page[limit]": 1}).json()
    assert events["data"] and "links" not in events  # a single event: no next page
    raw(dd, "POST", "/api/v1/events", json={"title": "two", "text": "t"})
    paged = raw(dd, "GET", "/api/v2/events", params={"page[limit]": 1}).json()
    assert_same_shape(body("v2_get_a_list_of_events_returns_ok_response_with_pagination"), paged)


def test_client_reads_float_timestamps_of_older_responses() -> None:
    """The 2021 recording has ``1623846300000.0`` timestamps, the 2022 one ints: both parse to epoch seconds."""
    for name, first in (("v1_query_timeseries_points_ok__rec2021-06-17", 1623846300.0),
                        ("v1_query_timeseries_points_ok__rec2022-01", 1641344100.0)):  # fmt: skip
        body = recorded("datadog", f"{name}.interactions.json")[0]["response"]["body"]
        sock = bind()
        with serve_in_thread(_replay(body), sock) as url:
            settings = DatadogSettings(host=url, api_key=SecretStr("k"), app_key=SecretStr("a"))
            with DatadogClient(settings) as c:
                (s,) = c.query_metrics("system.cpu.idle{*}", 1, 2)
        assert s.points[0] == (first, body["series"][0]["pointlist"][0][1]) and len(s.points) == 288
        assert s.interval == 300 and s.unit == "percent" and s.scope == "*"


def _replay(body: Any) -> FastAPI:
    """An app answering ``GET /api/v1/query`` with a recorded body."""
    app = FastAPI()
    app.get("/api/v1/query")(lambda: body)
    return app


APM_EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "datadog" / "api"
APM_EXAMPLE = APM_EXAMPLE / "datadog-docs_v1_service-dependencies_list_example.json"


@pytest.fixture
def dd_repo(start_sandbox: Callable[..., Running]) -> Running:
    """Datadog with the GitLab stand-in, which seeds ``platform/gitops``."""
    return start_sandbox("/datadog", "/gitlab")


def _gitlab(run: Running) -> GitLabClient:
    return GitLabClient(configured(GitLabSettings, endpoints(run.sb)))


def test_service_dependencies_answer_the_seeded_services_with_the_calls_the_head_configures(
    dd_repo: Running,
) -> None:
    """The seeded manifests' Service URLs are the seeded calls (storefront -> catalog, payments; catalog ->
    inventory; payments -> legacy-api). A commit giving inventory a qualified Service name with a port and an
    external URL makes one more edge at the next request; another env answers nothing."""
    settings = configured(DatadogSettings, endpoints(dd_repo.sb))
    seeded = {"storefront": ["catalog", "payments"], "catalog": ["inventory"], "payments": ["legacy-api"]}
    with DatadogClient(settings) as c:
        assert c.service_dependencies("production") == {s: {"calls": seeded.get(s, [])} for s in WORLD_SERVICES}
        assert c.service_dependencies("staging") == c.service_dependencies("production")
        gl = _gitlab(dd_repo)
        path = "apps/base/inventory/deployment.yaml"
        text = with_env(
            gl.read_file(path, "main") or "",
            {"LEDGER": "payments.shop-production.svc:8080", "X": "https://stripe.com"},
        )
        gl.commit_files("main", {path: text}, "inventory: call payments")
        answer = c.service_dependencies("production", start=NOW - timedelta(hours=1), end=NOW)
        assert answer["inventory"] == {"calls": ["payments"]}
        assert all(answer[s] == {"calls": seeded.get(s, [])} for s in WORLD_SERVICES if s != "inventory")
        assert c.service_dependencies("sandbox") == {} and c.service_dependencies("../apps") == {}


def test_fidelity_service_dependencies(dd_repo: Running) -> None:
    """The stand-in's answer has the shape of the API reference's example (an object keyed by service, each
    ``{"calls": [name, ...]}``): the example is no recording, none being public (tests/fixtures/SOURCES.md)."""
    real = json.loads(APM_EXAMPLE.read_text())
    ours = raw(dd_repo, "GET", "/api/v1/service_dependencies", params={"env": "production"}).json()
    assert isinstance(ours, dict) and ours
    for name, entry in ours.items():
        assert isinstance(name, str)
        assert set(entry) == set(real["service_b"]), entry
        assert shape_mismatches(real["service_b"], entry) == []
        assert shape_mismatches({"calls": ["x"]}, {"calls": [*entry["calls"], "y"]}) == []


def test_service_dependencies_errors_are_mapped(dd_repo: Running) -> None:
    creds = dd_repo.sb.credentials
    wrong = DatadogSettings(
        host=dd_repo.service("/datadog"), api_key=creds.datadog_api_key, app_key=SecretStr("wrong"), timeout=5
    )
    with DatadogClient(wrong) as c, pytest.raises(AuthError, match="HTTP 403: service dependencies: Forbidden"):
        c.service_dependencies("production")
    missing = raw(dd_repo, "GET", "/api/v1/service_dependencies")
    assert missing.status_code == 400 and "env" in missing.json()["errors"][0]
