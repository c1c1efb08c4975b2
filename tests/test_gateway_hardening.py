"""The gateway under hostile input and hostile connections (issue 14, findings 3, 4 and Flux replays of 5): bounded
cost per request (a JSON value count before the parse, per-format element limits after it), one parse with a shared
depth limit, client disconnects, connection deadlines on a real uvicorn server, a fast 503 while Temporal is down,
and replayed Flux events. Real payloads from tests/fixtures (tests/fixtures/SOURCES.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from fixloop.app import ingest
from fixloop.app.gateway import GatewaySettings
from fixloop.app.gateway import server as httpserver
from fixloop.app.ingest import TooDeep, TooMany, check_elements, count_values, decode, value_bound
from fixloop.app.temporal import connect as temporal_connect
from fixloop.core.config import TemporalSettings
from fixloop.core.models import Source
from tests.devserver import dev  # noqa: F401 - the fixture
from tests.test_gateway import (
    ALERTMANAGER,
    AUTH,
    DATADOG,
    FLUX_FAILED,
    GITLAB,
    MR_HOOK,
    SCOPE,
    TOKEN,
    FakeClient,
    body,
    connecting,
    flux_event,
    http,
    make_app,
    metric,
    signed,
    task_queue,  # noqa: F401 - the fixture
)

TRIVY = "trivy/trivy-0.22-fulldb_alpine-39.json"
HOSTILE_RESULTS = 3_000_000  # the attack: a Trivy report of 3 M empty results, 8.6 MB


def nested(depth: int) -> Any:
    """A value with ``depth`` containers nested (``[[...]]``)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_bodies(depth: int) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """For every endpoint: (path, a real body of its format carrying a value nested ``depth`` deep, headers)."""
    deep = "[" * depth + "]" * depth  # orjson itself cannot serialize this deep

    def carrying(rel: str, key: str = "x") -> bytes:
        text = body(rel).decode()
        head, _, rest = text.rstrip().rpartition("}")
        assert not rest
        return f'{head}, "{key}": {deep}}}'.encode()

    flux = carrying(FLUX_FAILED)
    return {
        "datadog": ("/v1/signals/datadog", carrying(DATADOG), AUTH),
        "alertmanager": ("/v1/signals/alertmanager", carrying(ALERTMANAGER), AUTH),
        "reports": ("/v1/reports", carrying(TRIVY), AUTH),
        "reports/trivy": ("/v1/reports/trivy", carrying(TRIVY), AUTH),
        "hooks/gitlab": ("/v1/hooks/gitlab", carrying(MR_HOOK), GITLAB),
        "hooks/flux": ("/v1/hooks/flux", flux, signed(flux)),
    }


# ---------------------------------------------------------------- one parse, a depth limit shared by all endpoints


@pytest.mark.parametrize("depth", [960, 100_000])
async def test_a_value_nested_deep_is_400_on_every_endpoint(depth: int) -> None:
    app = make_app(connecting(FakeClient()))
    async with http(app) as c:
        for endpoint, (path, data, headers) in deep_bodies(depth).items():
            r = await c.post(path, content=data, headers=headers)
            assert r.status_code == 400, (endpoint, r.status_code, r.text)
            assert r.json()["field"] == "body" and "nested deeper than 64" in r.json()["error"], endpoint
        text = (await c.get("/metrics")).text
    assert "internal_error" not in text


async def test_the_hook_parsers_get_the_decoded_document_not_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """One parse per request: the GitLab and Flux hooks are decoded once by orjson, never by ``json.loads``."""
    calls: list[object] = []
    real_loads = orjson.loads
    ev, mr_body = body(FLUX_FAILED), body(MR_HOOK)
    monkeypatch.setattr(json, "loads", lambda *a, **k: calls.append(a) or pytest.fail("json.loads was called"))
    monkeypatch.setattr(ingest.orjson, "loads", lambda data: calls.append(data) or real_loads(data))
    temporal = FluxTemporal()
    async with http(make_app(connecting(temporal))) as c:
        mr = await c.post("/v1/hooks/gitlab", content=mr_body, headers=GITLAB)
        fx = await c.post("/v1/hooks/flux", content=ev, headers=signed(ev))
    assert mr.status_code == 200 and fx.status_code == 200 and len(temporal.signals) == 1, (mr.text, fx.text)
    assert len(calls) == 2  # one orjson parse each


# ---------------------------------------------------------------- bounded cost per request


