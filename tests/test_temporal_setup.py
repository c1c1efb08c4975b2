"""``fixloop temporal setup`` and the ``search`` line of ``fixloop config check`` on the real Temporal dev server (the
Java test server has no operator service): in a namespace registered for the test (custom search attributes are per
namespace there), the command registers fixloop's ``Fixloop*`` search attributes, again changes nothing, adds only
the missing ones, refuses a name registered with another type; the check names what is missing and the command."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from fixloop.app.check import run_checks
from fixloop.app.temporal import search_attributes
from fixloop.integrations.checks import Status
from fixloop.workflows.options import SEARCH_ATTRIBUTES
from tests.devserver import dev  # noqa: F401 - the fixture

NAMES = [k.name for k in SEARCH_ATTRIBUTES]


async def namespace(env: WorkflowEnvironment, **registered: int) -> str:
    """A new namespace of the dev server, with ``registered`` search attributes (name -> IndexedValueType)."""
    name = f"fixloop-{uuid.uuid4().hex[:8]}"
    await env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86_400))
    )
    if registered:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=name, search_attributes=registered)
        )
    return name


async def setup(env: WorkflowEnvironment, ns: str) -> tuple[int, str, str]:
    """``fixloop temporal setup`` against ``env`` in ``ns``: (exit status, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")}
    environ |= {"FIXLOOP_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
                "FIXLOOP_TEMPORAL_NAMESPACE": ns}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fixloop", "temporal", "setup", env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_setup_registers_every_search_attribute_then_changes_nothing(dev: WorkflowEnvironment) -> None:  # noqa: F811
    ns = await namespace(dev)
    assert (await search_attributes(dev.client, ns)).missing == tuple(NAMES)

    code, out, err = await setup(dev, ns)
    assert (code, err) == (0, ""), err
    assert out == f"fixloop temporal setup: namespace {ns}: registered {', '.join(NAMES)} (Keyword)\n"
    assert (await search_attributes(dev.client, ns)).complete

    again = await setup(dev, ns)
    assert again == (0, f"fixloop temporal setup: namespace {ns}: fixloop's search attributes are all registered; "
                        "nothing to do\n", "")  # fmt: skip


async def test_setup_adds_only_the_missing_ones(dev: WorkflowEnvironment) -> None:  # noqa: F811
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    ns = await namespace(dev, FixloopStage=keyword, FixloopOutcome=keyword)
    code, out, _ = await setup(dev, ns)
    rest = [n for n in NAMES if n not in ("FixloopStage", "FixloopOutcome")]
    assert code == 0 and out.endswith(f"registered {', '.join(rest)} (Keyword)\n")
    assert (await search_attributes(dev.client, ns)).complete


async def test_a_name_registered_with_another_type_is_refused_by_setup_and_the_check(
    dev: WorkflowEnvironment,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = await namespace(dev, FixloopService=IndexedValueType.INDEXED_VALUE_TYPE_TEXT)
    code, out, err = await setup(dev, ns)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err == (
        f"fixloop temporal setup: namespace {ns}: registered with another type than Keyword: FixloopService (Text); "
        "remove them first\n"
    )
    _environ(monkeypatch, dev, ns)
    search = next(line for line in (await run_checks(timeout=5)).lines if line.name == "search")
    assert str(search) == (
        f"FAIL search    namespace {ns}: not Keyword: FixloopService is Text (remove them, then run fixloop temporal "
        "setup)"
    )


def _environ(monkeypatch: pytest.MonkeyPatch, env: WorkflowEnvironment, ns: str) -> None:
    for key in list(os.environ):
        if key.startswith("FIXLOOP_") or key == "OPENAI_API_KEY":
            monkeypatch.delenv(key)
    monkeypatch.setenv("FIXLOOP_TEMPORAL_ADDRESS", env.client.service_client.config.target_host)
    monkeypatch.setenv("FIXLOOP_TEMPORAL_NAMESPACE", ns)


async def test_config_check_names_the_missing_search_attributes_and_the_command(
    dev: WorkflowEnvironment,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: os.PathLike[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.env
    ns = await namespace(dev, FixloopStage=IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD)
    _environ(monkeypatch, dev, ns)
    report = await run_checks(timeout=5)
    lines = {line.name: line for line in report.lines}
    assert lines["temporal"].status is Status.OK and report.failed() == ["search"] and report.exit_code == 1
    assert str(lines["search"]) == (
        f"FAIL search    namespace {ns}: search attributes not registered: {', '.join(NAMES[1:])} "
        "(run fixloop temporal setup)"
    )
    assert (await setup(dev, ns))[0] == 0
    fixed = {line.name: line for line in (await run_checks(timeout=5)).lines}["search"]
    assert str(fixed) == f"ok   search    namespace {ns}: fixloop's 8 search attributes registered"


async def test_setup_on_an_unknown_namespace_is_one_line_and_exit_2(dev: WorkflowEnvironment) -> None:  # noqa: F811
    code, out, err = await setup(dev, "no-such-namespace")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("fixloop temporal setup: namespace no-such-namespace: NOT_FOUND: ") and err.count("\n") == 1
