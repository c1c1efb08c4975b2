"""Verification: compare metrics before and after the deploy, check the triggering monitor, and judge (stage 6).

``verify.judge`` queries Datadog (``fixloop.integrations.datadog.api``, ``GET /api/v1/query`` and
``GET /api/v1/monitor/{id}``) for each metric of the policy over ``[deployed_at - window, deployed_at + window)``
(one query per metric, split at the deploy: the baseline is ``[deployed_at - window, deployed_at)``, the after
window ``[deployed_at, deployed_at + window)``; the workflow waits the window before calling) and judges them with
``fixloop.core.verification`` (Kayenta / Argo Rollouts semantics, see there).

For an alert-driven work item the triggering monitor must have recovered: ``recovered`` (the workflow saw the
alert's ``recovered`` transition on the same cycle) is enough; otherwise each of ``monitor_ids`` (default: the work
item's ``monitor_id`` when it is a Datadog monitor id) is read: ``overall_state`` ``OK`` passes, ``Alert`` or
``Warn`` fails the verdict, ``No Data`` (or any other state, or a deleted monitor) gives ``no_data`` at best.

Units: a metric's values are in its check's ``unit``, else in the unit Datadog reports for the series (the
``unit`` list of the query response: the unit and per-unit names, e.g. ``error/second``), else none.

Verdict order: fail (a metric verdict of fail, or a monitor still alerting) > no_data > marginal > pass.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from temporalio import activity

from fixloop.activities.errors import as_application_errors
from fixloop.core.parsing import clean
from fixloop.core.service import service_of
from fixloop.core.verification import (
    TAG_VALUE,
    MetricCheck,
    MetricResult,
    MetricStatus,
    VerdictResult,
    compare,
    fmt_duration,
    render_query,
    score,
    split_points,
)
from fixloop.core.verification import judge as judge_results
from fixloop.integrations.datadog.api import DatadogClient, DatadogSettings, Series
from fixloop.integrations.errors import Invalid, NotFound
from fixloop.workflows.contracts.verify import JudgeInput, MonitorResult, Verdict, Window

# Temporal activity name: unchanged (running histories and the worker's metrics name it).
JUDGE = "verify.judge"

# Datadog monitor overall_state values (docs.datadoghq.com/api/latest/monitors/#get-a-monitors-details).
RECOVERED_STATES = frozenset({"OK"})
ALERTING_STATES = frozenset({"Alert", "Warn"})
_ORDER = (VerdictResult.PASS, VerdictResult.MARGINAL, VerdictResult.NO_DATA, VerdictResult.FAIL)


# --- the implementation ----------------------------------------------------------------------------------------

_MARKUP = re.compile(r"[\[\]{}|!\\]")  # what makes links, macros or tables in Jira wiki text: dropped from names


def _plain(value: str, limit: int) -> str:
    """A name from Datadog or an alert as plain, bounded, inert text for the evidence."""
    return clean(_MARKUP.sub("", value), limit)


def unit_of(reported: str | None) -> str | None:
    """Datadog's unit of a series (``Series.unit``: the unit and per-unit names, ``error/second``) as a display unit
    (``fixloop.core.verification.UNIT``: other characters dropped, at most 20), None when it names none."""
    shown = re.sub(r"[^A-Za-z0-9%/._ -]", "", reported or "").strip()[:20].strip()
    return shown or None


def _merge_series(series: list[Series]) -> list[tuple[float, float | None]]:
    """One point list: a query should give one series; several (a ``by`` clause) are averaged per timestamp."""
    if len(series) == 1:
        return series[0].points
    per_ts: dict[float, list[float]] = {}
    for s in series:
        for t, v in s.points:
            if v is not None:
                per_ts.setdefault(t, []).append(v)
    return [(t, sum(vs) / len(vs)) for t, vs in sorted(per_ts.items())]


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def combine(metrics: VerdictResult, monitors: list[MonitorResult]) -> VerdictResult:
    """The verdict of the metrics and the monitors: the worse of fail > no_data > marginal > pass."""
    worst = metrics
    for m in monitors:
        v = {
            MetricStatus.PASS: VerdictResult.PASS,
            MetricStatus.FAIL: VerdictResult.FAIL,
            MetricStatus.NO_DATA: VerdictResult.NO_DATA,
        }[m.status]
        if _ORDER.index(v) > _ORDER.index(worst):
            worst = v
    return worst


class VerifyActivities:
    """The verification activity on Datadog (``settings``)."""

    def __init__(self, datadog: DatadogSettings) -> None:
        self.settings = datadog
        self.client = DatadogClient(datadog)

    @activity.defn(name=JUDGE)
    async def judge(self, inp: JudgeInput) -> Verdict:
        """The verdict of the deploy at ``inp.deployed_at`` (see the module docstring). Datadog errors are raised as
        ``ApplicationError`` (retryable for transport and 429/5xx); a query Datadog refuses (400) makes that metric
        ``no_data`` with the reason in its evidence, a deleted monitor makes it ``no_data`` too."""
        with as_application_errors():
            return await asyncio.to_thread(self._judge, inp)

    # blocking: runs in a thread
    def _judge(self, inp: JudgeInput) -> Verdict:
        policy, item, d = inp.policy, inp.work_item, inp.deployed_at
        service = service_of(item, inp.service)
        env = item.env if item.env and TAG_VALUE.match(item.env) else policy.env
        baseline = Window(start=d - policy.window, end=d)
        after = Window(start=d, end=d + policy.window)
        evidence = [
            f"windows: baseline {_iso(baseline.start)} to {_iso(baseline.end)}, after {_iso(after.start)} to "
            f"{_iso(after.end)} ({fmt_duration(policy.window)} each, {policy.interval_s} s points); "
            f"service {service or 'unknown'}{f', env {env}' if env else ''}"
        ]
        monitors = self._monitors(inp, evidence)

        if service is None:
            what = _plain(inp.service or item.service or item.artifact or "none", 100)
            metric_verdict = VerdictResult.NO_DATA
            summary = f"No service to verify: the work item names none usable as a Datadog service tag ({what})."
            results: list[MetricResult] = []
        else:
            results = [self._metric(check, service, env, inp) for check in policy.checks_for(service)]
            metric_verdict, summary, lines = judge_results(results, policy, subject=service)
            evidence += lines
        result = combine(metric_verdict, monitors)
        alerting = [m for m in monitors if m.status is MetricStatus.FAIL]
        silent = [m for m in monitors if m.status is MetricStatus.NO_DATA]
        if alerting:
            names = ", ".join(f"{m.id} ({m.name or 'unnamed'})" for m in alerting)
            state = alerting[0].state
            summary = (
                f"The triggering monitor {names} is still {state} {fmt_duration(policy.window)} after the deploy"
                + ("." if metric_verdict is VerdictResult.PASS else f"; {summary}")
            )
        elif silent and result is VerdictResult.NO_DATA and metric_verdict is not VerdictResult.NO_DATA:
            ids = ", ".join(str(m.id or m.name) for m in silent)
            summary = f"Cannot tell whether the triggering monitor recovered (monitor {ids}: no data); {summary}"
        elif monitors and result is VerdictResult.PASS:
            names = ", ".join(f"{m.id} ({m.name or 'unnamed'})" for m in monitors)
            summary = f"The triggering monitor {names} recovered; {summary[:1].lower()}{summary[1:]}"
        return Verdict(
            result=result,
            summary=clean(summary, 500),
            evidence=[clean(line, 1_000) for line in evidence],
            service=service,
            env=env,
            baseline=baseline,
            after=after,
            metrics=results,
            monitors=monitors,
            score=score(results),
        )

    def _metric(self, check: MetricCheck, service: str, env: str | None, inp: JudgeInput) -> MetricResult:
        policy, d = inp.policy, inp.deployed_at
        try:
            query = render_query(check.query, service, env, policy.interval_s)
        except ValueError as e:
            return compare([], [], check, policy).model_copy(update={"reason": f"not queried: {e}"})
        try:
            series = self.client.query_metrics(query, d - policy.window, d + policy.window)
        except Invalid as e:
            result = compare([], [], check, policy)
            return result.model_copy(update={"reason": f"Datadog refused the query: {e.message}", "query": query})
        interval = next((s.interval for s in series if s.interval > 0), policy.interval_s)
        before, after = split_points(_merge_series(series) if series else [], d, policy.window, interval)
        reported = next((unit_of(s.unit) for s in series if unit_of(s.unit)), None)
        if check.unit is None and reported:  # the check names none: Datadog's unit of the series
            check = check.model_copy(update={"unit": reported})
        return compare(before, after, check, policy).model_copy(update={"query": query})

    def _monitors(self, inp: JudgeInput, evidence: list[str]) -> list[MonitorResult]:
        item = inp.work_item
        ids = list(inp.monitor_ids)
        if not ids and item.monitor_id and re.fullmatch(r"[0-9]{1,18}", item.monitor_id):
            ids = [int(item.monitor_id)]
        if inp.recovered:
            if ids or item.monitor_id:
                evidence.append("monitor: recovered (the alert's recovery was received on the same alert cycle)")
            return []
        if not ids:
            if item.monitor_id:  # an alert whose monitor Datadog cannot be asked about (e.g. Alertmanager)
                evidence.append(
                    f"monitor {_plain(item.monitor_id, 100)}: NO DATA: no recovery received and it is not a Datadog "
                    "monitor id to look up"
                )
                name = _plain(item.monitor_id, 100)
                return [MonitorResult(id=None, name=name, state="Unknown", status=MetricStatus.NO_DATA)]
            return []
        out = []
        for mid in ids:
            try:
                mon = self.client.get_monitor(mid)
            except NotFound:
                out.append(MonitorResult(id=mid, state="Not found", status=MetricStatus.NO_DATA))
                evidence.append(f"monitor {mid}: NO DATA: not found in Datadog (deleted?)")
                continue
            state = clean(mon.overall_state, 40)
            if state in RECOVERED_STATES:
                status = MetricStatus.PASS
            elif state in ALERTING_STATES:
                status = MetricStatus.FAIL
            else:
                status = MetricStatus.NO_DATA
            name = _plain(mon.name, 200)
            out.append(MonitorResult(id=mid, name=name, state=state, status=status))
            verb = {MetricStatus.PASS: "recovered", MetricStatus.FAIL: "still alerting"}.get(status, "state unknown")
            evidence.append(f"monitor {mid} ({name}): {status.value.upper().replace('_', ' ')}: {verb} ({state})")
        return out