def hostile_report(results: int = HOSTILE_RESULTS) -> bytes:
    return b'{"SchemaVersion": 2, "ArtifactName": "x", "Results": [' + b",".join([b"{}"] * results) + b"]}"


async def test_a_report_of_3m_empty_results_is_413_before_any_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    data = hostile_report()
    assert 8_500_000 < len(data) < 9_500_000
    parsed: list[int] = []
    real_loads = orjson.loads
    monkeypatch.setattr(ingest.orjson, "loads", lambda b: parsed.append(len(b)) or real_loads(b))
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        for path in ("/v1/reports/trivy", "/v1/reports", "/v1/signals/alertmanager"):
            r = await c.post(path, content=data, headers=AUTH)
            assert r.status_code == 413, (path, r.text)
            assert r.json()["field"] == "body" and "FIXLOOP_GATEWAY_MAX_JSON_VALUES" in r.json()["error"]
        healthy = await c.get("/healthz")
        text = (await c.get("/metrics")).text
    assert parsed == [] and fake.calls == []  # refused on the byte counts: nothing was parsed, nothing sent
    assert healthy.status_code == 200
    assert metric(text, "fixloop_gateway_deliveries_rejected_total", endpoint="reports/trivy", reason="too_large") == 1


async def test_commas_and_brackets_inside_strings_do_not_count() -> None:
    """A real report whose strings hold more ``,{[`` than the value limit is parsed: the exact count is taken
    before refusing."""
    doc = orjson.loads(body(TRIVY))
    doc["Results"][0]["Vulnerabilities"][0]["Description"] = ",{[" * 20_000
    data = orjson.dumps(doc)
    assert value_bound(data) > 50_000 > count_values(data)
    fake = FakeClient()
    async with http(make_app(connecting(fake), max_json_values=50_000)) as c:
        r = await c.post("/v1/reports/trivy", content=data, headers=AUTH)
    assert r.status_code == 202, r.text


