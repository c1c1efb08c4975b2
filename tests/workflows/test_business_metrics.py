"""fixloop's business metrics (``fixloop.core.metrics``) at the worker's ``/metrics``: a worker whose client runs on
the Prometheus runtime of ``FIXLOOP_WORKER_METRICS_ADDRESS`` (``fixloop.app.worker.metrics_runtime``, on a free
port) runs a loop to its verified close, and intakes whose llm triage fails, on the Java test server; the endpoint
then serves the counters and histograms with the values of those runs, next to the SDK's own ``temporal_*``.

One runtime with a Prometheus endpoint for the module (the SDK allows few per process); each test reads only the
series of its own task queues."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # this module is re-imported in the workflow sandbox
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from fixloop.activities.triage import TriageActivities
    from fixloop.app.worker import build_worker, metrics_runtime
    from fixloop.core.config import LlmSettings
    from fixloop.core.metrics import LEAD_TIME_BUCKETS, METRICS
    from fixloop.core.models import WorkItemKind
    from fixloop.core.triage import triage_rules
    from fixloop.workflows.contracts.intake import Finish, IntakeInput, IntakeOptions, SignalBatch
    from fixloop.workflows.contracts.loop import LoopOptions, Outcome, RemediationInput
    from fixloop.workflows.intake import IntakeWorkflow
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.conftest import signals
    from tests.deploy.monitoring import sdk_series
    from tests.deploy.test_worker_metrics import free_port
    from tests.workflows.world import World, approval

ALPINE = "trivy/trivy-0.22-fulldb_alpine-39.json"
SCOPE = "team/gitops"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[tuple[Runtime, str]]:
    port = free_port()
    runtime = metrics_runtime(f"127.0.0.1:{port}")
    yield runtime, f"http://127.0.0.1:{port}/metrics"
    del runtime


async def _client(env: WorkflowEnvironment, runtime: Runtime) -> Client:
    """A client of the test server on ``runtime`` (the worker's: its metrics are the runtime's)."""
    return await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def scrape(url: str, task_queue: str) -> Samples:
    """Every sample of ``task_queue`` at ``url``: (series name as exposed, its other labels) -> value."""
    text = httpx.get(url, timeout=5).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("task_queue") == task_queue:
                labels = {k: v for k, v in s.labels.items() if k not in ("task_queue", "namespace", "service_name")}
                # the parser names a counter's samples <name>_total; the SDK exposes them as <name>
                name = family.name if family.type == "counter" else s.name
                assert f"\n{name}{{" in text, name  # the exposed name, which the rules and the dashboard query
                out[(name, frozenset(labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_a_verified_loop_is_counted_at_the_workers_metrics_endpoint(
    env: WorkflowEnvironment, task_queue: str, prometheus: tuple[Runtime, str]
) -> None:
    runtime, url = prometheus
    item = next(w for w in triage_rules(signals(ALPINE)).work_items if w.kind is WorkItemKind.OS_REBUILD)
    world = World(merge_after_polls=2, approvals=[approval("alice")], deploy_after_polls=1)
    client = await _client(env, runtime)
    async with build_worker(client, task_queue, extra_activities=world.activities()):
        state = await env.client.execute_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=LoopOptions(search_attributes=False)),
            id=f"remediate/{SCOPE}/{item.id}/{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
    assert state.outcome is Outcome.VERIFIED
    samples = scrape(url, task_queue)

    loop = {"workflow_type": "RemediationWorkflow"}
    assert value(samples, "fixloop_loops_started", kind="os_rebuild", **loop) == 1
    assert value(samples, "fixloop_loops_finished", outcome="verified", kind="os_rebuild", **loop) == 1
    stages = {dict(labels)["stage"]: v for (name, labels), v in samples.items() if name == "fixloop_stage_entered"}
    assert stages == dict.fromkeys(
        ["open_work_item", "plan_change", "open_merge_request", "await_approval", "await_deploy", "verify", "close",
         "done"], 1.0,
    )  # fmt: skip
    assert value(samples, "fixloop_verdicts", result="pass", **loop) == 1
    assert value(samples, "fixloop_time_to_merge_seconds_count", gate="change", **loop) == 1
    assert value(samples, "fixloop_time_to_verify_seconds_count", **loop) == 1
    merge_buckets = sorted(
        float(dict(labels)["le"]) for (name, labels) in samples if name == "fixloop_time_to_merge_seconds_bucket"
    )
    assert merge_buckets == [*LEAD_TIME_BUCKETS, float("inf")]  # the catalogue's buckets, not the SDK's default
    took = value(samples, "fixloop_time_to_verify_seconds_sum", **loop)
    assert took is not None and took >= 600  # two polls of the merge request, ten minutes apart (test server time)
    # nothing but the catalogue's series; the SDK's own worker metrics beside them, each one the dashboard may use
    assert {name for name, _ in samples if name.startswith("fixloop_")} <= {s for m in METRICS for s in m.series()}
    sdk = {name for name, _ in samples if name.startswith("temporal_")}
    assert "temporal_workflow_completed" in sdk and sdk <= sdk_series()


@workflow.defn(name="RemediationWorkflow")
class LoopStandIn:
    """A loop that waits: the intake's children need a workflow to start."""

    @workflow.run
    async def run(self, inp: RemediationInput) -> None:
        await workflow.wait_condition(lambda: False)


