"""Byte budgets end to end (issue 14, finding 2): oversized but schema-valid deliveries through the real gateway app
into the real intake on the Temporal dev server (which enforces Temporal's 2 MiB per payload and 4 MiB per request),
and the gateway's byte-sized batching with a fake client.

The deliveries are the attack's shapes, built from real fixtures (tests/fixtures/SOURCES.md): an Alertmanager
notification widened to 50 alerts x 70 labels x 500 characters (2.2 MB), a Trivy finding with 5,000 vendor ids of
500 characters, six Trivy reports of 0.55 MB posted at once."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import to_json
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from fixloop.app.gateway import GatewaySettings, create_app
    from fixloop.app.ingest import parse_document
    from fixloop.app.worker import build_worker
    from fixloop.core.config import IntakeSettings
    from fixloop.core.models import SIGNAL_MAX_BYTES, batched, signal_bytes
    from fixloop.core.triage import triage_rules
    from fixloop.integrations.flux import FluxSettings
    from fixloop.integrations.gitlab.webhook import WebhookSettings
    from fixloop.workflows.contracts.intake import IntakeStatus, intake_id
    from fixloop.workflows.contracts.loop import loop_id
    from fixloop.workflows.intake import IntakeWorkflow
    from tests.conftest import fixture, signals
    from tests.devserver import dev  # noqa: F401 - the fixture

TOKEN = "gw-token-budgets-31c7"
AUTH = {"Content-Type": "application/json", "X-Fixloop-Token": TOKEN}
ALERTMANAGER = "alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json"
TRIVY_ONE = "trivy/trivy-head_alpine-39.json"
TRIVY_REPORT = "trivy/trivy-0.22-fulldb_debian-stretch.json"
DEADLINE = 90.0  # seconds any awaited condition of the real server may take on a loaded 2-core runner


def make_app(client: Client, task_queue: str, scope: str, *, intake: IntakeSettings, **settings: Any) -> Any:
    async def connect() -> Client:
        return client

    return create_app(
        GatewaySettings(token=TOKEN, scope=scope, **settings),
        connect,
        task_queue=task_queue,
        intake=intake,
        flux=FluxSettings(hmac_key="unused-flux-key", kustomization="apps/webapp"),
        gitlab_webhook=WebhookSettings(token="unused-gitlab-token"),
    )


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=120)


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a condition of the real server, failing with ``what`` after ``DEADLINE`` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, f"not within {DEADLINE:.0f} s: {what}"
        await asyncio.sleep(0.1)


async def status(handle: WorkflowHandle[Any, Any]) -> IntakeStatus | None:
    """The intake's ``status``, or None while the query fails (an intake whose workflow task keeps failing)."""
    try:
        return await asyncio.wait_for(handle.query(IntakeWorkflow.status), 15)
    except (RPCError, TimeoutError):
        return None


def widened_alertmanager(post: int, alerts: int = 50, labels: int = 70, chars: int = 500) -> bytes:
    """The real Alertmanager notification with ``alerts`` alerts of ``labels`` extra labels of ``chars`` characters
    each (distinct per ``post`` and alert, Alertmanager's fingerprint left for the parser to compute) and a long
    description."""
    doc = json.loads(fixture(ALERTMANAGER).read_bytes())
    template = doc["alerts"][0]
    doc["alerts"] = []
    for i in range(alerts):
        alert = copy.deepcopy(template)
        del alert["fingerprint"]
        alert["labels"].update({f"label_{k:02d}": f"{post}-{i}-{k}-".ljust(chars, "x") for k in range(labels)})
        alert["annotations"]["description"] = "d" * 8_000  # the rest of the attack's 2.2 MB
        doc["alerts"].append(alert)
    return json.dumps(doc).encode()


def trivy_with_vendor_ids(n: int = 5_000, chars: int = 500) -> bytes:
    """The real Trivy report of alpine 3.9 cut to its first finding, given ``n`` vendor ids of ``chars`` characters
    (Trivy's ``VendorIDs``: DSA-, RHSA-, ALAS- ids of the same vulnerability)."""
    doc = json.loads(fixture(TRIVY_ONE).read_bytes())
    result = doc["Results"][0]
    result["Vulnerabilities"] = result["Vulnerabilities"][:1]
    result["Vulnerabilities"][0]["VendorIDs"] = [f"VENDOR-{i:05d}-".ljust(chars, "v") for i in range(n)]
    doc["Results"] = [result]
    return json.dumps(doc).encode()


