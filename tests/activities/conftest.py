"""Fixtures of the activity tests: the local OpenAI-compatible endpoint (``tests/llm_server.py``) of the triage
tests, and ``world``, a running sandbox with the activity classes on it (``tests/activities/sandbox_world.py``;
some modules still define their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.activities.sandbox_world import World, running_world
from tests.llm_server import FakeLlm, serve


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path / "sandbox") as w:
        yield w


@pytest.fixture(scope="session")
def _llm_server() -> Iterator[FakeLlm]:
    with serve() as fake:
        yield fake


@pytest.fixture
def llm_server(_llm_server: FakeLlm) -> Iterator[FakeLlm]:
    """The endpoint, with an empty script and record; a request held by ``HANG`` is released at teardown."""
    _llm_server.reset()
    yield _llm_server
    _llm_server.release.set()
