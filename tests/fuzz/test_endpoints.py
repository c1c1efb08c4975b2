"""Property-based fuzzing of every gateway endpoint (issue 14, scope 6), on the real Temporal dev server.

Each endpoint gets mutated real payloads (``tests/fuzz/mutate.py`` over the fixtures of ``tests/fixtures``; GitLab
and Flux hooks correctly authenticated, so the mutations reach the parsers and the loops) and every answer must be:
  * never a 5xx (a 500 is a bug; a 503 with Temporal up is a lost delivery);
  * a 4xx that names its field (``{"error": ..., "field": ...}``, both non-empty);
  * within ``ANSWER_SECONDS`` of the request;
  * and every 2xx of a signal endpoint is in the intake: once the examples are done, the intake's ``status`` query
    counts exactly the signals the 2xx answers announced (``counters.received``).

Budget: ``FIXLOOP_FUZZ_EXAMPLES`` examples per endpoint (default 200, derandomized so ``make test`` is
reproducible); ``make fuzz`` runs 2,000 per endpoint with fresh randomness (``FIXLOOP_FUZZ_RANDOM=1``) and keeps
hypothesis' example database in ``.hypothesis/`` so a failure found there is replayed first next time.

Hypothesis drives synchronous examples in a thread (``asyncio.to_thread``) and each example's request runs on the
test's event loop (``run_coroutine_threadsafe``), so the gateway app, the Temporal client and the worker share one
loop while hypothesis shrinks and reports as usual.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment

with workflow.unsafe.imports_passed_through():
    from fixloop.app.gateway import GatewaySettings, create_app
    from fixloop.app.worker import build_worker
    from fixloop.core.config import IntakeSettings
    from fixloop.integrations.flux import FluxSettings
    from fixloop.integrations.gitlab.webhook import WebhookSettings
    from fixloop.workflows.contracts.intake import intake_id
    from fixloop.workflows.intake import IntakeWorkflow
    from tests.conftest import FIXTURES
    from tests.devserver import dev  # noqa: F401 - the fixture
    from tests.fuzz.mutate import Mutant, mutated

TOKEN = "fuzz-gw-token-3a9c"
GITLAB_TOKEN = "fuzz-gl-hook-token-71bd"
FLUX_KEY = "fuzz-flux-hmac-key-c0de"
KUSTOMIZATION = "apps/webapp"  # the nc-docs fixtures' involved object
JSON = {"Content-Type": "application/json"}
FIXTURE_MAX_BYTES = 120_000  # larger fixtures have tests of their own; mutating them costs seconds per example
ANSWER_SECONDS = 10.0  # generous for a loaded 2-core CI runner; a typical answer takes milliseconds
EXAMPLES = int(os.environ.get("FIXLOOP_FUZZ_EXAMPLES", "200"))
PRODUCTION_RECURSION_LIMIT = 1_000  # CPython's default, what uvicorn runs the gateway with
RANDOM = os.environ.get("FIXLOOP_FUZZ_RANDOM", "") not in ("", "0")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the answer time is asserted per request, with a bound meant for CI
    derandomize=not RANDOM,
    database=None if not RANDOM else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
)


def _docs(*globs: str) -> dict[str, Any]:
    """The fixtures matching ``globs`` (name -> decoded JSON) up to ``FIXTURE_MAX_BYTES`` each, or the smallest of
    each glob when none is that small."""
    out: dict[str, Any] = {}
    for pattern in globs:
        paths = sorted((p for p in FIXTURES.glob(pattern) if p.suffix == ".json"), key=lambda p: p.stat().st_size)
        small = [p for p in paths if p.stat().st_size <= FIXTURE_MAX_BYTES] or paths[:1]
        for path in small:
            out[str(path.relative_to(FIXTURES))] = orjson.loads(path.read_bytes())
    assert out, f"no fixture for {globs}"
    return out


SCANNERS = {
    "trivy": "trivy/*",
    "gitlab": "gitlab/*",
    "grype": "grype/*",
    "snyk": "snyk/*",
    "osv": "osv-scanner/*",
    "pip-audit": "pip-audit/*",
}
SIGNAL_ENDPOINTS = {
    "/v1/signals/datadog": ("datadog/*",),
    "/v1/signals/alertmanager": ("alertmanager/*",),
    "/v1/reports": tuple(SCANNERS.values()),
    **{f"/v1/reports/{source}": (pattern,) for source, pattern in SCANNERS.items()},
}


def _gitlab_docs(scope: str) -> dict[str, Any]:
    """GitLab's recorded merge request hooks, some on a fixloop branch of the scope's project (so they reach the
    routing to a loop), some as recorded."""
    docs = _docs("recorded/gitlab/*webhook_merge_request.json")
    for name, doc in list(docs.items()):
        routed = orjson.loads(orjson.dumps(doc))
        if isinstance(routed.get("object_attributes"), dict):
            routed["object_attributes"]["source_branch"] = f"fixloop/wi-{uuid.uuid4().hex[:24]}"
        if isinstance(routed.get("project"), dict):
            routed["project"]["path_with_namespace"] = scope
        docs[f"{name} (fixloop branch)"] = routed
    return docs


def _flux_docs() -> dict[str, Any]:
    """Flux's recorded events, their timestamps set to now (so a freshness check passes and the mutation decides)."""
    docs = _docs("recorded/flux/*.json")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for doc in docs.values():
        if isinstance(doc, dict) and "timestamp" in doc:
            doc["timestamp"] = now
    return docs


