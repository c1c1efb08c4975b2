"""``fixloop submit`` paced on the intake's status (``fixloop.app.temporal.submit_signals``), on the Java test server
with the real IntakeWorkflow and the rules triage: a batch goes only once the intake holds no more untriaged signals
than its backlog allows, so what the intake has not taken in never piles up in its history. The triage activity is
the real one behind a stand-in that first asks the intake's status (what arrived meanwhile) and then waits until
the sender has waited at least once (bounded), so an unpaced sender fails this test instead of passing by luck."""

from __future__ import annotations

import asyncio

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # this module is re-imported in the workflow sandbox
    from fixloop.activities.triage import GROUP_SIGNALS, TriageActivities
    from fixloop.app.temporal import IntakeBusy, submit_signals
    from fixloop.core.models import Signal, TriageResult
    from fixloop.workflows.contracts.intake import Finish, IntakeStatus, intake_id
    from fixloop.workflows.contracts.triage import GroupSignalsInput
    from fixloop.workflows.intake import IntakeWorkflow
    from tests.conftest import signals
    from tests.workflows.test_intake import DEBIAN, LOCKFILES, LoopStandIn, _options, _scope

WINDOW = 16
SENDER_WAIT_S = 30  # how long a triage waits for the sender to have waited (bounded: an unpaced one never does)


def _storm() -> list[Signal]:
    """Real findings (two Trivy reports), five windows' worth: 80 distinct signals."""
    found = list({s.fingerprint: s for s in signals(DEBIAN) + signals(LOCKFILES)}.values())
    assert len(found) >= 5 * WINDOW
    return found[: 5 * WINDOW]


class Paced:
    """The triage stand-in (the real rules triage after its checks) and the sender's ``on_wait``."""

    def __init__(self, client: Client, scope: str, total: int) -> None:
        self.client, self.scope, self.total = client, scope, total
        self.sender_waited = asyncio.Event()
        self.waits: list[IntakeStatus] = []
        self.during_triage: list[IntakeStatus] = []  # the intake's status as each triage started

    def on_wait(self, status: IntakeStatus) -> None:
        self.waits.append(status)
        self.sender_waited.set()

    @activity.defn(name=GROUP_SIGNALS)
    async def group_signals(self, inp: GroupSignalsInput) -> TriageResult:
        handle = self.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(self.scope))
        status = await handle.query(IntakeWorkflow.status)
        self.during_triage.append(status)
        if status.counters.received < self.total:  # more to come: the sender must be waiting for this triage
            await asyncio.wait_for(self.sender_waited.wait(), SENDER_WAIT_S)
            self.sender_waited.clear()
        return await TriageActivities().group_signals(inp)


async def test_submit_sends_a_batch_only_when_the_intake_has_room(env: WorkflowEnvironment, task_queue: str) -> None:
    storm, scope = _storm(), _scope()
    paced = Paced(env.client, scope, len(storm))
    options = _options(window_max_signals=WINDOW)
    worker = Worker(
        env.client, task_queue=task_queue, workflows=[IntakeWorkflow, LoopStandIn], activities=[paced.group_signals]
    )
    async with worker:
        wid = await submit_signals(
            env.client, scope, storm, task_queue=task_queue, options=options, batch=WINDOW, poll=0.05, stall=60,
            on_wait=paced.on_wait,
        )  # fmt: skip
        handle = env.client.get_workflow_handle_for(IntakeWorkflow.run, wid)
        await handle.signal(IntakeWorkflow.finish, Finish())
        state = await handle.result()
        history = await handle.fetch_history()

    c = state.counters
    assert (c.received, c.new, c.assigned + c.unassigned, c.windows) == (5 * WINDOW, 5 * WINDOW, 5 * WINDOW, 5)
    # each triage found nothing else delivered meanwhile: the sender held the next batch back
    assert [(s.counters.received, s.queued, s.pending) for s in paced.during_triage] == [
        (WINDOW * k, 0, 0) for k in range(1, 6)
    ]
    assert len(paced.waits) >= 4 and all(s.untriaged() + WINDOW > WINDOW for s in paced.waits)
    assert all(s.window_max_signals == WINDOW for s in paced.waits)  # the intake's own bound, from its status
    # in the history: batch, its triage done, the next batch; never two batches without a triage between them
    received, triaged = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    kinds = [
        e.event_type
        for e in history.events
        if e.event_type == triaged
        or (e.event_type == received and e.workflow_execution_signaled_event_attributes.signal_name == "receive")
    ]
    assert kinds == [received, triaged] * 5  # the first batch came with the start (signal-with-start)


async def test_an_intake_that_makes_no_room_stops_the_sender_saying_what_was_sent(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """No worker runs the intake: the first batch is recorded (signal-with-start), the status gets no answer, and the
    sender gives up after its bounded wait naming how much was sent (the rest is not)."""
    storm, scope = _storm()[: 2 * WINDOW], _scope()
    with pytest.raises(IntakeBusy) as raised:
        await submit_signals(
            env.client, scope, storm, task_queue=task_queue, options=_options(window_max_signals=WINDOW),
            batch=WINDOW, poll=0.05, stall=1,
        )  # fmt: skip
    assert (raised.value.sent, raised.value.total) == (WINDOW, 2 * WINDOW)
    assert "no answer" in str(raised.value) and f"{WINDOW} of {2 * WINDOW} signals sent" in str(raised.value)
    history = await env.client.get_workflow_handle(intake_id(scope)).fetch_history()
    starts = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
    signalled = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert len(starts) == 1 and len(signalled) == 1  # one batch: the first
    await env.client.get_workflow_handle(intake_id(scope)).terminate("test done")
