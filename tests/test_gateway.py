"""The gateway (``fixloop.app.gateway``): HTTP behaviour with a fake Temporal client, then on the real dev server the
paths that need Temporal itself: a re-delivered Datadog webhook is one signal in the intake, a delivery refused
while Temporal is down is accepted once it is back with nothing lost, and GitLab/Flux webhooks reach a parked loop.

Inputs are the real payloads of ``tests/fixtures`` (see its SOURCES.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from fixloop.app.gateway import GatewaySettings, create_app, json_path
    from fixloop.app.ingest import ingest_file
    from fixloop.app.temporal import connect as temporal_connect
    from fixloop.app.worker import build_worker
    from fixloop.core.config import IntakeSettings, TemporalSettings
    from fixloop.core.gate import MergeRequestState, MrState
    from fixloop.core.models import WorkItem, WorkItemKind
    from fixloop.core.triage import triage_rules
    from fixloop.integrations.datadog import webhook as datadog_webhook
    from fixloop.integrations.flux import FluxSettings
    from fixloop.integrations.gitlab.webhook import WebhookSettings
    from fixloop.workflows import options as policies
    from fixloop.workflows.contracts.intake import SignalBatch, intake_id
    from fixloop.workflows.contracts.loop import LoopOptions, Outcome, RemediationInput, Stage, loop_id
    from fixloop.workflows.intake import IntakeWorkflow
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.conftest import fixture, flux_event, signals
    from tests.devserver import dev  # noqa: F401 - the fixture
    from tests.workflows.world import HEAD, World, approval

TOKEN = "gw-token-5f1c8e0b"
GITLAB_TOKEN = "gl-hook-token-9d2a"
FLUX_KEY = "flux-hmac-key-77e1"
SECRETS = (TOKEN, GITLAB_TOKEN, FLUX_KEY)
SCOPE = "platform/gitops"
JSON = {"Content-Type": "application/json"}
AUTH = {**JSON, "X-Fixloop-Token": TOKEN}
GITLAB = {**JSON, "X-Gitlab-Token": GITLAB_TOKEN, "X-Gitlab-Event": "Merge Request Hook"}
DATADOG = "datadog/inres-docs_query_alert_monitor_triggered_P1.json"
ALERTMANAGER = "alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json"
MR_HOOK = "recorded/gitlab/go-gitlab_webhook_merge_request.json"
FLUX_FAILED = "recorded/flux/nc-docs-v1beta3_generic-webhook-body_kustomization.json"  # apps/webapp, error
FLUX_PROGRESSING = "recorded/flux/captured_notification-sink_kustomization_progressing.json"
FLUX_SHA = "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"  # the revision of FLUX_FAILED


def body(rel: str) -> bytes:
    """A fixture's bytes; a recorded Flux event with its ``timestamp`` rewritten to now (the gateway refuses stale
    events: ``flux_event``)."""
    data = fixture(rel).read_bytes()
    return flux_event(data) if rel.startswith("recorded/flux/") else data


def signed(data: bytes, key: str = FLUX_KEY, algo: str = "sha256") -> dict[str, str]:
    return {**JSON, "X-Signature": f"{algo}={hmac.new(key.encode(), data, getattr(hashlib, algo)).hexdigest()}"}


class FakeClient:
    """Stands in for a Temporal client in ``submit_signals``: records each signal-with-start, or fails."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, list[Any]]] = []

    async def start_workflow(self, fn: Any, arg: Any, *, id: str, start_signal_args: list[SignalBatch], **_: Any):
        self.calls.append((id, [s for batch in start_signal_args for s in batch.signals]))
        if self.fail is not None:
            raise self.fail


def connecting(client: Any) -> Callable[[], Awaitable[Any]]:
    async def connect() -> Any:
        return client

    return connect


async def refused() -> Client:
    raise RuntimeError("Failed client connect: Server connection error: Connection refused")