def _signed(data: bytes) -> dict[str, str]:
    return {**JSON, "X-Signature": "sha256=" + hmac.new(FLUX_KEY.encode(), data, hashlib.sha256).hexdigest()}


def check(answer: httpx.Response, elapsed: float, m: Mutant) -> int:
    """The properties of one answer; the number of signals a 2xx announced."""
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert elapsed < ANSWER_SECONDS, f"answered in {elapsed:.1f} s"
    doc = answer.json()
    if answer.status_code >= 400:
        assert isinstance(doc.get("error"), str) and doc["error"], doc
        assert isinstance(doc.get("field"), str) and doc["field"], doc
        return 0
    assert 200 <= answer.status_code < 300, answer.status_code
    return int(doc.get("signals") or 0)


async def fuzz(app: Any, path: str, docs: dict[str, Any], headers: Any) -> int:
    """Post ``EXAMPLES`` mutants of ``docs`` to ``path``; the signals the 2xx answers announced, in total."""
    loop = asyncio.get_running_loop()
    accepted = 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:

        @FUZZ
        @given(mutated(docs))
        def one(m: Mutant) -> None:
            nonlocal accepted
            # hypothesis raises the (interpreter-wide) recursion limit while it runs an example; the gateway runs
            # under Python's default, and a parser that recurses must be tested at that limit
            raised = sys.getrecursionlimit()
            sys.setrecursionlimit(PRODUCTION_RECURSION_LIMIT)
            started = time.monotonic()
            try:
                request = client.post(path, content=m.body, headers=headers(m.body))
                answer = asyncio.run_coroutine_threadsafe(request, loop).result(timeout=ANSWER_SECONDS * 6)
            finally:
                sys.setrecursionlimit(raised)
            accepted += check(answer, time.monotonic() - started, m)

        await asyncio.to_thread(one)
    return accepted


def make_app(dev: WorkflowEnvironment, scope: str, task_queue: str) -> Any:
    async def connect() -> Any:
        return dev.client

    return create_app(
        GatewaySettings(token=TOKEN, scope=scope),
        connect,
        task_queue=task_queue,
        intake=IntakeSettings(quiet_period=3600, window_max_age=7200),
        flux=FluxSettings(hmac_key=FLUX_KEY, kustomization=KUSTOMIZATION),
        gitlab_webhook=WebhookSettings(token=GITLAB_TOKEN),
    )


@pytest.fixture
def where() -> tuple[str, str]:
    """A scope (so an intake) and a task queue of this test alone."""
    return f"fuzz/gitops-{uuid.uuid4().hex[:8]}", f"tq-fuzz-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("path", list(SIGNAL_ENDPOINTS))
async def test_signal_endpoints_answer_every_mutant_and_lose_no_2xx(
    dev: WorkflowEnvironment, where: tuple[str, str], path: str
) -> None:
    scope, task_queue = where
    app = make_app(dev, scope, task_queue)
    async with build_worker(dev.client, task_queue):
        accepted = await fuzz(app, path, _docs(*SIGNAL_ENDPOINTS[path]), lambda _: {**JSON, "X-Fixloop-Token": TOKEN})
        if accepted:
            intake = dev.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
            status = await intake.query(IntakeWorkflow.status)
            await intake.terminate("fuzz done")
            assert status.counters.received == accepted  # every 2xx reached the intake
    assert accepted > 0, "no mutant was accepted: the mutations never left a valid document"


async def test_gitlab_hook_answers_every_mutant(dev: WorkflowEnvironment, where: tuple[str, str]) -> None:
    scope, task_queue = where
    app = make_app(dev, scope, task_queue)
    headers = {**JSON, "X-Gitlab-Token": GITLAB_TOKEN, "X-Gitlab-Event": "Merge Request Hook"}
    async with build_worker(dev.client, task_queue):
        await fuzz(app, "/v1/hooks/gitlab", _gitlab_docs(scope), lambda _: headers)


async def test_flux_hook_answers_every_mutant(dev: WorkflowEnvironment, where: tuple[str, str]) -> None:
    scope, task_queue = where
    app = make_app(dev, scope, task_queue)
    async with build_worker(dev.client, task_queue):
        await fuzz(app, "/v1/hooks/flux", _flux_docs(), _signed)


def test_the_fixture_sets_are_real_payloads() -> None:
    """Every endpoint fuzzes at least one real fixture, and the fuzzed fixtures are those of tests/fixtures."""
    for path, globs in SIGNAL_ENDPOINTS.items():
        assert _docs(*globs), path
    assert Path(FIXTURES, "SOURCES.md").is_file()
    assert any("(fixloop branch)" in name for name in _gitlab_docs("a/b"))
