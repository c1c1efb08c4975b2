"""Triage as a Temporal activity: ``triage.group_signals`` runs the engines of ``fixloop.core.triage`` on one closed
intake window, handing the ``llm`` engine ``fixloop.integrations.llm.structured_completion`` (its failures become
``LlmTriageFailed``, so the engine falls back to ``rules``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel
from pydantic_core import to_json
from temporalio import activity
from temporalio.exceptions import ApplicationError

from fixloop.core.config import ConfigError, LlmSettings
from fixloop.core.models import RecentDeploy, Signal, TriageResult
from fixloop.core.triage import LlmTriageFailed
from fixloop.core.triage import triage as triage_with
from fixloop.integrations.llm import LlmError, structured_completion
from fixloop.workflows.contracts.triage import RESULT_TOO_LARGE, GroupSignalsInput

# Temporal activity name: unchanged (running histories and the worker's metrics name it).
GROUP_SIGNALS = "triage.group_signals"
RESULT_MAX_BYTES = 768 * 1024  # a triage result as JSON; Temporal refuses a payload over 2 MiB

T = TypeVar("T", bound=BaseModel)


async def _complete(settings: LlmSettings, *, system: str, user: str, schema: type[T]) -> T:
    """``structured_completion`` on ``settings``; every ``LlmError`` as ``LlmTriageFailed`` (its reason kept)."""
    try:
        return await structured_completion(settings, system=system, user=user, schema=schema)
    except LlmError as e:
        raise LlmTriageFailed(str(e)) from e


async def triage(
    signals: Sequence[Signal],
    *,
    engine: str = "rules",
    recent_deploys: Sequence[RecentDeploy] = (),
    llm: LlmSettings | None = None,
) -> TriageResult:
    """Triage ``signals`` with ``engine`` (``fixloop.core.triage.triage``); the ``llm`` engine on the endpoint
    ``llm`` (None: read from the environment, ``LlmSettings.load``). An ``llm`` engine that is not configured
    raises ``ConfigError``; every failure of a configured one falls back to ``rules`` (noted in each work item);
    an unknown engine raises ``ValueError``."""
    if engine != "llm":
        return await triage_with(signals, engine=engine, recent_deploys=recent_deploys)
    settings = llm if llm is not None else LlmSettings.load()
    settings.require()
    return await triage_with(
        signals,
        engine=engine,
        recent_deploys=recent_deploys,
        complete=functools.partial(_complete, settings),
        max_entries=settings.max_entries,
    )


class TriageActivities:
    """The triage activity; built once by the worker with the ``llm`` engine's settings (None: read from the
    environment when the engine is first asked for)."""

    def __init__(self, llm: LlmSettings | None = None) -> None:
        self.llm = llm

    @activity.defn(name=GROUP_SIGNALS)
    async def group_signals(self, inp: GroupSignalsInput) -> TriageResult:
        """Group one window's signals into work items (``triage``). A setup mistake (an unknown engine, an
        unconfigured ``llm``) is a non-retryable ``ApplicationError`` of type ``TriageConfigError``; the intake
        then triages the window with ``rules``. A result over ``RESULT_MAX_BYTES`` of JSON (it would not fit one
        Temporal payload with the child starts it leads to) is a non-retryable ``ApplicationError`` of type
        ``TriageResultTooLarge``: the intake triages the signals again in two halves."""
        try:
            result = await triage(inp.signals, engine=inp.engine, recent_deploys=inp.recent_deploys, llm=self.llm)
        except (ConfigError, ValueError) as e:
            raise ApplicationError(str(e), type="TriageConfigError", non_retryable=True) from e
        size = len(to_json(result))
        if size > RESULT_MAX_BYTES:
            raise ApplicationError(
                f"triage result of {len(inp.signals)} signals is {size} bytes, over {RESULT_MAX_BYTES}",
                type=RESULT_TOO_LARGE,
                non_retryable=True,
            )
        return result