def make_app(connect: Callable[[], Awaitable[Any]], *, task_queue: str = "tq", **settings: Any) -> Any:
    return create_app(
        GatewaySettings(**{"token": TOKEN, "scope": SCOPE, **settings}),
        connect,
        task_queue=task_queue,
        intake=IntakeSettings(quiet_period=3600, window_max_age=7200),
        flux=FluxSettings(hmac_key=FLUX_KEY, kustomization="apps/webapp"),
        gitlab_webhook=WebhookSettings(token=GITLAB_TOKEN),
    )


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def mr_hook(
    *, branch: str, action: str, project: str = SCOPE, user: str = "alice", head: str = HEAD, iid: int = 7, **attrs: Any
) -> bytes:
    """GitLab's documented Merge Request Hook body (go-gitlab's recorded one) for a fixloop merge request."""
    doc = json.loads(body(MR_HOOK))
    doc["user"]["username"] = user
    doc["project"]["path_with_namespace"] = project
    oa = doc["object_attributes"]
    oa.update(source_branch=branch, action=action, iid=iid, **attrs)
    oa["last_commit"]["id"] = head
    return json.dumps(doc).encode()


# ---------------------------------------------------------------- HTTP behaviour (fake Temporal client)


async def test_a_datadog_webhook_is_answered_once_the_intake_has_it() -> None:
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        r = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
    expected = signals(DATADOG)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert (answer["signals"], answer["intake"]) == (1, intake_id(SCOPE))
    [(wid, sent)] = fake.calls
    assert wid == intake_id(SCOPE)
    assert [s.fingerprint for s in sent] == [s.fingerprint for s in expected]
    assert sent[0].raw_ref == f"delivery:{answer['delivery']}#"
    assert sent[0].model_dump(exclude={"raw_ref"}) == expected[0].model_dump(exclude={"raw_ref"})


async def test_alertmanager_and_bearer_token() -> None:
    fake = FakeClient()
    headers = {**JSON, "Authorization": f"Bearer {TOKEN}"}
    async with http(make_app(connecting(fake))) as c:
        r = await c.post("/v1/signals/alertmanager", content=body(ALERTMANAGER), headers=headers)
    assert r.status_code == 202, r.text
    assert [s.fingerprint for s in fake.calls[0][1]] == [s.fingerprint for s in signals(ALERTMANAGER)]


@pytest.mark.parametrize(
    "rel",
    [
        "trivy/trivy-0.22-fulldb_alpine-39.json",
        "grype/dd-grype-0.28_vulnerable-image.json",
        "snyk/dd-snyk_npm_1critical.json",
        "gitlab/dd-gl-dependency-scanning_gemnasium_gosum_6vulns.json",
        "osv-scanner/dd-osv-scanner_many_findings.json",
        "pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json",
        "fixloop/inspection_drift.json",
    ],
)
async def test_scanner_reports_give_the_signals_of_fixloop_ingest(rel: str) -> None:
    source = ingest_file(fixture(rel)).source
    assert source is not None
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        named = await c.post(f"/v1/reports/{source.value}", content=body(rel), headers=AUTH)
        detected = await c.post("/v1/reports", content=body(rel), headers=AUTH)
    expected = [s.fingerprint for s in signals(rel)]
    assert named.status_code == detected.status_code == 202, (named.text, detected.text)
    assert named.json()["signals"] == detected.json()["signals"] == len(expected)
    assert [[s.fingerprint for s in sent] for _, sent in fake.calls] == [expected, expected]


async def test_a_report_without_findings_is_200_and_sends_nothing() -> None:
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        r = await c.post(
            "/v1/reports/pip-audit",
            content=body("pip-audit/dd-pip-audit_dependencies-format_zero_vulns.json"),
            headers=AUTH,
        )
    assert (r.status_code, r.json()["signals"], r.json()["intake"], fake.calls) == (200, 0, None, [])


