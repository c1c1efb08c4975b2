"""The JSON logs of a worker (``fixloop.app.logs``, ``FIXLOOP_LOG_FORMAT=json``): a loop runs in the product's worker
(``build_worker``, its interceptor) on the Java test server against the stand-in world, and the lines its activities
log carry the workflow id, the run id, the activity, the work item and the Jira key; a secret in a message is
masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

from fixloop.app.logs import configure
from fixloop.app.worker import build_worker
from fixloop.core.config import LogSettings
from tests.test_logs import restore

with workflow.unsafe.imports_passed_through():
    from fixloop.activities import work_item as jira
    from fixloop.core.models import WorkItemKind
    from fixloop.core.triage import triage_rules
    from fixloop.workflows.contracts.loop import LoopOptions, Outcome, RemediationInput
    from fixloop.workflows.contracts.work_item import LinkInput, LinkRef
    from fixloop.workflows.remediation import RemediationWorkflow
    from tests.conftest import signals
    from tests.workflows.world import World, approval

SECRET = "glpat-s3cr3t-t0ken-4c1d"
SCOPE = "team/gitops"


class LoggingWorld(World):
    """The world whose ``jira.link`` logs, once through the SDK's ``activity.logger`` and once through a plain
    logger, as an integration would (with a token in its message, as a server's error text might echo it)."""

    @activity.defn(name=jira.LINK)
    async def link(self, inp: LinkInput) -> LinkRef:
        activity.logger.warning("linking %s", inp.url)
        logging.getLogger("fixloop.integrations.jira").warning("remote link refused for token %s", SECRET)
        return await super().link(inp)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure(LogSettings(format="json"), "worker", secrets=[SECRET], stream=out)
    try:
        yield out
    finally:
        restore()


async def test_an_activity_logs_json_lines_with_its_workflow_run_activity_work_item_and_jira_key(
    env: WorkflowEnvironment, task_queue: str, json_logs: io.StringIO
) -> None:
    item = next(w for w in triage_rules(signals("trivy/trivy-0.22-fulldb_alpine-39.json")).work_items
                if w.kind is WorkItemKind.OS_REBUILD)  # fmt: skip
    world = LoggingWorld(merge_after_polls=1, approvals=[approval("alice")])
    wid = f"remediate/{SCOPE}/{item.id}"
    async with build_worker(env.client, task_queue, extra_activities=world.activities()):
        handle = await env.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(scope=SCOPE, work_item=item, options=LoopOptions(search_attributes=False)),
            id=wid,
            task_queue=task_queue,
        )
        state = await handle.result()
    assert state.outcome is Outcome.VERIFIED

    text = json_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    ours = [d for d in lines if d["message"].startswith(("linking ", "remote link refused"))]
    assert len(ours) == 2, text
    context = {
        "workflow_id": wid,
        "run_id": handle.result_run_id,
        "activity": "jira.link",
        "work_item": item.id,
        "jira_key": "OPS-1",
    }
    sdk, plain = ours
    assert sdk == {
        "ts": sdk["ts"],
        "level": "WARNING",
        "logger": "temporalio.activity",
        "message": f"linking {world.links[0].url}",  # the SDK's "({'activity_id': ...})" suffix left out
        **context,
    }
    assert plain["logger"] == "fixloop.integrations.jira" and {k: plain[k] for k in context} == context
    assert plain["message"] == "remote link refused for token ***" and SECRET not in text
    assert sdk["ts"].endswith("Z") and len(sdk["ts"]) == len("2024-06-01T12:00:05.123Z")