def first_only(items: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """``items`` with each of their ``keys`` lists cut to its first element (so that copies of an item add one
    element to the nested lists, not all of them)."""
    for item in items:
        for key in keys:
            if isinstance(item.get(key), list):
                item[key] = item[key][:1]
    return items


def osv_packages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The packages of an OSV-Scanner report's first result, the only one left."""
    del doc["results"][1:]
    return first_only(doc["results"][0]["packages"], "vulnerabilities", "groups")


@pytest.mark.parametrize(
    ("rel", "path", "grow", "field"),
    [
        (TRIVY, "/v1/reports/trivy", lambda d: d["Results"][0]["Vulnerabilities"], "Results[].Vulnerabilities"),
        (TRIVY, "/v1/reports", lambda d: first_only(d["Results"], "Vulnerabilities"), "Results"),
        (ALERTMANAGER, "/v1/signals/alertmanager", lambda d: d["alerts"], "alerts"),
        ("grype/dd-grype-0.28_vulnerable-image.json", "/v1/reports/grype", lambda d: d["matches"], "matches"),
        (
            "osv-scanner/dd-osv-scanner_many_findings.json",
            "/v1/reports/osv",
            osv_packages,
            "results[].packages",
        ),
        ("gitlab/dd-gl-dependency-scanning_gemnasium_gosum_6vulns.json", "/v1/reports/gitlab", lambda d: d["vulnerabilities"], "vulnerabilities"),  # noqa: E501
    ],
)
async def test_a_finding_list_over_the_element_limit_is_413_naming_it(
    rel: str, path: str, grow: Any, field: str
) -> None:
    doc = orjson.loads(body(rel))
    items = grow(doc)
    limit = 40
    items[:] = (items * (limit // len(items) + 1))[: limit + 1]  # real elements, one more than the limit
    fake = FakeClient()
    async with http(make_app(connecting(fake), max_elements=limit)) as c:
        over = await c.post(path, content=orjson.dumps(doc), headers=AUTH)
        del items[limit:]
        at = await c.post(path, content=orjson.dumps(doc), headers=AUTH)
    assert over.status_code == 413, over.text
    assert over.json()["field"] == field and "FIXLOOP_GATEWAY_MAX_ELEMENTS" in over.json()["error"]
    assert at.status_code in (200, 202), at.text
    assert len(fake.calls) == (1 if at.status_code == 202 else 0)  # the refused one sent nothing


# ---------------------------------------------------------------- client disconnects


@pytest.mark.parametrize(("path", "headers"), [("/v1/hooks/flux", {}), ("/v1/signals/datadog", AUTH)])
async def test_a_client_gone_mid_body_is_a_warning_without_traceback(
    path: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(connecting(FakeClient()))
    data = body(DATADOG)
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": data[:40], "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    hdrs = {"content-type": "application/json", "content-length": str(len(data))}
    hdrs.update((k.lower(), v) for k, v in headers.items())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8787),
    }
    with caplog.at_level(logging.INFO):
        await app(scope, receive, send)
    records = [r for r in caplog.records if r.name.startswith("fixloop")]
    assert any(r.levelno == logging.WARNING and "client gone" in r.getMessage() for r in records), records
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in records), [r.getMessage() for r in records]
    async with http(app) as c:
        text = (await c.get("/metrics")).text
    endpoint = path.removeprefix("/v1/")
    assert metric(text, "fixloop_gateway_deliveries_rejected_total", endpoint=endpoint, reason="client_disconnect") == 1
    assert metric(text, "fixloop_gateway_deliveries_rejected_total", endpoint=endpoint, reason="internal_error") == 0


# ---------------------------------------------------------------- Temporal down: a fast 503


class Proxy:
    """A TCP forwarder on 127.0.0.1 to ``target``: Temporal as the gateway sees it. ``down()`` closes the listener
    and every forwarded connection, so the address refuses connections as a killed Temporal's does."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def up(self) -> str:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


async def test_temporal_down_is_503_with_retry_after_within_2_s(
    dev: WorkflowEnvironment,  # noqa: F811 - the fixture
    task_queue: str,  # noqa: F811 - the fixture
) -> None:
    """The gateway's own connect (``fixloop.app.temporal.connect`` with FIXLOOP_GATEWAY_CONNECT_TIMEOUT, as ``fixloop
    gateway`` calls it) to a Temporal that answers, then is killed (its port refuses)."""
    proxy = Proxy(dev.client.service_client.config.target_host)
    address = await proxy.up()
    gw = GatewaySettings(token=TOKEN, scope=f"hardening-{uuid.uuid4().hex[:8]}/gitops")

    async def connect() -> Any:
        settings = TemporalSettings(address=address, namespace=dev.client.namespace)
        return await temporal_connect(settings, timeout=gw.connect_timeout)

    app = make_app(connect, task_queue=task_queue, scope=gw.scope)
    async with http(app) as c:
        up = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        await proxy.down()
        started = time.monotonic()
        one = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        single = time.monotonic() - started
        started = time.monotonic()
        many = await asyncio.gather(
            *(c.post("/v1/signals/alertmanager", content=body(ALERTMANAGER), headers=AUTH) for _ in range(5))
        )
        concurrent = time.monotonic() - started
    assert up.status_code == 202, up.text
    for r in (one, *many):
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert single < 2.5 and concurrent < 2.5, (single, concurrent)  # not 10-15 s


# ---------------------------------------------------------------- Flux replays


class FluxTemporal:
    """A Temporal client for the Flux hook: one loop awaiting its deploy; records every deploy_event signal."""

    def __init__(self, fail: int = 0) -> None:
        self.signals: list[Any] = []
        self.fail = fail

    async def list_workflows(self, query: str, limit: int) -> AsyncIterator[Any]:
        class Listed:
            id = "remediate/platform/gitops/wi-0"

        yield Listed()

    def get_workflow_handle(self, wid: str) -> Any:
        outer = self

        class Handle:
            async def signal(self, fn: Any, arg: Any) -> None:
                if outer.fail:
                    outer.fail -= 1
                    raise RuntimeError("Temporal hiccup")
                outer.signals.append((wid, arg))

        return Handle()


async def test_a_signed_flux_event_replayed_5_times_reaches_the_loops_once() -> None:
    temporal = FluxTemporal(fail=1)  # the first delivery does not reach Temporal: 503, and Flux retries it
    ev = body(FLUX_FAILED)  # the recorded event, timestamp rewritten to now
    async with http(make_app(connecting(temporal))) as c:
        failed = await c.post("/v1/hooks/flux", content=ev, headers=signed(ev))
        answers = [await c.post("/v1/hooks/flux", content=ev, headers=signed(ev)) for _ in range(5)]
        concurrent = flux_event(body(FLUX_FAILED), datetime.now(UTC) - timedelta(seconds=5))  # another event
        together = await asyncio.gather(
            *(c.post("/v1/hooks/flux", content=concurrent, headers=signed(concurrent)) for _ in range(5))
        )
    assert failed.status_code == 503  # not delivered, so not remembered: its retry below is delivered
    assert [r.status_code for r in answers + together] == [200] * 10
    assert answers[0].json()["loops"] == ["remediate/platform/gitops/wi-0"]
    assert all("already delivered" in r.json()["ignored"] for r in answers[1:])
    assert sum("loops" in r.json() for r in together) == 1
    assert len(temporal.signals) == 2  # one per event, whatever the replays


@pytest.mark.parametrize(("age", "says"), [(timedelta(minutes=11), "old"), (-timedelta(minutes=10), "ahead")])
async def test_a_stale_or_future_flux_event_is_422_and_changes_nothing(age: timedelta, says: str) -> None:
    temporal = FluxTemporal()
    ev = flux_event(body(FLUX_FAILED), datetime.now(UTC) - age)
    async with http(make_app(connecting(temporal))) as c:
        r = await c.post("/v1/hooks/flux", content=ev, headers=signed(ev))
    assert r.status_code == 422 and r.json()["field"] == "timestamp" and says in r.json()["error"], r.text
    assert temporal.signals == []


def succeeded(at: datetime) -> bytes:
    """FLUX_FAILED's event as its success: severity info, reason ReconciliationSucceeded, the same revision."""
    doc = json.loads(flux_event(body(FLUX_FAILED), at))
    doc.update(severity="info", reason="ReconciliationSucceeded", message="Reconciliation finished")
    return json.dumps(doc).encode()