def _auth_cases() -> list[Any]:
    dd, am, mr, ev = body(DATADOG), body(ALERTMANAGER), mr_hook(branch="fixloop/x", action="open"), body(FLUX_FAILED)
    hook = {**JSON, "X-Gitlab-Event": "Merge Request Hook"}
    cases = {
        "datadog, no token": ("/v1/signals/datadog", dd, JSON),
        "datadog, wrong token": ("/v1/signals/datadog", dd, {**JSON, "X-Fixloop-Token": TOKEN + "x"}),
        "datadog, the GitLab token": ("/v1/signals/datadog", dd, {**JSON, "X-Fixloop-Token": GITLAB_TOKEN}),
        "datadog, empty token": ("/v1/signals/datadog", dd, {**JSON, "X-Fixloop-Token": ""}),
        "alertmanager, wrong bearer": ("/v1/signals/alertmanager", am, {**JSON, "Authorization": "Bearer nope"}),
        "alertmanager, basic auth": ("/v1/signals/alertmanager", am, {**JSON, "Authorization": f"Basic {TOKEN}"}),
        "report, oversized token": ("/v1/reports/trivy", b"{}", {**JSON, "X-Fixloop-Token": TOKEN * 200}),
        "reports, no token": ("/v1/reports", b"{}", JSON),
        "gitlab, no token": ("/v1/hooks/gitlab", mr, hook),
        "gitlab, wrong token": ("/v1/hooks/gitlab", mr, {**hook, "X-Gitlab-Token": GITLAB_TOKEN[:-1]}),
        "gitlab, the gateway token": ("/v1/hooks/gitlab", mr, {**hook, "X-Gitlab-Token": TOKEN}),
        "flux, no signature": ("/v1/hooks/flux", ev, JSON),
        "flux, another key": ("/v1/hooks/flux", ev, signed(ev, key="other")),
        "flux, another body": ("/v1/hooks/flux", ev, signed(ev + b" ")),
        "flux, md5": ("/v1/hooks/flux", ev, signed(ev, algo="md5")),
        "flux, bare hex": ("/v1/hooks/flux", ev, {**JSON, "X-Signature": signed(ev)["X-Signature"][7:]}),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize(("path", "data", "headers"), _auth_cases())
async def test_each_auth_failure_is_401(path: str, data: bytes, headers: dict[str, str]) -> None:
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        r = await c.post(path, content=data, headers=headers)
    field = "X-Signature" if "flux" in path else "X-Gitlab-Token" if "gitlab" in path else "X-Fixloop-Token"
    assert r.status_code == 401, r.text
    assert r.json()["field"] == field and "missing or wrong" in r.json()["error"]
    assert fake.calls == []
    assert not any(secret in r.text for secret in SECRETS)


async def test_unconfigured_secrets_accept_nothing() -> None:
    app = create_app(
        GatewaySettings(token=None, scope=SCOPE),
        connecting(FakeClient()),
        task_queue="tq",
        intake=IntakeSettings(),
        flux=FluxSettings(hmac_key=None),
        gitlab_webhook=WebhookSettings(token=None),
    )
    ev = body(FLUX_FAILED)
    async with http(app) as c:
        answers = [
            await c.post("/v1/signals/datadog", content=body(DATADOG), headers={**JSON, "X-Fixloop-Token": ""}),
            await c.post("/v1/hooks/gitlab", content=b"{}", headers={**JSON, "X-Gitlab-Token": ""}),
            await c.post("/v1/hooks/flux", content=ev, headers=signed(ev, key="")),
        ]
    assert [r.status_code for r in answers] == [401, 401, 401]


def _bad_input_cases() -> list[Any]:
    am = json.loads(body(ALERTMANAGER))
    am["alerts"][0]["labels"] = "alertname=HighPodMemory"
    trivy = json.loads(body("trivy/trivy-0.22-fulldb_alpine-39.json"))
    trivy["Results"][0]["Vulnerabilities"][1]["PkgName"] = {"name": "musl"}
    no_iid = json.loads(mr_hook(branch="fixloop/x", action="open"))
    del no_iid["object_attributes"]["iid"]
    no_object = json.loads(body(FLUX_FAILED))
    del no_object["involvedObject"]
    truncated = b'{"title": "[Triggered] x", "event_type": '
    alpine, dd, gl = body("trivy/trivy-0.22-fulldb_alpine-39.json"), body(DATADOG), GITLAB
    plain_gl = {k: v for k, v in GITLAB.items() if k != "Content-Type"}

    def flux(data: bytes) -> tuple[bytes, dict[str, str]]:
        return data, signed(data)

    cases = {
        "datadog, truncated JSON": ("/v1/signals/datadog", truncated, AUTH, 400, "body"),
        "datadog, empty body": ("/v1/signals/datadog", b"", AUTH, 400, "body"),
        "datadog, an Alertmanager payload": ("/v1/signals/datadog", body(ALERTMANAGER), AUTH, 400, "title"),
        "alertmanager, a Datadog payload": ("/v1/signals/alertmanager", dd, AUTH, 400, "alerts"),
        "alertmanager, labels not an object": (
            "/v1/signals/alertmanager", json.dumps(am).encode(), AUTH, 422, "alerts[0].labels"
        ),
        "grype, a Trivy report": ("/v1/reports/grype", alpine, AUTH, 400, "matches"),
        "trivy, package name not text": (
            "/v1/reports/trivy", json.dumps(trivy).encode(), AUTH, 422, "Results[0].Vulnerabilities[1].PkgName"
        ),
        "reports, not a known format": ("/v1/reports", b'{"hello": "world"}', AUTH, 400, "body"),
        "reports, unknown source": ("/v1/reports/nessus", b"{}", AUTH, 404, "source"),
        "datadog, text/plain": ("/v1/signals/datadog", dd, {**AUTH, "Content-Type": "text/plain"}, 415, "Content-Type"),
        "datadog, form": (
            "/v1/signals/datadog", dd, {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, 415,
            "Content-Type",
        ),
        "datadog, latin-1": (
            "/v1/signals/datadog", dd, {**AUTH, "Content-Type": "application/json; charset=iso-8859-1"}, 415,
            "Content-Type",
        ),
        "datadog, gzip": ("/v1/signals/datadog", dd, {**AUTH, "Content-Encoding": "gzip"}, 415, "Content-Encoding"),
        "gitlab, no content type": ("/v1/hooks/gitlab", json.dumps(no_iid).encode(), plain_gl, 415, "Content-Type"),
        "gitlab, not JSON": ("/v1/hooks/gitlab", b"object_kind=merge_request", gl, 400, "body"),
        "gitlab, no object_kind": ("/v1/hooks/gitlab", b'{"object_attributes": {}}', gl, 400, "object_kind"),
        "gitlab, no iid": ("/v1/hooks/gitlab", json.dumps(no_iid).encode(), gl, 422, "object_attributes.iid"),
        "flux, not JSON": ("/v1/hooks/flux", *flux(b"severity=error"), 400, "body"),
        "flux, no involvedObject": ("/v1/hooks/flux", *flux(json.dumps(no_object).encode()), 422, "involvedObject"),
    }  # fmt: skip
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize(("path", "data", "headers", "status", "field"), _bad_input_cases())
async def test_bad_input_is_4xx_naming_the_field(
    path: str, data: bytes, headers: dict[str, str], status: int, field: str
) -> None:
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        r = await c.post(path, content=data, headers=headers)
    assert (r.status_code, r.json()["field"]) == (status, field), r.text
    assert r.json()["error"] and fake.calls == []


async def test_oversized_bodies_are_413_while_reading() -> None:
    fake = FakeClient()
    consumed = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(64):
            consumed += 1
            yield b" " * 1024

    async with http(make_app(connecting(fake), max_body_bytes=4096)) as c:
        declared = await c.post("/v1/reports/trivy", content=b" " * 5000, headers=AUTH)
        streamed = await c.post("/v1/reports/trivy", content=chunks(), headers=AUTH)  # chunked: no Content-Length
        fits = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
    assert (declared.status_code, declared.json()["field"]) == (413, "body")
    assert (streamed.status_code, streamed.json()["field"]) == (413, "body")
    assert consumed < 64  # refused as soon as the limit passed, not after reading it all
    assert fits.status_code == 202 and len(fake.calls) == 1


GARBAGE = [
    b"",
    b"   ",
    b"\xef\xbb\xbf",
    b"\xff\xfe\x00{",
    b"\x00" * 64,
    b"null",
    b"true",
    b"0",
    b"1e999",
    b"NaN",
    b'"text"',
    b"[]",
    b"{}",
    b"[{}]",
    b"[null]",
    b"[" * 5000,
    b'{"a":' * 3000,
    b'{"a": "\\ud800"}',
    b'{"alerts": null, "receiver": 1}',
    b'{"alerts": [null], "status": "firing"}',
    b'{"alerts": [{"labels": {"a": 1}, "startsAt": "yesterday"}], "version": "4"}',
    b'{"title": {"x": 1}, "event_type": []}',
    b'{"title": "[Triggered] x", "last_updated": "99999999999999999999999", "tags": 5}',
    b'{"SchemaVersion": 2, "Results": [{"Vulnerabilities": [null]}]}',
    b'{"SchemaVersion": 2, "Results": "none"}',
    b'[{"Target": "x", "Vulnerabilities": [{"VulnerabilityID": []}]}]',
    b'{"matches": "x", "source": 1}',
    b'{"vulnerabilities": {}, "version": 1}',
    b'{"vulnerabilities": [{"location": 3}], "scan": {}}',
    b'{"results": [1]}',
    b'{"results": [{"packages": [{"package": null}]}]}',
    b'{"dependencies": [1]}',
    b'{"dependencies": [{"name": "x", "version": "1", "vulns": [{"id": 1}]}]}',
    b'[{"vulnerabilities": [null], "packageManager": "npm"}]',
    b'{"object_kind": "merge_request"}',
    b'{"object_kind": "merge_request", "user": {}, "project": {}, "object_attributes": {"iid": 1e300}}',
    b'{"object_kind": 7}',
    b'{"involvedObject": {}, "severity": 1}',
    b'{"involvedObject": {"kind": "Kustomization", "name": "webapp", "namespace": "apps"}, "severity": "error", '
    b'"timestamp": "2022-10-28T07:26:19Z", "reason": "x", "reportingController": "k", "metadata": {"revision": 5}}',
]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/signals/datadog",
        "/v1/signals/alertmanager",
        "/v1/reports",
        *(f"/v1/reports/{s}" for s in ("trivy", "gitlab", "grype", "snyk", "osv", "pip-audit")),
        "/v1/hooks/gitlab",
        "/v1/hooks/flux",
    ],
)
async def test_garbage_bodies_never_get_a_500(path: str) -> None:
    rng = random.Random(path)
    garbage = [*GARBAGE, *(rng.randbytes(rng.randrange(1, 400)) for _ in range(20))]
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        for data in garbage:
            headers = signed(data) if path.endswith("flux") else GITLAB if path.endswith("gitlab") else AUTH
            r = await c.post(path, content=data, headers=headers)
            assert r.status_code < 500, (data[:80], r.text)
            answer = r.json()
            if r.status_code >= 400:
                assert answer["error"] and answer["field"], (data[:80], answer)