def trivy_report(copy_no: int, target_bytes: int = 550_000) -> bytes:
    """A real Trivy report (Debian stretch) as a 0.55 MB report of its own image: the fields fixloop does not read
    left out, each finding given 10 vendor ids of 500 characters (within the signal's bounds, ~5.5 KB a signal), and
    repeated under new advisory ids, so its signals are about as large as the body."""
    doc = json.loads(fixture(TRIVY_REPORT).read_bytes())
    doc["ArtifactName"] = f"registry.example.com/app-{copy_no}:1.0"
    keep = ("VulnerabilityID", "PkgName", "InstalledVersion", "FixedVersion", "Severity", "Title", "PrimaryURL")
    result = doc["Results"][0]
    found = [{k: v[k] for k in keep if k in v} for v in result["Vulnerabilities"]]
    result["Vulnerabilities"], round_ = [], 0
    while len(json.dumps(doc)) < target_bytes:
        for v in found:
            vid = f"{v['VulnerabilityID']}-{round_}"
            vendor_ids = [f"{vid}-vendor-{i}-".ljust(500, "v") for i in range(10)]
            result["Vulnerabilities"].append({**v, "VulnerabilityID": vid, "VendorIDs": vendor_ids})
            if len(json.dumps(doc)) >= target_bytes:
                break
        round_ += 1
    doc["Results"] = [result]
    return json.dumps(doc).encode()


def signals_of(data: bytes) -> list[Any]:
    return parse_document(json.loads(data), ref="delivery:test", received_at=datetime.now(UTC)).signals


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def new_scope() -> str:
    return f"team/gitops-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- on the real dev server


async def test_oversized_alertmanager_posts_do_not_stall_the_intake(dev: WorkflowEnvironment, task_queue: str) -> None:
    """Three 2.2 MB schema-valid Alertmanager posts are accepted (their signals cut to 16 KiB each) or refused 4xx
    naming the field; the intake keeps answering ``status`` and then triages a normal alert into a loop.
    Before the budgets: 202 for all, then a triage input of ~5 MB, ``PayloadsTooLarge`` forever."""
    scope = new_scope()
    app = make_app(dev.client, task_queue, scope, intake=IntakeSettings(quiet_period=1, window_max_age=30))
    posts = [widened_alertmanager(p) for p in range(3)]
    assert all(len(p) > 2_100_000 for p in posts)
    intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
    async with build_worker(dev.client, task_queue), http(app) as c:
        answers = [await c.post("/v1/signals/alertmanager", content=p, headers=AUTH) for p in posts]
        accepted = 0
        for a in answers:
            assert a.status_code == 202 or (400 <= a.status_code < 500 and a.json()["field"]), a.text
            accepted += a.json()["signals"] if a.status_code == 202 else 0

        async def triaged(n: int) -> bool:  # every signal through triage: assigned to a work item or not
            s = await status(intake)
            done = s is not None and s.counters.assigned + s.counters.unassigned == n
            return done and s.counters.new == n and s.pending == 0 and s.counters.windows >= 1

        if accepted:
            await until(f"the {accepted} oversized alerts are triaged", lambda: triaged(accepted))
        normal = await c.post("/v1/signals/alertmanager", content=fixture(ALERTMANAGER).read_bytes(), headers=AUTH)
        assert normal.status_code == 202, normal.text
        await until("the normal alert is triaged", lambda: triaged(accepted + 1))
        final = await status(intake)
        assert final is not None
        item = triage_rules(signals(ALERTMANAGER)).work_items[0]
        loop = dev.client.get_workflow_handle(loop_id(scope, item.id))
        described = await loop.describe()  # the normal alert's loop was started
        await loop.terminate("test done")
        await intake.terminate("test done")
    c_ = final.counters
    assert c_.received == c_.new == accepted + 1 and c_.assigned + c_.unassigned == c_.new
    assert described.workflow_type == "RemediationWorkflow"


async def test_a_finding_with_5000_long_vendor_ids_is_accepted_and_reaches_the_intake(
    dev: WorkflowEnvironment, task_queue: str
) -> None:
    """One Trivy finding with 5,000 vendor ids of 500 characters (2.5 MB of aliases): 202, and the intake has it.
    Before the budgets: a 2.5 MB signal-with-start, refused by Temporal, answered 503 forever."""
    scope = new_scope()
    app = make_app(dev.client, task_queue, scope, intake=IntakeSettings(quiet_period=3600, window_max_age=7200))
    report = trivy_with_vendor_ids()
    [finding] = signals_of(report)
    assert finding.truncated["aliases"] == 5_000 - len(finding.aliases) > 4_900  # counted, not silently lost
    assert signal_bytes(finding) <= SIGNAL_MAX_BYTES
    intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
    async with build_worker(dev.client, task_queue), http(app) as c:
        answer = await c.post("/v1/reports/trivy", content=report, headers=AUTH)
        assert answer.status_code == 202, answer.text
        s = await status(intake)
        await intake.terminate("test done")
    assert (answer.json()["signals"], answer.json()["truncated"]) == (1, 1)  # the sender is told one was cut
    assert s is not None and (s.counters.received, s.pending) == (1, 1)


