"""Scale-out: two ``fixloop worker`` processes (``python -m fixloop worker``, as a team runs them) on one task queue of
the real Temporal dev server, every activity real against the sandbox, and

- both workers take work: four loops run their first stages (Jira issue, plan, merge request) and the activity tasks
  in their histories name both workers (Temporal's worker identity ``<pid>@<host>``);
- a loop survives a worker crash in the middle of a write, twice: the sandbox holds the loop's Jira "create issue"
  request until the worker that sent it is SIGKILLed, then lets it complete (the dead attempt's write lands, as when
  a worker dies right after sending), and the retry on the other worker finds that issue instead of opening a
  second; a replacement worker joins (as Kubernetes restarts a pod) and the same is done to the loop's "create merge
  request" request. The loop then goes through the human gate (approve + merge in GitLab) to Flux's deploy and its
  verification wait, with exactly one Jira issue, one commit on its branch and one merge request.

A stranded attempt is retried when its start-to-close timeout expires (``policies.EXTERNAL_TIMEOUT``, 2 minutes, no
heartbeat): the test shortens that one attempt's timeout with Temporal's ``UpdateActivityOptions`` (what an operator
does with ``temporal activity update-options``) so that it expires at once, and restores the original options while
the retry waits out its backoff, so the retry runs with them. Which worker retries, and what the retry finds, is
Temporal's and fixloop's own doing. The killed worker usually also held the loop's workflows (the SDK runs the
activities a workflow task schedules eagerly on the same worker, and later workflow tasks stick to it): the loop's
next workflow task then waits out the SDK's sticky schedule-to-start timeout (10 s) before another worker takes it,
so each crash costs the loop about 11 s here, the whole test about 35 s on an idle 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import gitlab as python_gitlab
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.api.activity.v1 import ActivityOptions
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import PendingActivityState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, UpdateActivityOptionsRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from fixloop.activities import merge_request as gitlab
from fixloop.activities import work_item as jira
from fixloop.core.models import Signal, WorkItem, WorkItemKind
from fixloop.integrations.jira import JiraClient, JiraSettings
from fixloop.sandbox.app import Sandbox, create_app
from fixloop.sandbox.config import SandboxConfig
from fixloop.sandbox.seed import GITOPS_PROJECT
from fixloop.sandbox.server import bind, endpoints, serve_in_thread
from fixloop.workflows.contracts.loop import LoopOptions, LoopState, Stage
from fixloop.workflows.remediation import RemediationWorkflow
from tests.activities.sandbox_world import configured
from tests.change.helpers import work_item
from tests.devserver import dev  # noqa: F401 - the fixture
from tests.e2e.test_sandbox_loop import start_loop

T = TypeVar("T")
DEADLINE = 90.0  # seconds of real time for one awaited condition (a loaded CI runner)
STARTUP = 90.0  # seconds for a worker process to poll (imports and workflow validation, on a loaded machine)
OS, DEP = WorkItemKind.OS_REBUILD, WorkItemKind.DEPENDENCY_BUMP
SHARED = (  # the loops that show both workers taking work: one per seeded service but payments
    ("trivy/trivy-head_alpine-39.json", OS, None),
    ("trivy/trivy-0.22-fulldb_fluentd-multiple-lockfiles.json", OS, None),
    ("trivy/trivy-head_npm.json", DEP, None),
    ("trivy/trivy-head_gomod.json", DEP, "go.mod"),
)
CRASHED = ("trivy/trivy-0.22-fulldb_pip.json", DEP, None)  # payments: the loop whose workers are killed
JIRA_CREATE = re.compile(r"/jira/rest/api/\d+/issue")
MR_CREATE = re.compile(r"/gitlab/api/v4/projects/.+/merge_requests")  # the path is decoded: platform/gitops


# --- holding one request in the sandbox ---------------------------------------------------------------------------


@dataclass
class Gate:
    """The first request with ``method`` on a path matching ``path`` whose body contains ``needle``: held from its
    arrival until ``release``; ``status`` and ``answer`` are what the sandbox answered it (to a client that may be
    dead by then)."""

    method: str
    path: re.Pattern[str]
    needle: bytes
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    answer: bytes = b""


class Holding:
    """ASGI middleware around the sandbox app: a request matching an armed ``Gate`` is read whole and held (the
    sandbox's other requests go on), then handed to the sandbox as it arrived, whether or not its client is still
    connected: its write lands, as a request in flight when its sender dies does on a real server."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.gates: list[Gate] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        candidates = [
            g
            for g in self.gates
            if scope["type"] == "http" and scope["method"] == g.method and g.path.fullmatch(scope["path"])
        ]
        if not candidates:
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        with self._lock:
            gate = next((g for g in candidates if g.needle in body and not g.arrived.is_set()), None)
            if gate is not None:
                gate.arrived.set()
        if gate is None:
            return await self.app(scope, replay, send)
        await asyncio.to_thread(gate.release.wait, DEADLINE * 2)

        async def record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                gate.status = message["status"]
            elif message["type"] == "http.response.body":
                gate.answer += message.get("body", b"")
            await send(message)  # uvicorn drops it when the client is gone

        try:
            await self.app(scope, replay, record)
        finally:
            gate.finished.set()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str], Holding]]:
    sock = bind()
    port = sock.getsockname()[1]
    sb = Sandbox.open(SandboxConfig(state_dir=tmp_path / "sandbox", public_url=f"http://127.0.0.1:{port}"))
    holding = Holding(create_app(sb))
    with serve_in_thread(holding, sock):  # type: ignore[arg-type]  # any ASGI app
        try:
            yield sb, endpoints(sb), holding
        finally:  # a test that failed while a request was held: answer it, so the server can stop
            for gate in holding.gates:
                gate.release.set()