async def test_a_bug_is_a_500_without_details(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(doc: object, ctx: object) -> None:
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(datadog_webhook, "parse", broken)
    app = make_app(connecting(FakeClient()))
    async with http(app) as c:
        r = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        metrics = (await c.get("/metrics")).text
    assert r.status_code == 500 and "secret internals" not in r.text
    assert (
        metric(
            metrics, "fixloop_gateway_deliveries_rejected_total", endpoint="signals/datadog", reason="internal_error"
        )
        == 1
    )


async def test_temporal_unavailable_is_503_for_every_delivery() -> None:
    down = RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
    async with http(make_app(refused)) as c, http(make_app(connecting(FakeClient(fail=down)))) as broken:
        not_connected = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        again = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)  # connect is retried
        failing = await broken.post("/v1/signals/alertmanager", content=body(ALERTMANAGER), headers=AUTH)
        health = (await c.get("/healthz")).json()
        metrics = (await c.get("/metrics")).text
    for r in (not_connected, again, failing):
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert "Temporal is unavailable" in r.json()["error"]
    assert health["temporal"] == "not connected"
    assert (
        metric(metrics, "fixloop_gateway_deliveries_rejected_total", endpoint="signals/datadog", reason="unavailable")
        == 2
    )


ALERTS = [
    *(
        f"datadog/{n}"
        for n in (
            "inres-docs_query_alert_monitor_triggered_P1.json",
            "relay-integrations_test-notification_service_check_triggered.json",
        )
    ),
    *(
        f"alertmanager/{n}"
        for n in (
            "prometheus-msteams_grafana-inspired_promstack.json",
            "prometheus-msteams_prom_post_request_1alert.json",
            "promgen_alertmanager_v3_int-groupKey.json",
            "pythonwebhook_k8s_HighPodMemory_firing.json",
        )
    ),
]


