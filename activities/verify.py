"""Verification: compare metrics before and after the deploy and judge (stage 6). Interface here; the metrics
queries and the statistics are issue 6's."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from fixloop.models import WorkItem

JUDGE = "verify.judge"


class VerdictResult(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NO_DATA = "no_data"


class JudgeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    deployed_at: AwareDatetime


class Verdict(BaseModel):
    """The verdict and its evidence (per metric: windows, medians, p-value, effect size), as text lines."""

    model_config = ConfigDict(extra="forbid")

    result: VerdictResult
    summary: str
    evidence: list[str] = Field(default_factory=list)
