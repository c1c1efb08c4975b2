"""The worker's metrics endpoint (FIXLOOP_WORKER_METRICS_ADDRESS), which the Kubernetes probes and the Prometheus
scrape of ``deploy/`` use: ``fixloop worker`` run as the container runs it, on the real Temporal dev server, serves
the Temporal SDK's metrics at ``/metrics``; an address it cannot serve stops it at start with the variable named.

One Temporal runtime is created in this process (the SDK allows few); the others live in ``fixloop worker``
subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from fixloop.app.worker import metrics_runtime
from tests.devserver import dev  # noqa: F401 - the fixture

STARTUP_SECONDS = 60  # a cold import of the worker on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")}
    return {**env, **extra}


def test_the_metrics_runtime_serves_prometheus_text_before_any_client_connects() -> None:
    port = free_port()
    runtime = metrics_runtime(f"127.0.0.1:{port}")  # bound now: a probe succeeds as soon as the worker process is up
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 404  # only /metrics is served
    del runtime  # the endpoint lives as long as the runtime: the worker keeps its runtime until it stops


async def test_fixloop_worker_serves_the_sdk_metrics_of_its_client(dev: WorkflowEnvironment) -> None:  # noqa: F811
    port = free_port()
    env = worker_env(
        FIXLOOP_TEMPORAL_ADDRESS=dev.client.service_client.config.target_host,
        FIXLOOP_TEMPORAL_TASK_QUEUE=f"metrics-{uuid.uuid4().hex[:8]}",
        FIXLOOP_WORKER_METRICS_ADDRESS=f"127.0.0.1:{port}",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fixloop", "worker", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=STARTUP_SECONDS)  # printed once connected
        assert f"metrics at http://127.0.0.1:{port}/metrics" in line.decode(), line
        deadline = time.monotonic() + STARTUP_SECONDS
        async with httpx.AsyncClient(timeout=5) as http:
            while True:  # the worker's pollers report within a poll; bounded by the deadline, not a fixed sleep
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                if "temporal_worker_task_slots_available" in text or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert "temporal_worker_task_slots_available" in text
        assert f'task_queue="{env["FIXLOOP_TEMPORAL_TASK_QUEUE"]}"' in text  # the metrics of this worker's client
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), timeout=30)


@pytest.mark.parametrize("case", ["in use", "not ip:port"])
def test_an_address_the_worker_cannot_serve_stops_it_naming_the_variable(held_port: int, case: str) -> None:
    import subprocess

    address = f"127.0.0.1:{held_port}" if case == "in use" else f"localhost:{held_port}"
    proc = subprocess.run(
        [sys.executable, "-m", "fixloop", "worker"],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        env=worker_env(FIXLOOP_TEMPORAL_ADDRESS="127.0.0.1:1", FIXLOOP_WORKER_METRICS_ADDRESS=address),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fixloop worker: FIXLOOP_WORKER_METRICS_ADDRESS"), proc.stderr
    assert "Traceback" not in proc.stderr and "cannot reach Temporal" not in proc.stderr  # it stopped before that