async def _concurrent(app: Any, n: int) -> list[httpx.Response]:
    async with http(app) as c:
        posts = []
        for i in range(n):
            rel = ALERTS[i % len(ALERTS)]
            path = "/v1/signals/datadog" if rel.startswith("datadog") else "/v1/signals/alertmanager"
            posts.append(c.post(path, content=body(rel), headers=AUTH))
        return await asyncio.gather(*posts)


async def test_concurrent_deliveries_travel_in_one_temporal_call() -> None:
    n = 24
    fake = FakeClient()
    app = make_app(connecting(fake), batch_window_ms=100)
    answers = await _concurrent(app, n)
    async with http(app) as c:
        metrics = (await c.get("/metrics")).text
    assert [r.status_code for r in answers] == [202] * n
    assert 1 <= len(fake.calls) < n
    sent = sorted(s.fingerprint for _, batch in fake.calls for s in batch)
    delivered = [ALERTS[i % len(ALERTS)] for i in range(n)]
    assert sent == sorted(s.fingerprint for rel in delivered for s in signals(rel))  # every delivery, once
    assert metric(metrics, "fixloop_gateway_batch_deliveries_count") == len(fake.calls)
    assert metric(metrics, "fixloop_gateway_batch_deliveries_sum") == n


async def test_a_failed_batch_answers_every_delivery_503() -> None:
    n = 12
    fake = FakeClient(fail=RPCError("deadline", RPCStatusCode.DEADLINE_EXCEEDED, b""))
    answers = await _concurrent(make_app(connecting(fake), batch_window_ms=100), n)
    assert [r.status_code for r in answers] == [503] * n
    assert 1 <= len(fake.calls) < n