async def test_a_revision_flux_applied_is_told_to_the_intake_once_for_the_culprit_of_later_incidents() -> None:
    temporal = FluxTemporal()
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    ev = succeeded(at)
    async with http(make_app(connecting(temporal))) as c:
        answers = [await c.post("/v1/hooks/flux", content=ev, headers=signed(ev)) for _ in range(3)]
        failed = await c.post("/v1/hooks/flux", content=(f := flux_event(body(FLUX_FAILED))), headers=signed(f))
    assert [r.status_code for r in answers] == [200] * 3 and failed.status_code == 200
    told = [(wid, arg) for wid, arg in temporal.signals if wid.startswith("intake/")]
    assert len(told) == 1, temporal.signals  # once, whatever the replays; a failed reconciliation applied nothing
    wid, arg = told[0]
    assert wid == f"intake/{SCOPE}"
    (revision,) = arg.revisions
    assert (revision.sha, revision.at, revision.source) == ("731f7eaddfb6af01cb2173e18f0f75b0ba780ef1", at, "event")


# ---------------------------------------------------------------- connection deadlines (a real uvicorn server)

DEADLINE = 5.0  # seconds a test waits for the server to close a connection (the configured timeouts are < 1 s)


@asynccontextmanager
async def served(**limits: Any) -> AsyncIterator[tuple[str, int]]:
    """The gateway app on a real uvicorn server (``fixloop.app.gateway.server.server``) on 127.0.0.1."""
    gw = GatewaySettings(token=TOKEN, scope=SCOPE, **limits)
    app = make_app(connecting(FakeClient()), **limits)
    sock = httpserver.listen("127.0.0.1", 0)
    server = httpserver.server(app, gw)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(DEADLINE):
            while not server.started:
                await asyncio.sleep(0.01)
        yield sock.getsockname()
    finally:
        server.should_exit = True
        await task
        sock.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when (fails if it is still open after
    ``seconds``)."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), seconds)  # read() returns at EOF
    return data, time.monotonic() - started


LIMITS = {"header_timeout": 0.5, "body_timeout": 0.5, "keep_alive_timeout": 1, "max_header_bytes": 4096}


