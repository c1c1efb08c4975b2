"""Contracts of the verification stage: the input and output of ``fixloop.activities.verify`` (``verify.judge``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from fixloop.core.models import ALERT_LABELS_MAX, ALERTS_LOOKED_UP_MAX, LABEL_NAME, WorkItem
from fixloop.core.parsing import clean
from fixloop.core.verification import (
    MetricResult,
    MetricStatus,
    VerdictResult,
    VerificationPolicy,
    change_line,
    headline,
)

MONITOR_IDS_MAX = 20
# an Alertmanager alert's labels, as matched on in its API (``fixloop.core.models.alertmanager_alerts``)
AlertLabels = Annotated[
    dict[
        Annotated[str, Field(pattern=LABEL_NAME)],
        Annotated[str, Field(max_length=200)],
    ],
    Field(min_length=1, max_length=ALERT_LABELS_MAX),
]


class JudgeInput(BaseModel):
    """scope: the GitOps repository; deployed_at: when the change runs (its rollout complete; the after window
    starts there); changed_at: when it began to take effect (Flux applied it; the baseline ends there; None: at
    deployed_at, never later). policy: the repository's
    ``verification:`` (``VerificationPolicy.from_policy``). service: the Datadog ``service`` tag (default: the work
    item's service, else the image name of its artifact). monitor_ids: the Datadog monitors that must have
    recovered (default: the work item's monitor when it is a Datadog monitor id). recovered: the workflow already
    saw the alert recover on the same cycle (no Datadog monitor is read). alerts: the label sets of the
    Alertmanager alerts that must have resolved (``fixloop.core.models.alertmanager_alerts``): looked up in
    Alertmanager's API, else in Prometheus's ``ALERTS``, else their recovery notification is the evidence."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    work_item: WorkItem
    deployed_at: AwareDatetime
    changed_at: AwareDatetime | None = None
    policy: VerificationPolicy = Field(default_factory=VerificationPolicy)
    service: str | None = Field(default=None, max_length=100)
    monitor_ids: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, max_length=MONITOR_IDS_MAX)
    recovered: bool = False
    alerts: list[AlertLabels] = Field(default_factory=list, max_length=ALERTS_LOOKED_UP_MAX)

    @model_validator(mode="after")
    def _change_before_deploy(self) -> JudgeInput:
        if self.changed_at is not None and self.changed_at > self.deployed_at:
            raise ValueError("changed_at is after deployed_at: a change runs only after it was applied")
        return self

    @property
    def baseline_end(self) -> datetime:
        """Where the baseline ends: ``changed_at``, else ``deployed_at``."""
        return self.changed_at or self.deployed_at


class Window(BaseModel):
    """``[start, end)``."""

    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    end: AwareDatetime


class MonitorResult(BaseModel):
    """A monitor's state when the verdict was taken: ``status`` pass (``OK``), fail (``Alert``/``Warn``) or
    no_data (``No Data``, another state, or not found). ``id`` None: an alert that is no Datadog monitor (an
    Alertmanager alert: ``name`` is its ``alertname`` and labels, ``state`` ``resolved``, ``active``,
    ``suppressed`` (silenced or inhibited: still firing) or ``unknown``)."""

    model_config = ConfigDict(extra="forbid")

    id: int | None
    name: str | None = None
    state: str
    status: MetricStatus


class Verdict(BaseModel):
    """The verdict and its evidence: ``summary`` (one line for a Jira reader), ``evidence`` (text lines: the
    windows, each monitor, each metric with medians, p-value and effect size, the score) and the same numbers as
    data: ``metrics`` (``fixloop.core.verification.MetricResult``), ``monitors``, ``baseline`` / ``after`` windows,
    ``score`` (0-100, None without data), ``service`` and ``env`` queried."""

    model_config = ConfigDict(extra="forbid")

    result: VerdictResult
    summary: str
    evidence: list[str] = Field(default_factory=list)
    service: str | None = None
    env: str | None = None
    baseline: Window | None = None
    after: Window | None = None
    metrics: list[MetricResult] = Field(default_factory=list)
    monitors: list[MonitorResult] = Field(default_factory=list)
    score: float | None = None

    def figures(self) -> list[str]:
        """The verdict's numbers, one plain-text line each: every metric before -> after with its unit and its
        status (``error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %): fail, critical``), every monitor's state,
        the score."""
        lines = [
            f"{change_line(m)}: {m.status.value.replace('_', ' ')}" + (", critical" if m.critical else "")
            for m in self.metrics
        ]
        lines += [
            f"monitor {m.id if m.id is not None else m.name}"
            + (f" ({m.name})" if m.id is not None and m.name else "")
            + f": {m.state} ({m.status.value.replace('_', ' ')})"
            for m in self.monitors
        ]
        if self.score is not None:
            lines.append(f"score {self.score:.0f}/100")
        return lines

    def headline(self, limit: int = 3, more: bool = True) -> str:
        """What decided it, in a few words (for a title): the failed metrics with their change, critical first, at
        most ``limit`` (``error rate +200 %``; with ``more`` the others counted: ``and 2 more``), else the monitors
        still alerting (``monitor 41000005 still Alert``), else the summary's start (at most 60 characters)."""
        metrics = headline(self.metrics, limit, more)
        alerting = [m for m in self.monitors if m.status is MetricStatus.FAIL]
        monitors = ", ".join(f"monitor {m.id if m.id is not None else m.name} still {m.state}" for m in alerting[:2])
        return "; ".join(p for p in (metrics, monitors) if p) or clean(self.summary, 60)


VERDICT_ORDER = (VerdictResult.PASS, VerdictResult.MARGINAL, VerdictResult.NO_DATA, VerdictResult.FAIL)
SUMMARY_MAX = 2_000  # characters of an every-service verdict's summary
EVIDENCE_MAX = 200  # its evidence lines


def every_service(verdicts: Sequence[tuple[str, Verdict]]) -> Verdict:
    """One verdict for a change verified in each service it touches (a bump of one package across several
    services' manifests): the worst result (fail > no_data > marginal > pass: each service must hold, one failing
    fails the change), the summary and evidence of each, prefixed by its service, every metric named
    ``<service>: <metric>`` (so the figures and the revert's headline say which service failed), every monitor,
    the lowest score, ``service`` the services listed (``catalog, storefront``); the windows and ``env`` are the
    first's (one deploy). The only verdict of a single service comes back as it is."""
    if len(verdicts) == 1:
        return verdicts[0][1]
    worst = max((v.result for _, v in verdicts), key=VERDICT_ORDER.index)
    summary = "; ".join(f"{name}: {v.result.value.replace('_', ' ')}: {v.summary}" for name, v in verdicts)
    scores = [v.score for _, v in verdicts if v.score is not None]
    first = verdicts[0][1]
    return Verdict(
        result=worst,
        summary=clean(f"{len(verdicts)} services verified, each must hold: {summary}", SUMMARY_MAX),
        evidence=[f"{name}: {line}" for name, v in verdicts for line in v.evidence][:EVIDENCE_MAX],
        service=", ".join(name for name, _ in verdicts),
        env=first.env,
        baseline=first.baseline,
        after=first.after,
        metrics=[m.model_copy(update={"name": f"{name}: {m.name}"}) for name, v in verdicts for m in v.metrics],
        monitors=[m for _, v in verdicts for m in v.monitors],
        score=min(scores) if scores else None,
    )
