"""The logs (``fixloop.app.logs``): FIXLOOP_LOG_FORMAT and FIXLOOP_LOG_LEVEL, the JSON keys and the Temporal context
they are lifted from, secrets masked in every part of a line, other libraries held at WARNING, and the gateway's
command writing its refusals as JSON lines (an activity's lines in a worker: ``tests/workflows/test_logs.py``)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio import activity, workflow

from fixloop.app.logs import FIELDS, configure, secret_values
from fixloop.app.worker import Integrations
from fixloop.core.config import ConfigError, LlmSettings, LogSettings, TemporalSettings, load

SECRET = "jira-api-t0ken-9f2e71"
WID = "remediate/team/gitops/catalog-os-rebuild-3f9a1c2b7d4e5f60"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What ``configure`` writes, for the test to configure; logging restored afterwards."""
    out = io.StringIO()
    yield out
    restore()


def restore() -> None:
    """Logging as pytest had it (``configure`` changed the root and the own loggers, and the SDK's adapters)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == "fixloop"]:
        root.removeHandler(h)
    root.setLevel(logging.WARNING)
    for name in ("fixloop", "temporalio"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    activity.logger.activity_info_on_message = True
    workflow.logger.workflow_info_on_message = True


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_settings_default_to_text_at_info_and_take_either_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (LogSettings().format, LogSettings().level) == ("text", "INFO")
    monkeypatch.setenv("FIXLOOP_LOG_FORMAT", "JSON")
    monkeypatch.setenv("FIXLOOP_LOG_LEVEL", "debug")
    assert (LogSettings().format, LogSettings().level) == ("json", "DEBUG")
    monkeypatch.setenv("FIXLOOP_LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError, match="^FIXLOOP_LOG_LEVEL: "):
        load(LogSettings)


def test_a_workflow_record_has_its_workflow_run_and_work_item_and_nothing_else_of_its_extra(
    logs: io.StringIO,
) -> None:
    configure(LogSettings(format="json"), "worker", stream=logs)
    details = {"attempt": 1, "namespace": "default", "run_id": "r-1", "task_queue": "fixloop", "workflow_id": WID,
               "workflow_type": "RemediationWorkflow"}  # fmt: skip  # what workflow.logger puts in extra
    logging.getLogger("temporalio.workflow").warning(
        "triage with %s failed: %s ({'attempt': 1})",
        "llm",
        "timeout",
        extra={"temporal_workflow": details, "workflow_info": {"input": SECRET}, "password": SECRET},
    )
    (doc,) = lines(logs)
    assert list(doc) == ["ts", "level", "logger", "message", "workflow_id", "run_id", "work_item"]
    assert doc["message"] == "triage with llm failed: timeout"  # the adapter's suffix: its keys are fields here
    assert (doc["workflow_id"], doc["run_id"], doc["work_item"]) == (WID, "r-1", "catalog-os-rebuild-3f9a1c2b7d4e5f60")
    assert SECRET not in logs.getvalue() and set(doc) <= set(FIELDS)


def test_explicit_work_item_and_jira_key_are_taken_from_extra(logs: io.StringIO) -> None:
    configure(LogSettings(format="json"), "gateway", stream=logs)
    logging.getLogger("fixloop.x").warning("hello", extra={"jira_key": "OPS-7", "work_item": "w-1"})
    (doc,) = lines(logs)
    assert (doc["jira_key"], doc["work_item"]) == ("OPS-7", "w-1") and "workflow_id" not in doc


@pytest.mark.parametrize("form", ["json", "text"])
def test_a_secret_is_masked_in_the_message_its_arguments_and_the_traceback(form: str, logs: io.StringIO) -> None:
    configure(LogSettings(format=form), "worker", secrets=[SECRET], stream=logs)
    log = logging.getLogger("fixloop.integrations.jira")
    log.warning(f"GET /rest/api/2/myself?token={SECRET}")
    log.warning("server said %r", {"token": SECRET})
    try:
        raise RuntimeError(f"401 for {SECRET}")
    except RuntimeError:
        log.exception("failed")
    text = logs.getvalue()
    assert SECRET not in text and text.count("***") == 3  # the traceback's last line named it
    if form == "json":
        docs = lines(logs)
        assert "RuntimeError: 401 for ***" in docs[2]["exception"] and docs[0]["message"].endswith("token=***")
    else:
        assert text.startswith("fixloop worker: WARNING fixloop.integrations.jira: GET /rest/api/2/myself?token=***\n")


@given(st.text(min_size=4, max_size=40))
def test_any_secret_value_is_masked_in_json(secret: str) -> None:
    """Whatever its characters (control characters that JSON escapes, quotes, backslashes, non-ASCII)."""
    out = io.StringIO()
    configure(LogSettings(format="json"), "worker", secrets=[secret], stream=out)
    try:
        logging.getLogger("fixloop.any").warning("before %s after", secret)
    finally:
        restore()
    message = json.loads(out.getvalue())["message"]
    assert secret not in message and "***" in message


def test_other_libraries_stay_at_warning_even_at_debug(logs: io.StringIO) -> None:
    configure(LogSettings(format="text", level="DEBUG"), "worker", stream=logs)
    logging.getLogger("httpx").info("HTTP Request: GET https://jira.example.com/?token=abc \"HTTP/1.1 200 OK\"")
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    logging.getLogger("openai._base_client").debug("Request options: {...}")
    logging.getLogger("fixloop.activities.plan").debug("reading fixloop.yaml")
    logging.getLogger("urllib3.connectionpool").warning("Retrying")
    assert logs.getvalue().splitlines() == [
        "fixloop worker: DEBUG fixloop.activities.plan: reading fixloop.yaml",
        "fixloop worker: WARNING urllib3.connectionpool: Retrying",
    ]


def test_the_level_holds_for_fixloop_and_temporal(logs: io.StringIO) -> None:
    configure(LogSettings(level="ERROR"), "worker", stream=logs)
    logging.getLogger("fixloop.core.triage").warning("fell back")
    logging.getLogger("temporalio.worker").warning("slow")
    logging.getLogger("fixloop.app.worker").error("broken")
    assert logs.getvalue() == "fixloop worker: ERROR fixloop.app.worker: broken\n"


def test_the_worker_masks_every_secret_of_the_settings_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "FIXLOOP_JIRA_URL": "https://jira.example.com",
        "FIXLOOP_JIRA_EMAIL": "bot@example.com",
        "FIXLOOP_JIRA_API_TOKEN": SECRET,
        "FIXLOOP_JIRA_PROJECT": "OPS",
        "FIXLOOP_TEMPORAL_API_KEY": "temporal-cloud-key-77",
        "OPENAI_API_KEY": "sk-proj-1234",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    integrations = Integrations.from_env()
    found = secret_values(TemporalSettings(), LlmSettings(), *integrations.settings())
    assert set(found) == {SECRET, "temporal-cloud-key-77", "sk-proj-1234"}  # the e-mail and URL are no secrets


async def test_fixloop_gateway_logs_its_refusals_as_json_lines_without_the_token() -> None:
    token = "gw-t0ken-5e1f9a"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")},
        "FIXLOOP_GATEWAY_TOKEN": token,
        "FIXLOOP_GATEWAY_SCOPE": "team/gitops",
        "FIXLOOP_TEMPORAL_ADDRESS": "127.0.0.1:1",  # never reached: a refused request needs no Temporal
        "FIXLOOP_LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fixloop", "gateway", "--port", "0", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    banner = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    url = banner.split()[2]  # fixloop gateway: http://127.0.0.1:<port> -> ...
    async with httpx.AsyncClient(base_url=url) as c:
        refused = await c.post("/v1/signals/datadog", content=b"{}", headers={"X-Fixloop-Token": token[::-1]})
    proc.send_signal(signal.SIGINT)
    code = await asyncio.wait_for(proc.wait(), 60)
    rest = (await proc.stderr.read()).decode().splitlines()
    assert refused.status_code == 401 and code == 0 and rest[-1] == "fixloop gateway: stopped"
    (doc,) = [json.loads(line) for line in rest if line.startswith("{")]
    assert (doc["level"], doc["logger"]) == ("INFO", "fixloop.app.gateway.app")
    assert doc["message"] == "POST signals/datadog: 401 unauthorized (X-Fixloop-Token)"
    assert set(doc) == {"ts", "level", "logger", "message"}  # no workflow, activity, work item or Jira key here
    assert token not in banner + "".join(rest)