async def test_gitlab_hooks_fixloop_has_nothing_to_do_with_are_200_ignored() -> None:
    push = json.loads(body(MR_HOOK))
    push["object_kind"] = "push"
    async with http(make_app(refused)) as c:  # no Temporal needed to ignore them
        other_branch = await c.post(
            "/v1/hooks/gitlab", content=mr_hook(branch="ms-viewport", action="approved"), headers=GITLAB
        )
        near_miss = await c.post(
            "/v1/hooks/gitlab", content=mr_hook(branch="fixloop/wi-123", action="open"), headers=GITLAB
        )
        push_hook = await c.post(
            "/v1/hooks/gitlab", content=body(MR_HOOK), headers={**GITLAB, "X-Gitlab-Event": "Push Hook"}
        )
        system_push = await c.post(
            "/v1/hooks/gitlab", content=json.dumps(push).encode(), headers={**GITLAB, "X-Gitlab-Event": "System Hook"}
        )
    for r in (other_branch, near_miss, push_hook, system_push):
        assert r.status_code == 200 and r.json()["ignored"], r.text
    assert "not fixloop's" in other_branch.json()["ignored"]


async def test_flux_events_that_are_not_deploy_outcomes_are_200_ignored() -> None:
    ev = body(FLUX_PROGRESSING)  # a Progressing info event of another Kustomization
    async with http(make_app(refused)) as c:
        r = await c.post("/v1/hooks/flux", content=ev, headers=signed(ev))
    assert r.status_code == 200 and "not a deploy outcome" in r.json()["ignored"]


async def test_healthz_metrics_and_openapi() -> None:
    fake = FakeClient()
    async with http(make_app(connecting(fake))) as c:
        await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        await c.post("/v1/signals/datadog", content=b"{", headers=AUTH)
        await c.post("/v1/signals/datadog", content=body(DATADOG), headers=JSON)
        health = await c.get("/healthz")
        metrics = await c.get("/metrics")
        openapi = (await c.get("/openapi.json")).json()
        missing = await c.get("/v1/nothing")
    assert health.json() == {"status": "ok", "temporal": "connected", "scope": SCOPE, "intake": intake_id(SCOPE)}
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert metric(text, "fixloop_gateway_deliveries_received_total", endpoint="signals/datadog") == 4
    assert metric(text, "fixloop_gateway_deliveries_accepted_total", endpoint="signals/datadog") == 2
    for reason in ("malformed", "unauthorized"):
        assert metric(text, "fixloop_gateway_deliveries_rejected_total", endpoint="signals/datadog", reason=reason) == 1
    assert metric(text, "fixloop_gateway_signals_accepted_total", source="datadog") == 2
    assert metric(text, "fixloop_gateway_signal_duplicates_total", source="datadog") == 1  # the second delivery
    assert metric(text, "fixloop_gateway_request_duration_seconds_count", endpoint="signals/datadog") == 4
    assert set(openapi["paths"]) == {
        "/v1/signals/datadog",
        "/v1/signals/alertmanager",
        "/v1/reports",
        "/v1/reports/{source}",
        "/v1/hooks/gitlab",
        "/v1/hooks/flux",
        "/healthz",
        "/metrics",
    }
    assert set(openapi["components"]["securitySchemes"]) == {"fixloopToken", "gitlabToken", "fluxSignature"}
    assert (missing.status_code, missing.json()["error"]) == (404, "Not Found")


def test_json_path() -> None:
    assert json_path(("alerts", 0, "labels")) == "alerts[0].labels"
    assert json_path((0, "vulns", 2)) == "[0].vulns[2]"
    assert json_path(()) == "body"
    assert json_path(("tags", "list[str]", 3)) == "tags[3]" and json_path(("id", "int")) == "id"


# ---------------------------------------------------------------- on the real dev server


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def scope() -> str:
    return f"team/gitops-{uuid.uuid4().hex[:8]}"


