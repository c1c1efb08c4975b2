"""A sandbox server per test on a free port: ``start_sandbox("/jira")`` serves only the stand-ins a test needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixloop.sandbox.app import SERVICES, Sandbox, create_app
from fixloop.sandbox.config import SandboxConfig
from fixloop.sandbox.server import bind, serve_in_thread


@dataclass
class Running:
    sb: Sandbox
    url: str  # http://127.0.0.1:<port>

    def service(self, prefix: str) -> str:
        return f"{self.url}{prefix}"


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """``start_sandbox(*prefixes, state_dir=None, clock=None, **config)``: a running sandbox with those stand-ins
    (all when no prefix is given), its time from ``clock`` when given. Call it again with the same ``state_dir``
    after the first has stopped to test a restart."""
    stack = ExitStack()

    def start(
        *prefixes: str, state_dir: Path | None = None, clock: Callable[[], datetime] | None = None, **config: Any
    ) -> Running:
        services = tuple(s for s in SERVICES if not prefixes or s[0] in prefixes)
        sock = bind()
        port = sock.getsockname()[1]
        cfg = SandboxConfig(
            state_dir=state_dir or tmp_path / "sandbox", public_url=f"http://127.0.0.1:{port}", **config
        )
        sb = Sandbox.open(cfg)
        if clock is not None:
            sb.clock = clock
        url = stack.enter_context(serve_in_thread(create_app(sb, services), sock))
        return Running(sb, url)

    with stack:
        yield start


def with_env(deployment: str, env: dict[str, str]) -> str:
    """A seeded ``apps/base/<service>/deployment.yaml`` text with ``env`` (name -> value) added to its container's
    ``env:`` list (created before ``ports:`` when the container has none)."""
    lines = "".join(f"            - name: {k}\n              value: {v}\n" for k, v in env.items())
    existing = "          env:\n"
    if existing in deployment:
        return deployment.replace(existing, existing + lines, 1)
    marker = "          ports:\n"
    assert marker in deployment, "the seeded Deployment's container has no ports: block"
    return deployment.replace(marker, f"{existing}{lines}{marker}", 1)


class Clock:
    """A settable ``sb.clock``: ``clock.now = ...`` moves the sandbox's time."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