# --- worker processes ---------------------------------------------------------------------------------------------


class Workers:
    """``fixloop worker`` processes with the sandbox's ``FIXLOOP_*`` environment (nothing of the caller's), each one's
    stdout and stderr in ``<dir>/worker-<n>.log``."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.dir = directory
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")} | env
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self) -> int:
        log = (self.dir / f"worker-{len(self.procs)}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "fixloop", "worker"], env=self.env, cwd=self.dir, stdout=log, stderr=log
        )
        self.procs[proc.pid] = proc
        return proc.pid

    def kill(self, pid: int) -> None:
        """A crash: SIGKILL, nothing runs in the worker after it."""
        os.kill(pid, signal.SIGKILL)
        assert self.procs[pid].wait(timeout=10) == -signal.SIGKILL

    def alive(self, pid: int) -> bool:
        return self.procs[pid].poll() is None

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.dir.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()


def pid_of(identity: str) -> int | None:
    """The pid in a Temporal worker identity (the SDK's default ``<pid>@<host>``)."""
    head, at, _ = identity.partition("@")
    return int(head) if at and head.isdigit() else None


# --- waiting on conditions ----------------------------------------------------------------------------------------


async def eventually(probe: Callable[[], Awaitable[T | None]], what: Callable[[], str], timeout: float = DEADLINE) -> T:
    """``probe()``'s first answer other than None, polled every 0.1 s for at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await probe()
        if got is not None:
            return got
        assert loop.time() < deadline, f"timed out waiting for {what()}"
        await asyncio.sleep(0.1)


async def polling(client: Client, task_queue: str, pids: set[int], workers: Workers) -> None:
    """Until every worker of ``pids`` polls ``task_queue`` for both workflow and activity tasks (a worker that exits
    instead fails the test with its log)."""

    async def probe() -> bool | None:
        for pid in pids:
            assert workers.alive(pid), f"worker {pid} exited:\n{workers.logs()}"
        for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
                )
            )
            if not pids <= {pid_of(p.identity) for p in answer.pollers}:
                return None
        return True

    await eventually(probe, lambda: f"workers {sorted(pids)} to poll {task_queue}:\n{workers.logs()}", STARTUP)


async def status_when(
    handle: WorkflowHandle[Any, Any], done: Callable[[LoopState], bool], workers: Workers
) -> LoopState:
    last: list[LoopState] = []

    async def probe() -> LoopState | None:
        status = await handle.query(RemediationWorkflow.status)
        last[:] = [status]
        return status if done(status) else None

    return await eventually(
        probe,
        lambda: f"{handle.id} (at {last[0].stage.value}: {last[0].evidence[-1:]})\n{workers.logs()}" if last else "",
    )


async def in_flight(handle: WorkflowHandle[Any, Any], activity_type: str) -> PendingActivityInfo | None:
    """The loop's pending ``activity_type`` while an attempt of it is started on a worker."""
    described = await handle.describe()
    for pending in described.raw_description.pending_activities:
        if (
            pending.activity_type.name == activity_type
            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            return pending
    return None


async def activity_attempts(handle: WorkflowHandle[Any, Any], activity_type: str) -> list[tuple[int, str]]:
    """``(attempt, worker identity)`` of each completed ``activity_type`` in the loop's history (Temporal writes
    ActivityTaskStarted once an activity closes, with its last attempt)."""
    scheduled: dict[int, str] = {}
    out: list[tuple[int, str]] = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if scheduled.get(started.scheduled_event_id) == activity_type:
                out.append((started.attempt, started.identity))
    return out


async def activity_workers(handle: WorkflowHandle[Any, Any]) -> list[int | None]:
    """The pid of the worker of every activity task in the loop's history."""
    return [
        pid_of(event.activity_task_started_event_attributes.identity)
        async for event in handle.fetch_history_events()
        if event.HasField("activity_task_started_event_attributes")
    ]


# --- the crash ------------------------------------------------------------------------------------------------------


@dataclass
class Crash:
    killed: int  # the pid of the worker that died mid-activity
    activity_id: str
    answer: dict[str, Any]  # what the sandbox answered the dead attempt's held request


async def crash_mid_write(
    client: Client, handle: WorkflowHandle[Any, Any], activity_type: str, gate: Gate, workers: Workers
) -> Crash:
    """Once ``gate`` holds the loop's request: SIGKILL the worker running the loop's ``activity_type`` attempt, let
    the held request complete in the sandbox, and have the stranded attempt time out now rather than after its
    start-to-close timeout (its options are restored once the retry is scheduled)."""

    async def arrived() -> bool | None:
        return True if gate.arrived.is_set() else None

    async def answered() -> bool | None:
        return True if gate.finished.is_set() else None

    await eventually(arrived, lambda: f"the {activity_type} request of {handle.id} in the sandbox\n{workers.logs()}")
    seen: list[str] = []  # what the loop had pending at the last probe, for the failure message

    async def started() -> PendingActivityInfo | None:
        described = await handle.describe()
        seen[:] = [
            f"{p.activity_type.name} state={p.state} attempt={p.attempt} failure={p.last_failure.message[:200]!r}"
            for p in described.raw_description.pending_activities
        ]
        return await in_flight(handle, activity_type)

    pending = await eventually(started, lambda: f"{activity_type} started; pending: {seen}\n{workers.logs()}")
    pid = pid_of(pending.last_worker_identity)
    assert pid in workers.procs and workers.alive(pid), pending.last_worker_identity
    workers.kill(pid)
    gate.release.set()
    await eventually(answered, lambda: f"the sandbox's answer to the held {activity_type} request")
    execution = WorkflowExecution(workflow_id=handle.id)
    await client.workflow_service.update_activity_options(
        UpdateActivityOptionsRequest(
            namespace=client.namespace,
            execution=execution,
            id=pending.activity_id,
            activity_options=ActivityOptions(start_to_close_timeout=Duration(seconds=1)),
            update_mask=FieldMask(paths=["start_to_close_timeout"]),
        )
    )

    async def retry_scheduled() -> bool | None:
        described = await handle.describe()
        [now] = [p for p in described.raw_description.pending_activities if p.activity_id == pending.activity_id]
        return True if now.attempt == 2 and now.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED else None

    await eventually(retry_scheduled, lambda: f"the retry of {activity_type}")
    restored = await client.workflow_service.update_activity_options(
        UpdateActivityOptionsRequest(
            namespace=client.namespace, execution=execution, id=pending.activity_id, restore_original=True
        )
    )
    assert restored.activity_options.start_to_close_timeout == pending.activity_options.start_to_close_timeout
    assert gate.status == 201, gate.answer[:300]
    return Crash(killed=pid, activity_id=pending.activity_id, answer=json.loads(gate.answer))


# --- the test ---------------------------------------------------------------------------------------------------------


# Known to fail now and then on this 2-core machine (3 of about 22 runs, and once in an earlier session: "timed out
# waiting for gitlab.open_merge_request started" with the request held). The likely cause, addressed above: the held
# request's client timed out (30 s) while the test waited for the replacement worker, so the retry passed the gate.
# Rerun once, visibly (pytest -ra lists a rerun), until runs confirm it; a timeout names the loop's pending activities.
@pytest.mark.flaky(reruns=1)
async def test_two_workers_share_the_loops_and_a_loop_survives_a_worker_killed_mid_write(
    dev: WorkflowEnvironment,  # noqa: F811
    sandbox: tuple[Sandbox, dict[str, str], Holding],
    tmp_path: Path,
) -> None:
    sb, env, holding = sandbox
    client = dev.client
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    workers = Workers(
        tmp_path,
        env
        | {
            "FIXLOOP_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "FIXLOOP_TEMPORAL_NAMESPACE": client.namespace,
            "FIXLOOP_TEMPORAL_TASK_QUEUE": task_queue,
            # a held request must outlast the test's waits (a replacement worker starting on a loaded machine can
            # take longer than the 30 s default): had the killed-to-be attempt's client timed out first, its retry
            # would pass the gate and finish, and no attempt would be seen in flight while the request is held
            "FIXLOOP_GITLAB_TIMEOUT": "300",
            "FIXLOOP_JIRA_TIMEOUT": "300",
        },
    )
    scope = GITOPS_PROJECT
    run = uuid.uuid4().hex[:6]

    async def start(item: WorkItem, found: list[Signal], options: LoopOptions) -> WorkflowHandle[Any, LoopState]:
        return await start_loop(client, task_queue, item, found, options, run)

    try:
        first, second = workers.start(), workers.start()
        await polling(client, task_queue, {first, second}, workers)

        # both workers take work
        shared = [await start(*work_item(*case), LoopOptions()) for case in SHARED]
        for handle in shared:
            status = await status_when(handle, lambda s: s.stage in (Stage.AWAIT_APPROVAL, Stage.DONE), workers)
            assert status.stage is Stage.AWAIT_APPROVAL, status.evidence[-3:]
        ran = [pid for handle in shared for pid in await activity_workers(handle)]
        assert {first, second} == set(ran), {pid: ran.count(pid) for pid in set(ran)}  # each took some, no other

        # the payments loop: its Jira issue and merge request are created by attempts whose worker is killed
        item, found = work_item(*CRASHED)
        branch = f"{gitlab.BRANCH_PREFIX}{item.id}"
        issue_gate = Gate("POST", JIRA_CREATE, f'"fixloop:{item.id}"'.encode())
        mr_gate = Gate("POST", MR_CREATE, f'"{branch}"'.encode())
        holding.gates += [issue_gate, mr_gate]
        handle = await start(item, found, LoopOptions(poll_interval=timedelta(milliseconds=300)))

        issue_crash = await crash_mid_write(client, handle, jira.OPEN_WORK_ITEM, issue_gate, workers)
        third = workers.start()  # the replacement, as a Deployment restarts the pod
        status = await status_when(handle, lambda s: s.issue is not None, workers)
        assert status.issue is not None
        assert (status.issue.key, status.issue.created) == (issue_crash.answer["key"], False)  # found, not created

        await polling(client, task_queue, {third}, workers)
        mr_crash = await crash_mid_write(client, handle, gitlab.OPEN_MERGE_REQUEST, mr_gate, workers)
        status = await status_when(
            handle, lambda s: s.stage not in (Stage.PLAN_CHANGE, Stage.OPEN_MERGE_REQUEST), workers
        )
        assert status.stage is Stage.AWAIT_APPROVAL and status.merge_request is not None, status.evidence[-3:]
        assert status.merge_request.iid == mr_crash.answer["iid"]  # the dead attempt's merge request, found again

        # the human gate, then the build: a source change's merge is followed to its pipeline, not to Flux
        reviewer = sb.credentials.gitlab_reviewer_token.get_secret_value()
        project = python_gitlab.Gitlab(env["FIXLOOP_GITLAB_URL"], private_token=reviewer).projects.get(scope)
        mr = project.mergerequests.get(status.merge_request.iid)
        head = mr.sha
        assert head == status.merge_request.head_sha  # the retry committed nothing more
        mr.approve(sha=head)
        mr.merge(sha=head)
        status = await status_when(handle, lambda s: s.stage is not Stage.AWAIT_APPROVAL, workers)
        assert status.stage is Stage.AWAIT_BUILD, status.evidence[-3:]
        assert status.source_sha == mr.merge_commit_sha and status.deploy is None

        # each crashed attempt was retried once, on a worker that was alive
        survivors = {pid for pid in workers.procs if workers.alive(pid)}
        assert survivors == {first, second, third} - {issue_crash.killed, mr_crash.killed}
        assert all(not workers.alive(pid) for pid in (issue_crash.killed, mr_crash.killed))
        for activity_type, crash in ((jira.OPEN_WORK_ITEM, issue_crash), (gitlab.OPEN_MERGE_REQUEST, mr_crash)):
            [(attempt, identity)] = await activity_attempts(handle, activity_type)
            assert attempt == 2 and pid_of(identity) not in (crash.killed, None), (activity_type, attempt, identity)

        # no duplicate: one Jira issue per loop, one merge request and one commit for the crashed loop's branch
        jira_client = JiraClient(configured(JiraSettings, env))
        labelled = jira_client.jira.search_issues(f'labels = "fixloop:{item.id}"', fields="labels")
        assert [i.key for i in labelled] == [issue_crash.answer["key"]]
        assert len(jira_client.jira.search_issues("labels = fixloop", fields="labels")) == len(SHARED) + 1
        assert jira_client.get_issue(status.issue.key).status == "In Progress"
        merge_requests = project.mergerequests.list(source_branch=branch, state="all", get_all=True)
        assert [m.iid for m in merge_requests] == [mr_crash.answer["iid"]]
        assert [c.id for c in project.mergerequests.get(mr_crash.answer["iid"]).commits()] == [head]
    finally:
        workers.stop()