async def test_a_datadog_webhook_delivered_twice_is_one_signal(dev: WorkflowEnvironment, task_queue: str) -> None:
    where = scope()
    app = make_app(connecting(dev.client), task_queue=task_queue, scope=where)
    async with build_worker(dev.client, task_queue), http(app) as c:
        first = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        retry = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
        intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(where))
        status = await intake.query(IntakeWorkflow.status)
        await intake.terminate("test done")
    assert [first.status_code, retry.status_code] == [202, 202]
    c_ = status.counters
    assert (c_.received, c_.new, c_.duplicates, status.pending) == (2, 1, 1, 1)


async def test_temporal_down_is_503_and_nothing_is_lost_once_it_is_back(
    dev: WorkflowEnvironment, task_queue: str
) -> None:
    where = scope()
    address = {"now": "127.0.0.1:1"}  # nothing listens there: Temporal is down

    async def connect() -> Client:
        return await temporal_connect(TemporalSettings(address=address["now"]))

    app = make_app(connect, task_queue=task_queue, scope=where)
    async with build_worker(dev.client, task_queue), http(app) as c:
        down = await c.post("/v1/signals/alertmanager", content=body(ALERTMANAGER), headers=AUTH)
        address["now"] = dev.client.service_client.config.target_host  # Temporal is back
        back = await c.post("/v1/signals/alertmanager", content=body(ALERTMANAGER), headers=AUTH)  # the retry
        intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(where))
        status = await intake.query(IntakeWorkflow.status)
        await intake.terminate("test done")
    assert down.status_code == 503 and back.status_code == 202
    expected = signals(ALERTMANAGER)
    assert back.json()["signals"] == len(expected)
    assert (status.counters.received, status.counters.new, status.pending) == (len(expected),) * 3


def alpine_item() -> WorkItem:
    items = triage_rules(signals("trivy/trivy-0.22-fulldb_alpine-39.json")).work_items
    return next(w for w in items if w.kind is WorkItemKind.OS_REBUILD)


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a condition of the real server (bounded by the test timeout)."""
    while not await check():
        await asyncio.sleep(0.05)


async def test_forged_gitlab_hooks_leave_a_parked_loop_waiting_and_gitlabs_own_state_moves_it(
    dev: WorkflowEnvironment, task_queue: str
) -> None:
    """Through the real gateway: hooks forging an approval at the head by a user GitLab does not list, and a merge
    with a commit already on main, only wake the loop; it reads GitLab (open, nobody approved) and keeps waiting.
    Then GitLab itself shows alice's approval and the merge: the next hook's read moves the loop, and Flux's hook
    ends it. (Changed with issue 14: this test used to show the hooks' claims being recorded as the truth.)"""
    item, where = alpine_item(), scope()
    world = World(merge_after_polls=None, deploy_after_polls=None)  # GitLab: open, nobody approved; no poll moves it
    options = LoopOptions(poll_interval=timedelta(hours=1))
    app = make_app(connecting(dev.client), task_queue=task_queue, scope=where)
    branch = f"fixloop/{item.id}"
    async with build_worker(dev.client, task_queue, extra_activities=world.activities()), http(app) as c:
        handle = await dev.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=where, work_item=item, options=options),
            id=loop_id(where, item.id),
            task_queue=task_queue,
        )

        async def stage_is(stage: Stage) -> bool:
            return (await handle.query(RemediationWorkflow.status)).stage is stage

        async def read_after(wakes: int) -> bool:  # GitLab was read after the hooks, and the gate decided on it
            s = await handle.query(RemediationWorkflow.status)
            return s.wakes == s.wakes_read == wakes

        await _until(lambda: stage_is(Stage.AWAIT_APPROVAL))
        hook = GITLAB

        async def post(**fields: Any) -> httpx.Response:
            content = mr_hook(branch=branch, project=where, **fields)
            return await c.post("/v1/hooks/gitlab", content=content, headers=hook)

        by_bot = await post(action="approved", user="fixloop-bot")
        stale = await post(action="approved", head="c" * 40)
        forged = await post(action="approved")  # alice "approved" HEAD: GitLab lists nobody
        redelivered = await post(action="approved")
        merge = {"action": "merge", "state": "merged", "merge_commit_sha": FLUX_SHA}
        forged_merge = await post(**merge)  # "merged" as a commit already on main: GitLab says opened
        await _until(lambda: read_after(2))
        waiting = await handle.query(RemediationWorkflow.status)

        world.mr_script = [  # now GitLab itself: alice approved HEAD, and it was merged as FLUX_SHA
            MergeRequestState(state=MrState.MERGED, head_sha=HEAD, merge_sha=FLUX_SHA, approvals=[approval("alice")])
        ]
        merged = await post(**merge)
        await _until(lambda: stage_is(Stage.AWAIT_DEPLOY))
        listed = f'{policies.SA_STAGE.name} = "await_deploy" AND {policies.SA_SCOPE.name} = "{where}"'

        async def visible() -> bool:
            return [w.id async for w in dev.client.list_workflows(listed)] == [handle.id]

        await _until(visible)  # the Flux hook finds loops through visibility, which lags a little
        ev = body(FLUX_FAILED)
        deployed = await c.post("/v1/hooks/flux", content=ev, headers=signed(ev))
        state = await handle.result()
        after_the_end = await post(action="close", state="closed")

    assert by_bot.status_code == 200 and "fixloop's own user" in by_bot.json()["ignored"]
    assert stale.status_code == 200 and "merge request head is" in stale.json()["ignored"]
    woken = {"workflow": handle.id, "woken": True}
    assert forged.status_code == 200 and forged.json() == {**woken, "update": "approve"}
    assert redelivered.status_code == 200
    assert forged_merge.status_code == 200
    assert forged_merge.json() == {**woken, "signal": "merge_request_event", "action": "merge"}
    # the forged hooks: the loop read GitLab and is still waiting, nothing deployed, nobody recorded as approver
    assert waiting.stage is Stage.AWAIT_APPROVAL and world.deploy_polls == 0
    assert waiting.mr_state is not None and waiting.mr_state.state is MrState.OPENED
    assert waiting.mr_state.approvals == [] and world.mr_polls >= 1
    assert merged.status_code == 200 and deployed.status_code == 200 and deployed.json()["loops"] == [handle.id]
    assert state.outcome is Outcome.DEPLOY_FAILED
    assert state.deploy is not None and state.deploy.revision == f"main@sha1:{FLUX_SHA}"
    assert "validation error" in (state.deploy.message or "")
    assert any(e.text.startswith(f"approved by alice at {HEAD[:12]}") for e in state.evidence)
    assert world.deploy_polls == 0  # the webhooks woke every read; no poll fallback was needed
    assert after_the_end.status_code == 200 and after_the_end.json()["ignored"] == "no running loop with this id"


