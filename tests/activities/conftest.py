"""Fixtures of the triage tests: the local OpenAI-compatible endpoint (``tests/llm_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llm_server import FakeLlm, serve


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
