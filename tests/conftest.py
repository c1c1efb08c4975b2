"""Shared test helpers: the real inputs in ``tests/fixtures`` (see its SOURCES.md) and ingesting them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import settings

from fixloop.app.ingest import IngestResult, ingest_file
from fixloop.app.llmserve import INSTALL_SERVER, LocalServer, LocalServerError, default_model, local_server
from fixloop.core.models import Signal

# Property tests check behaviour, not speed (speed lives in bench/): no per-example deadline, which a loaded 2-core CI
# machine tripped on a first call (test_purl_distro_never_raises, 315 ms against 200 ms).
settings.register_profile("fixloop", deadline=None)
settings.load_profile("fixloop")

FIXTURES = Path(__file__).parent / "fixtures"


def flux_event(data: bytes, at: datetime | None = None) -> bytes:
    """A recorded Flux event body with its ``timestamp`` set to ``at`` (default now), re-serialized: the gateway
    refuses events older than FIXLOOP_GATEWAY_FLUX_MAX_AGE."""
    doc = json.loads(data)
    doc["timestamp"] = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(doc).encode()


SCANNER_DIRS = ("trivy", "grype", "snyk", "gitlab", "osv-scanner", "pip-audit")


def fixture(rel: str) -> Path:
    path = FIXTURES / rel
    assert path.is_file(), f"missing fixture {rel}"
    return path


def ingest(rel: str) -> IngestResult:
    return ingest_file(fixture(rel))


def signals(rel: str) -> list[Signal]:
    return ingest(rel).signals


def one(items: list[Signal], **where: object) -> Signal:
    """The single signal whose fields equal ``where``."""
    found = [s for s in items if all(getattr(s, k) == v for k, v in where.items())]
    assert len(found) == 1, f"{len(found)} signals match {where}"
    return found[0]


def scanner_reports() -> list[str]:
    return sorted(str(p.relative_to(FIXTURES)) for d in SCANNER_DIRS for p in (FIXTURES / d).glob("*.json"))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES



def needs_local_llm() -> None:
    """Skip naming what to install unless xllamacpp and the bundled model are installed; fail instead in CI
    (``CI=true``), where both must be (``make install``)."""
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        reason = f"the local model server needs xllamacpp: {INSTALL_SERVER}"
    else:
        try:
            default_model()
            return
        except LocalServerError as e:
            reason = str(e)
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalServer]:
    """A real model behind llama.cpp's OpenAI-compatible server (``fixloop.app.llmserve``) for the session; a skip
    or a failure as ``needs_local_llm`` says when it is not installed."""
    needs_local_llm()
    with local_server() as server:
        yield server