async def _intake(env: WorkflowEnvironment, client: Client, task_queue: str, llm: LlmSettings) -> None:
    """An intake with the llm engine on ``llm`` triages ALPINE's findings (the quiet period time-skipped)."""
    scope = f"team/gitops-{uuid.uuid4().hex[:8]}"
    options = IntakeOptions(engine="llm", loop_options=LoopOptions(search_attributes=False))
    batch = signals(ALPINE)
    triage = TriageActivities(llm)
    async with Worker(client, task_queue=task_queue, workflows=[IntakeWorkflow, LoopStandIn],
                      activities=[triage.group_signals]):  # fmt: skip
        handle = await env.client.start_workflow(
            IntakeWorkflow.run,
            IntakeInput(scope=scope, options=options),
            id=f"intake/{scope}",
            task_queue=task_queue,
            start_signal="receive",
            start_signal_args=[SignalBatch(signals=[*batch, batch[0]])],
        )
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()
    assert state.counters.windows == 1 and state.counters.loops_started >= 1


@pytest.mark.parametrize("reason", ["llm_error", "activity_failed"])
async def test_llm_triage_falling_back_to_rules_is_counted_with_the_intakes_windows_and_signals(
    env: WorkflowEnvironment, prometheus: tuple[Runtime, str], reason: str
) -> None:
    """One intake per test server: after an intake's loops (children with parent-close policy ABANDON) the Java
    test server's clock stalls (tests/workflows/conftest.py), so a second intake on it waited its quiet period in
    real time (two minutes)."""
    runtime, url = prometheus
    client = await _client(env, runtime)
    if reason == "llm_error":  # a port nothing listens on: the endpoint refuses at once, the engine falls back
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        llm = LlmSettings(base_url=refused, model="m", api_key="k", max_retries=0, timeout=5)
    else:  # unconfigured: the activity fails and the intake falls back
        llm = LlmSettings(base_url=None, model=None, api_key=None)
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    await _intake(env, client, queue, llm)

    n = len(signals(ALPINE))
    samples = scrape(url, queue)
    counted = {k: v for k, v in samples.items() if k[0] == "fixloop_triage_fallbacks"}
    where = {"workflow_type": "IntakeWorkflow"}  # the intake counts a failed activity, the activity its engine's
    if reason == "llm_error":
        where = {"activity_type": "triage.group_signals"}
    assert counted == {("fixloop_triage_fallbacks", frozenset({"reason": reason, **where}.items())): 1}, reason
    intake = {"workflow_type": "IntakeWorkflow"}
    assert value(samples, "fixloop_intake_signals", result="new", **intake) == n
    assert value(samples, "fixloop_intake_signals", result="duplicate", **intake) == 1
    assert value(samples, "fixloop_intake_windows", closed_by="quiet", **intake) == 1
