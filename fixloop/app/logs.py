"""The logs of ``fixloop worker``, ``fixloop gateway`` and the other commands, on stderr: ``FIXLOOP_LOG_FORMAT``
``text`` (default) or ``json``, at ``FIXLOOP_LOG_LEVEL`` (default ``INFO``; ``fixloop.core.config.LogSettings``).

``json`` writes JSON Lines, one object per record, with these keys (absent when not known):

=============  ================================================================================================
``ts``         when, RFC 3339 in UTC with milliseconds (``2024-06-01T12:00:05.123Z``)
``level``      ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``
``logger``     the logger's name (``temporalio.activity``, ``fixloop.app.gateway.app``, ...)
``message``    the message, formatted; the Temporal adapters' own suffix (``({'attempt': 1, ...})``) left out
``workflow_id`` the workflow the record is about (a workflow's, or the workflow of the activity)
``run_id``     that workflow's run
``activity``   the activity type (``jira.open_work_item``) of a record logged inside an activity
``work_item``  the work item id (``catalog-os-rebuild-3f9a1c2b7d4e5f60``): the activity input's work item, else
               the last segment of a loop's workflow id ``remediate/<scope>/<work-item-id>``
``jira_key``   the Jira issue (``OPS-1``) of a ``jira.*`` activity's input, or a record's ``extra={"jira_key": }``
``exception``  the traceback of a record logged with one
=============  ================================================================================================

The Temporal context comes from the SDK's logger adapters (``workflow.logger`` puts ``temporal_workflow`` into a
record's ``extra``, ``activity.logger`` ``temporal_activity``; temporalio's ``workflow/_sandbox.py`` and
``activity.py``), or, for a plain ``logging`` logger called inside an activity, from the running activity
(``temporalio.activity.info``). The work item and Jira key of an activity are read from its input by the worker's
interceptor (``LogContext``, in a context variable that ``asyncio.to_thread`` carries). Nothing else of a record's
``extra`` is written: an activity's input or info can hold anything.

``text`` is ``fixloop <command>: LEVEL logger: message``, the Temporal adapters' suffix kept.

Secrets never reach a line: every secret value the process read (``configure(secrets=...)``; each ``SecretStr`` of
its settings, ``secret_values``) is replaced by ``***`` in the whole line, traceback included, in either format;
and only fixloop's and Temporal's loggers (``OWN_LOGGERS``) log below ``WARNING``: the other libraries' (the HTTP
clients log each request with its URL at ``INFO``, their headers at ``DEBUG``) stay at ``WARNING`` or above.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings
from temporalio import activity, workflow
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from fixloop.core.config import LogSettings

FIELDS = ("ts", "level", "logger", "message", "workflow_id", "run_id", "activity", "work_item", "jira_key")
OWN_LOGGERS = ("fixloop", "temporalio")  # at FIXLOOP_LOG_LEVEL; every other logger at WARNING or above
LOOP_PREFIX = "remediate/"  # a loop's workflow id: remediate/<scope>/<work-item-id>
MASK = "***"
_HANDLER_NAME = "fixloop"

_activity_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("fixloop_log_context")


def secret_values(*settings: BaseSettings | None) -> list[str]:
    """Every ``SecretStr`` value of ``settings`` (None: skipped) of at least 4 characters, to mask in the logs."""
    out = []
    for s in settings:
        if s is None:
            continue
        for name in type(s).model_fields:
            value = getattr(s, name)
            if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
                out.append(value.get_secret_value())
    return out


def _work_item_of(workflow_id: str | None) -> str | None:
    if workflow_id and workflow_id.startswith(LOOP_PREFIX):
        return workflow_id.rsplit("/", 1)[-1]
    return None


def context(record: logging.LogRecord) -> dict[str, str]:
    """The Temporal and fixloop context of ``record`` (the optional keys of ``FIELDS``), where known."""
    out: dict[str, str] = {}
    wf = getattr(record, "temporal_workflow", None)
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, Mapping):
        out["workflow_id"] = str(act.get("workflow_id") or "")
        out["run_id"] = str(act.get("workflow_run_id") or "")
        out["activity"] = str(act.get("activity_type") or "")
    elif isinstance(wf, Mapping):
        out["workflow_id"] = str(wf.get("workflow_id") or "")
        out["run_id"] = str(wf.get("run_id") or "")
    elif activity.in_activity():  # a plain logger (the core's, an integration's) inside an activity
        info = activity.info()
        out.update(workflow_id=info.workflow_id or "", run_id=info.workflow_run_id or "", activity=info.activity_type)
    if activity.in_activity():
        out.update(_activity_context.get({}))
    for key in ("work_item", "jira_key"):
        value = getattr(record, key, None)
        if isinstance(value, str) and value:
            out[key] = value
    if "work_item" not in out and (item := _work_item_of(out.get("workflow_id"))):
        out["work_item"] = item
    return {k: v for k, v in out.items() if v}


def _suffix_free(record: logging.LogRecord) -> str:
    """The message without the suffix the Temporal adapters append (`` ({...})``): its keys are fields here."""
    message = record.getMessage()
    details = getattr(record, "temporal_activity", None) or getattr(record, "temporal_workflow", None)
    if isinstance(details, Mapping) and message.endswith(")"):
        cut = message.rfind(" ({")
        if cut >= 0:
            return message[:cut]
    return message


class _Masking(logging.Formatter):
    def __init__(self, secrets: Iterable[str], fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # a longer secret first

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


class JsonFormatter(_Masking):
    """One JSON object per record (``FIELDS``, ``exception``), secrets masked (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "ts": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": _suffix_free(record),
        }
        doc.update(context(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        # masked before encoding (JSON escapes would hide a secret with a control character from a mask after)
        return json.dumps({k: self.mask(str(v)) for k, v in doc.items()}, ensure_ascii=False)


class TextFormatter(_Masking):
    """``fixloop <command>: LEVEL logger: message`` (with a traceback when there is one), secrets masked."""

    def __init__(self, command: str, secrets: Iterable[str]) -> None:
        super().__init__(secrets, f"fixloop {command}: %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


def configure(
    settings: LogSettings, command: str, *, secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Log the records of ``OWN_LOGGERS`` at ``settings.level`` or above, and the other libraries' at ``WARNING``
    or above, to ``stream`` (default stderr) in ``settings.format``, for the process ``fixloop <command>``.
    Replaces the handler an earlier call installed (a test may call it again); returns the handler."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(secrets) if settings.format == "json" else TextFormatter(command, secrets))
    root.addHandler(handler)
    level = logging.getLevelName(settings.level)
    root.setLevel(max(level, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # JSON has the context as keys: the adapters need not append it to the message (text keeps it)
    activity.logger.activity_info_on_message = settings.format != "json"
    workflow.logger.workflow_info_on_message = settings.format != "json"
    return handler


class LogContext(Interceptor):
    """The worker's interceptor that names, for the logs of an activity, its input's work item (``work_item.id``)
    and Jira issue (``jira_key``, or ``key`` of a ``jira.*`` activity's input)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityLogContext(next)


class _ActivityLogContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        found: dict[str, str] = {}
        arg = input.args[0] if input.args else None
        item = getattr(arg, "work_item", None)
        if isinstance(getattr(item, "id", None), str):
            found["work_item"] = item.id
        key = getattr(arg, "jira_key", None)
        if key is None and activity.info().activity_type.startswith("jira."):
            key = getattr(arg, "key", None)
        if isinstance(key, str) and key:
            found["jira_key"] = key
        token = _activity_context.set(found)
        try:
            return await super().execute_activity(input)
        finally:
            _activity_context.reset(token)
