"""Contracts of the triage stage: the input of ``fixloop.activities.triage`` (``triage.group_signals``; its output
is ``fixloop.core.models.TriageResult``) and the error type the intake splits a window on."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.models import RecentDeploy, Signal
from fixloop.core.rca import Background

RESULT_TOO_LARGE = "TriageResultTooLarge"  # the ApplicationError type of a result too large for one payload


class GroupSignalsInput(BaseModel):
    """Input of ``triage.group_signals``: one closed intake window of ``scope``. ``incident_window``: alerts at most
    this far apart on connected entities are one incident when the activity has a topology (it reads the topology
    itself, so no topology travels in this payload); ``background``: the intake's alert history incidents are ranked
    with (``fixloop.core.incidents.remember``: at most 500 keys of at most 300 characters, under 160 KB)."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    signals: list[Signal]
    engine: str = "rules"
    recent_deploys: list[RecentDeploy] = Field(default_factory=list)
    incident_window: timedelta = Field(default=timedelta(minutes=15), gt=timedelta(0), le=timedelta(days=1))
    background: Background | None = None  # the intake's alert history (at most HISTORY_KEYS_MAX keys)
