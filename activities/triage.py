"""Triage as a Temporal activity: ``triage.group_signals`` runs the engines of ``fixloop.core.triage`` on one closed
intake window, handing the ``llm`` engine ``fixloop.integrations.llm.structured_completion`` (its failures become
``LlmTriageFailed``, so the engine falls back to ``rules``).

The topology the ``rules`` engine correlates alerts on (``fixloop.core.topology``) is the activity's own: handed in,
or read from the GitOps repository's ``fixloop.yaml`` (its ``topology:`` section, default branch) through GitLab on
each call when GitLab is configured. It never travels in a Temporal payload. No GitLab, no section, or a read or
parse failure (logged as a warning naming the error, never failing triage): no topology, per-monitor work items.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

from pydantic import BaseModel
from pydantic_core import to_json
from temporalio import activity
from temporalio.exceptions import ApplicationError

from fixloop.core.change.policy import POLICY_FILE
from fixloop.core.config import ConfigError, LlmSettings
from fixloop.core.models import RecentDeploy, Signal, TriageResult
from fixloop.core.parsing import clean
from fixloop.core.rca import Background
from fixloop.core.topology import Topology, from_policy_text
from fixloop.core.triage import LlmTriageFailed
from fixloop.core.triage import triage as triage_with
from fixloop.core.triage.rules import DEFAULT_INCIDENT_WINDOW
from fixloop.integrations.errors import IntegrationError
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
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
    topology: Topology | None = None,
    incident_window: timedelta = DEFAULT_INCIDENT_WINDOW,
    background: Background | None = None,
) -> TriageResult:
    """Triage ``signals`` with ``engine`` (``fixloop.core.triage.triage``); the ``llm`` engine on the endpoint
    ``llm`` (None: read from the environment, ``LlmSettings.load``). An ``llm`` engine that is not configured
    raises ``ConfigError``; every failure of a configured one falls back to ``rules`` (noted in each work item);
    an unknown engine raises ``ValueError``. ``topology``/``incident_window``/``background``: the ``rules``
    engine's incident correlation and the alert history it ranks with (None: none)."""
    run = functools.partial(
        triage_with,
        signals,
        recent_deploys=recent_deploys,
        topology=topology,
        incident_window=incident_window,
        background=background,
    )
    if engine != "llm":
        return await run(engine=engine)
    settings = llm if llm is not None else LlmSettings.load()
    settings.require()
    return await run(engine=engine, complete=functools.partial(_complete, settings), max_entries=settings.max_entries)


def read_topology(gitlab: GitLabClient) -> Topology:
    """The topology of ``fixloop.yaml`` on the default branch of ``gitlab``'s project (empty without the file or
    its ``topology:`` section). Raises ``IntegrationError`` (GitLab) or ``ValueError`` (a malformed file)."""
    return from_policy_text(gitlab.read_file(POLICY_FILE, gitlab.default_branch()))


class TriageActivities:
    """The triage activity; built once by the worker with the ``llm`` engine's settings (None: read from the
    environment when the engine is first asked for), and the topology: ``topology`` as given, else read through
    ``gitlab`` on each call (``read_topology``), else none."""

    def __init__(
        self, llm: LlmSettings | None = None, *, topology: Topology | None = None, gitlab: GitLabSettings | None = None
    ) -> None:
        self.llm = llm
        self.topology = topology
        self.gitlab = GitLabClient(gitlab) if gitlab is not None and topology is None else None

    async def _topology(self) -> Topology | None:
        if self.topology is not None or self.gitlab is None:
            return self.topology
        try:
            return await asyncio.to_thread(read_topology, self.gitlab)
        except (IntegrationError, ValueError) as e:
            reason = f"{type(e).__name__} reading {POLICY_FILE}: {clean(str(e), 300)}"
            activity.logger.warning("no topology for triage (%s)", reason)
            return None

    @activity.defn(name=GROUP_SIGNALS)
    async def group_signals(self, inp: GroupSignalsInput) -> TriageResult:
        """Group one window's signals into work items (``triage``). A setup mistake (an unknown engine, an
        unconfigured ``llm``) is a non-retryable ``ApplicationError`` of type ``TriageConfigError``; the intake
        then triages the window with ``rules``. A result over ``RESULT_MAX_BYTES`` of JSON (it would not fit one
        Temporal payload with the child starts it leads to) is a non-retryable ``ApplicationError`` of type
        ``TriageResultTooLarge``: the intake triages the signals again in two halves."""
        try:
            result = await triage(
                inp.signals,
                engine=inp.engine,
                recent_deploys=inp.recent_deploys,
                llm=self.llm,
                topology=await self._topology(),
                incident_window=inp.incident_window,
                background=inp.background,
            )
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