async def test_six_concurrent_half_megabyte_reports_all_get_2xx(dev: WorkflowEnvironment, task_queue: str) -> None:
    """Six 0.55 MB Trivy reports posted at once, gathered into one batch window (2 s): every one is answered 202
    and every signal is in the intake. Before the budgets: one call with all six (~3 MB), refused, 503 for all."""
    scope = new_scope()
    app = make_app(
        dev.client,
        task_queue,
        scope,
        intake=IntakeSettings(quiet_period=3600, window_max_age=7200),
        batch_window_ms=2_000,
    )
    reports = [trivy_report(k) for k in range(6)]
    sizes = [sum(map(signal_bytes, signals_of(r))) for r in reports]
    assert all(540_000 < len(r) < 600_000 for r in reports) and min(sizes) > 450_000  # six together: > 2 MiB
    intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
    async with build_worker(dev.client, task_queue), http(app) as c:
        answers = await asyncio.gather(*(c.post("/v1/reports/trivy", content=r, headers=AUTH) for r in reports))
        assert [a.status_code for a in answers] == [202] * 6, [a.text[:200] for a in answers]
        total = sum(a.json()["signals"] for a in answers)

        async def received() -> bool:
            s = await status(intake)
            return s is not None and s.counters.received == s.counters.new == total

        await until(f"the intake has all {total} signals", received)
        await intake.terminate("test done")


# ---------------------------------------------------------------- the gateway's batches (fake Temporal client)


class RecordingClient:
    """Stands in for a Temporal client: records the JSON bytes of each signal-with-start's batch, or refuses."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[int, int]] = []  # (signals, bytes) per call

    async def start_workflow(self, fn: Any, arg: Any, *, start_signal_args: list[Any], **_: Any) -> None:
        if self.fail is not None:
            raise self.fail
        [batch] = start_signal_args
        self.calls.append((len(batch.signals), len(batch.model_dump_json())))


def fake_app(client: RecordingClient, **settings: Any) -> Any:
    async def connect() -> Any:
        return client

    return create_app(
        GatewaySettings(token=TOKEN, scope="platform/gitops", **settings),
        connect,
        task_queue="tq",
        intake=IntakeSettings(),
        flux=FluxSettings(hmac_key="unused-flux-key", kustomization="apps/webapp"),
        gitlab_webhook=WebhookSettings(token="unused-gitlab-token"),
    )


async def test_a_delivery_over_the_batch_budget_is_split_across_calls() -> None:
    client = RecordingClient()
    budget = 256 * 1024
    report = trivy_report(0)
    async with http(fake_app(client, batch_max_bytes=budget)) as c:
        answer = await c.post("/v1/reports/trivy", content=report, headers=AUTH)
    assert answer.status_code == 202, answer.text
    assert len(client.calls) >= 2 and all(size <= budget + 32 for _, size in client.calls)  # + {"signals":...}
    assert sum(n for n, _ in client.calls) == answer.json()["signals"] == len(signals_of(report))


async def test_temporal_refusing_a_payload_by_size_is_413_not_503() -> None:
    refused = RPCError("Blob data size exceeds limit.", RPCStatusCode.INVALID_ARGUMENT, b"")
    async with http(fake_app(RecordingClient(fail=refused))) as c:
        answer = await c.post("/v1/signals/alertmanager", content=fixture(ALERTMANAGER).read_bytes(), headers=AUTH)
    assert answer.status_code == 413 and answer.json()["field"] == "body", answer.text
    busy = RPCError("namespace rate limit exceeded", RPCStatusCode.RESOURCE_EXHAUSTED, b"")
    async with http(fake_app(RecordingClient(fail=busy))) as c:
        answer = await c.post("/v1/signals/alertmanager", content=fixture(ALERTMANAGER).read_bytes(), headers=AUTH)
    assert answer.status_code == 503  # not a size: retry later


# ---------------------------------------------------------------- batching by bytes (property)


def _sized(n: int, tags: int) -> Any:
    """A real alert signal with ``tags`` tags of 199 characters: 0.5-13 KB of JSON."""
    s = signals_of(fixture(ALERTMANAGER).read_bytes())[0]
    return s.model_validate({**dict(s), "fingerprint": f"{n:032x}", "tags": ["t" * 199] * tags})


@settings(max_examples=200, deadline=None)
@given(
    tags=st.lists(st.integers(0, 64), max_size=60),
    max_bytes=st.integers(4 * SIGNAL_MAX_BYTES, 1_500_000),
    max_count=st.integers(1, 500),
)
def test_batches_keep_order_and_fit_their_budget(tags: list[int], max_bytes: int, max_count: int) -> None:
    """``batched``: every signal once, in order; each batch at most ``max_count`` signals and, as the JSON array a
    ``SignalBatch`` carries, at most ``max_bytes``; no batch could have taken the next signal."""
    items = [_sized(i, n) for i, n in enumerate(tags)]
    parts = batched(items, max_bytes=max_bytes, max_count=max_count)
    assert [s for p in parts for s in p] == items
    for i, part in enumerate(parts):
        size = len(to_json(part))
        assert 0 < len(part) <= max_count and size <= max_bytes
        if i + 1 < len(parts):
            assert len(part) == max_count or size + 1 + signal_bytes(parts[i + 1][0]) > max_bytes