async def test_idle_and_slow_sockets_are_closed_within_the_timeouts() -> None:
    async with served(**LIMITS) as (host, port):
        idle = await asyncio.open_connection(host, port)  # sends nothing
        slow_headers = await asyncio.open_connection(host, port)
        slow_headers[1].write(b"POST /v1/signals/datadog HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        slow_body = await asyncio.open_connection(host, port)
        slow_body[1].write(
            b"POST /v1/signals/datadog HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-Fixloop-Token: {TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode()
            + body(DATADOG)[:100]
        )
        keep_alive = await asyncio.open_connection(host, port)
        keep_alive[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        big_headers = await asyncio.open_connection(host, port)
        big_headers[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8192)
        results = await asyncio.gather(
            *(closed_within(r, DEADLINE) for r, _ in (idle, slow_headers, slow_body, keep_alive, big_headers))
        )
        for _, w in (idle, slow_headers, slow_body, keep_alive, big_headers):
            w.close()
    (idle_got, t_idle), (hdr_got, t_hdr), (body_got, t_body), (ka_got, t_ka), (big_got, _) = results
    assert idle_got.startswith(b"HTTP/1.1 408 ") and hdr_got.startswith(b"HTTP/1.1 408 "), (idle_got, hdr_got)
    assert body_got.startswith(b"HTTP/1.1 408 "), body_got
    assert ka_got.startswith(b"HTTP/1.1 200 ") and ka_got.count(b"HTTP/1.1") == 1, ka_got  # answered, then closed
    assert big_got.startswith(b"HTTP/1.1 431 "), big_got
    assert 0.4 < t_idle < 2 and 0.4 < t_hdr < 2 and 0.4 < t_body < 2 and t_ka < 3, (t_idle, t_hdr, t_body, t_ka)


async def test_a_normal_keep_alive_client_is_served_and_healthz_answers_during_a_hostile_report() -> None:
    async with served(**LIMITS) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        data = body(DATADOG)
        for _ in range(3):  # keep-alive: three requests on one connection
            writer.write(
                b"POST /v1/signals/datadog HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"X-Fixloop-Token: {TOKEN}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await asyncio.wait_for(reader.readexactly(length), DEADLINE)
            assert head.startswith(b"HTTP/1.1 202 "), head
        writer.close()

        hostile = hostile_report()
        hr, hw = await asyncio.open_connection(host, port)
        hw.write(
            b"POST /v1/reports/trivy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-Fixloop-Token: {TOKEN}\r\nContent-Length: {len(hostile)}\r\nConnection: close\r\n\r\n".encode()
        )
        hw.write(hostile)
        health_r, health_w = await asyncio.open_connection(host, port)
        health_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        health, _ = await closed_within(health_r, 2.0)
        refused, _ = await closed_within(hr, DEADLINE)
        hw.close()
        health_w.close()
    assert health.startswith(b"HTTP/1.1 200 "), health
    assert refused.startswith(b"HTTP/1.1 413 ") and b"MAX_JSON_VALUES" in refused, refused[:300]


# ---------------------------------------------------------------- properties of the limits

_text = st.text(alphabet=',{["\\]}: a\u00e9\U0001f600')  # what a naive count would take for structure
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(_text, kids, max_size=5),
    max_leaves=40,
)


def _values(v: Any) -> int:
    if isinstance(v, list):
        return 1 + sum(_values(x) for x in v)
    if isinstance(v, dict):
        return 1 + sum(_values(x) for x in v.values())
    return 1


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_json, indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans())
def test_the_value_count_never_under_counts(doc: Any, indent: int | None, ascii_only: bool) -> None:
    data = json.dumps(doc, indent=indent, ensure_ascii=ascii_only).encode()
    exact = _values(doc)
    assert value_bound(data) >= count_values(data) >= exact
    assert count_values(data) <= exact + data.count(b"{") + data.count(b"[")  # and strings are not counted
    if count_values(data) > exact:  # refused only when the counts, not the strings, are over
        with pytest.raises(TooMany):
            decode(data, "p", max_values=exact)
    decode(data, "p", max_values=count_values(data))


@settings(max_examples=300, deadline=None)
@given(doc=_json, extra=st.integers(0, 90), limit=st.integers(2, 80))
def test_the_depth_limit_is_exact(doc: Any, extra: int, limit: int) -> None:
    deep = {"wrapped": doc, "deep": nested(extra)} if extra else doc
    data = json.dumps(deep).encode()
    if _depth(deep) > limit:
        with pytest.raises(TooDeep):
            decode(data, "p", max_depth=limit)
    else:
        assert decode(data, "p", max_depth=limit) == deep


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 60), limit=st.integers(1, 50))
def test_the_element_count_is_exact(n: int, limit: int) -> None:
    doc = json.loads(body(ALERTMANAGER))
    doc["alerts"] = (doc["alerts"] * (n + 1))[:n]
    if n > limit:
        with pytest.raises(TooMany) as e:
            check_elements(doc, Source.ALERTMANAGER, "p", limit)
        assert (e.value.field, e.value.count) == ("alerts", n)
    else:
        check_elements(doc, Source.ALERTMANAGER, "p", limit)