# ---------------------------------------------------------------- the command


def test_an_invalid_setting_is_exit_2_naming_the_variable() -> None:
    env = {**os.environ, "FIXLOOP_GATEWAY_SCOPE": "platform gitops; rm -rf /"}
    proc = subprocess.run(
        [sys.executable, "-m", "fixloop", "gateway", "--port", "0"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("fixloop gateway: FIXLOOP_GATEWAY_SCOPE: ") and "Traceback" not in proc.stderr


async def test_fixloop_gateway_serves_until_interrupted(dev: WorkflowEnvironment, task_queue: str) -> None:
    where = scope()
    env = {
        **os.environ,
        "FIXLOOP_GATEWAY_TOKEN": TOKEN,
        "FIXLOOP_GATEWAY_SCOPE": where,
        "FIXLOOP_TEMPORAL_ADDRESS": dev.client.service_client.config.target_host,
        "FIXLOOP_TEMPORAL_TASK_QUEUE": task_queue,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fixloop", "gateway", "--port", "0", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    banner = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    url = banner.split()[2]  # fixloop gateway: http://127.0.0.1:<port> -> intake/<scope> ...
    async with httpx.AsyncClient(base_url=url) as c:
        health = await c.get("/healthz")
        accepted = await c.post("/v1/signals/datadog", content=body(DATADOG), headers=AUTH)
    proc.send_signal(signal.SIGINT)
    code = await asyncio.wait_for(proc.wait(), 60)
    rest = (await proc.stderr.read()).decode()
    intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(where))
    described = await intake.describe()
    await intake.terminate("test done")
    assert f"-> intake/{where}" in banner and "FIXLOOP_FLUX_HMAC_KEY" in banner  # says what it refuses
    assert health.json()["temporal"] == "not connected"  # connected on the first delivery, not at start
    assert accepted.status_code == 202 and accepted.json()["intake"] == intake_id(where)
    assert described.task_queue == task_queue
    assert code == 0 and rest.endswith("fixloop gateway: stopped\n") and "Traceback" not in rest
    assert TOKEN not in banner + rest
