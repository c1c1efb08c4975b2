"""Verification: compare metrics before and after the deploy, check the triggering monitors and alerts, and judge
(stage 6).

``verify.judge`` reads each metric of the policy from its provider (``MetricCheck.provider``) over
``[changed_at - window, deployed_at + window)`` (the baseline is ``[changed_at - window, changed_at)``, before Flux
applied the change; the after window ``[deployed_at, deployed_at + window)``, once its rollout is complete; the
buckets between, when old and new pods both serve, are left out; ``changed_at`` defaults to ``deployed_at``; the
workflow waits the window before calling) and judges them with ``fixloop.core.verification`` (Kayenta / Argo
Rollouts semantics, see there):

* Datadog (``fixloop.integrations.datadog.api``, ``GET /api/v1/query``): one query over both windows; a point's
  timestamp is the start of its bucket.
* Prometheus (``fixloop.integrations.prometheus``, ``GET /api/v1/query_range``, step = the policy's interval, on
  the grid of ``deployed_at`` from the first step whose bucket starts at or after ``changed_at - window`` to
  ``deployed_at + window``, ``prometheus_window``): a point at ``t`` is the expression at ``t`` (a
  ``rate(x[interval])`` is over ``(t - interval, t]``), so it stands for the bucket ``[t - step, t)``
  (``prometheus_points``): the after window's buckets then start exactly at the deploy, none straddles it.

Several series of one query (no aggregation) are averaged per timestamp. A provider that is not configured, or a
query it refuses (400/422), makes that metric ``no_data`` with the reason in its evidence.

For an alert-driven work item the triggering alerts must have recovered:

* Datadog monitors: ``recovered`` (the workflow saw the alert's ``recovered`` transition on the same cycle) is
  enough; otherwise each of ``monitor_ids`` (default: the work item's ``monitor_id`` when it is a Datadog monitor id)
  is read: ``overall_state`` ``OK`` passes, ``Alert`` or ``Warn`` fails the verdict, ``No Data`` (or any other state,
  or a deleted monitor) gives ``no_data`` at best.
* Alertmanager alerts (``alerts``: their label sets): asked of the source whatever the webhooks said (a webhook is a
  hint): Alertmanager's ``GET /api/v2/alerts`` with one equality matcher per label, silenced, inhibited and
  unprocessed alerts included: none left passes (resolved), any fails (``active``; ``suppressed``: a silence hides
  an alert, it does not make it recover). Without Alertmanager, or when it does not answer, Prometheus's
  ``ALERTS{alertname=..., alertstate="firing"}`` at the time of the verdict: a firing series whose labels agree with
  the alert's (those both have) fails. Without either, the recovery notification is the evidence (``recovered``),
  else ``no_data``.

Units: a metric's values are in its check's ``unit``, else in the unit Datadog reports for the series (the
``unit`` list of the query response: the unit and per-unit names, e.g. ``error/second``), else none.

Verdict order: fail (a metric verdict of fail, or a monitor still alerting) > no_data > marginal > pass.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from temporalio import activity

from fixloop.activities.errors import as_application_errors
from fixloop.activities.heartbeat import heartbeat, in_thread
from fixloop.core.parsing import clean
from fixloop.core.service import service_of
from fixloop.core.verification import (
    TAG_VALUE,
    MetricCheck,
    MetricResult,
    MetricStatus,
    Provider,
    VerdictResult,
    compare,
    fmt_duration,
    promql_string,
    render,
    score,
    split_points,
)
from fixloop.core.verification import judge as judge_results
from fixloop.integrations.alertmanager.api import AlertmanagerClient, AlertmanagerSettings
from fixloop.integrations.datadog.api import DatadogClient, DatadogSettings, Series
from fixloop.integrations.errors import IntegrationError, Invalid, NotFound
from fixloop.integrations.prometheus import PrometheusClient, PrometheusSettings, PromSeries
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


Points = list[tuple[float, float | None]]


def merge_series(series: list[Points]) -> Points:
    """One point list: a query should give one series; several (a ``by`` clause) are averaged per timestamp."""
    if len(series) == 1:
        return series[0]
    per_ts: dict[float, list[float]] = {}
    for points in series:
        for t, v in points:
            if v is not None:
                per_ts.setdefault(t, []).append(v)
    return [(t, sum(vs) / len(vs)) for t, vs in sorted(per_ts.items())]


def prometheus_points(series: list[PromSeries], step_s: int) -> Points:
    """The points of a ``query_range`` answer (``fixloop.integrations.prometheus.parse_matrix``) as buckets: each
    series' value at ``t`` stands for ``[t - step_s, t)`` (the expression looks back from its evaluation time), the
    series averaged per timestamp."""
    return merge_series([[(t - step_s, v) for t, v in s.points] for s in series]) if series else []


def datadog_points(series: list[Series]) -> Points:
    """The points of a Datadog query's series (``fixloop.integrations.datadog.api.parse_series``): their
    timestamps are already bucket starts; several series averaged per timestamp."""
    return merge_series([s.points for s in series]) if series else []


def prometheus_window(
    deployed_at: datetime, window_s: float, step_s: int, changed_at: datetime | None = None
) -> tuple[float, float]:
    """``(start, end)`` epoch seconds of the ``query_range`` whose buckets (``prometheus_points``) tile the after
    window exactly and cover the baseline: on the grid of ``deployed_at`` (step ``step_s``), from the first point
    whose bucket starts at or after ``changed_at - window`` (default ``deployed_at``) to ``deployed_at + window``."""
    d = deployed_at.timestamp()
    c = min(d, changed_at.timestamp()) if changed_at is not None else d
    steps_back = math.floor((d - (c - window_s)) / step_s)  # whole buckets from the baseline's start to the deploy
    return d - steps_back * step_s + step_s, d + window_s


def alert_name(labels: dict[str, str]) -> str:
    """An alert's label set for a reader (no brace, which Jira would read as a macro):
    ``HighErrorRatio (env="production", service="catalog")``."""
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "alertname")
    return f"{labels.get('alertname', 'alert')} ({rest})" if rest else labels.get("alertname", "alert")


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


_UNCONFIGURED = {
    Provider.DATADOG: "Datadog is not configured (FIXLOOP_DATADOG_API_KEY)",
    Provider.PROMETHEUS: "Prometheus is not configured (FIXLOOP_PROMETHEUS_URL)",
}


class VerifyActivities:
    """The verification activity on the metrics providers and alert sources configured: Datadog (``datadog``),
    Prometheus (``prometheus``), Alertmanager (``alertmanager``); any may be None."""

    def __init__(
        self,
        datadog: DatadogSettings | None = None,
        prometheus: PrometheusSettings | None = None,
        alertmanager: AlertmanagerSettings | None = None,
    ) -> None:
        self.settings = datadog
        self.client = DatadogClient(datadog) if datadog is not None else None
        self.prometheus = PrometheusClient(prometheus) if prometheus is not None else None
        self.alertmanager = AlertmanagerClient(alertmanager) if alertmanager is not None else None

    @activity.defn(name=JUDGE)
    async def judge(self, inp: JudgeInput) -> Verdict:
        """The verdict of the deploy at ``inp.deployed_at`` (see the module docstring). Provider errors are raised
        as ``ApplicationError`` (retryable for transport and 429/5xx); a query a provider refuses (400/422) makes that
        metric ``no_data`` with the reason in its evidence, a deleted monitor makes it ``no_data`` too."""
        with as_application_errors():
            return await in_thread(self._judge, inp)

    # blocking: runs in a thread
    def _judge(self, inp: JudgeInput) -> Verdict:
        policy, item, d, c = inp.policy, inp.work_item, inp.deployed_at, inp.baseline_end
        service = service_of(item, inp.service)
        env = item.env if item.env and TAG_VALUE.match(item.env) else policy.env
        baseline = Window(start=c - policy.window, end=c)
        after = Window(start=d, end=d + policy.window)
        gap = (d - c).total_seconds()
        between = f"; the {gap:.0f} s between (the rollout) left out" if gap >= 0.5 else ""
        evidence = [
            f"windows: baseline {_iso(baseline.start)} to {_iso(baseline.end)}, after {_iso(after.start)} to "
            f"{_iso(after.end)} ({fmt_duration(policy.window)} each, {policy.interval_s} s points{between}); "
            f"service {service or 'unknown'}{f', env {env}' if env else ''}"
        ]
        monitors = self._monitors(inp, evidence)

        if service is None:
            what = _plain(inp.service or item.service or item.artifact or "none", 100)
            metric_verdict = VerdictResult.NO_DATA
            summary = f"No service to verify: the work item names none usable as a service tag ({what})."
            results: list[MetricResult] = []
        else:
            results = [self._metric(check, service, env, inp) for check in policy.checks_for(service)]
            metric_verdict, summary, lines = judge_results(results, policy, subject=service)
            evidence += lines
        result = combine(metric_verdict, monitors)
        alerting = [m for m in monitors if m.status is MetricStatus.FAIL]
        silent = [m for m in monitors if m.status is MetricStatus.NO_DATA]
        if alerting:
            state = alerting[0].state
            summary = (
                f"The triggering {_which(alerting)} is still {state} {fmt_duration(policy.window)} after the deploy"
                + ("." if metric_verdict is VerdictResult.PASS else f"; {summary}")
            )
        elif silent and result is VerdictResult.NO_DATA and metric_verdict is not VerdictResult.NO_DATA:
            summary = f"Cannot tell whether the triggering {_which(silent)} recovered (no data); {summary}"
        elif monitors and result is VerdictResult.PASS:
            summary = f"The triggering {_which(monitors)} recovered; {summary[:1].lower()}{summary[1:]}"
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
        policy, d, c = inp.policy, inp.deployed_at, inp.baseline_end
        try:
            query = render(check, service, env, policy.interval_s)
        except ValueError as e:
            return compare([], [], check, policy).model_copy(update={"reason": f"not queried: {e}"})
        unconfigured = {Provider.DATADOG: self.client, Provider.PROMETHEUS: self.prometheus}[check.provider] is None
        if unconfigured:
            result = compare([], [], check, policy)
            return result.model_copy(update={"reason": f"not queried: {_UNCONFIGURED[check.provider]}", "query": query})
        heartbeat(f"query {check.name} of {service} on {check.provider.value}")
        try:
            if check.provider is Provider.PROMETHEUS:
                assert self.prometheus is not None
                start, end = prometheus_window(d, policy.window.total_seconds(), policy.interval_s, c)
                found = self.prometheus.query_range(query, start, end, policy.interval_s)
                points = prometheus_points(found, policy.interval_s)
                interval, reported = policy.interval_s, None
            else:
                assert self.client is not None
                series = self.client.query_metrics(query, c - policy.window, d + policy.window)
                interval = next((s.interval for s in series if s.interval > 0), policy.interval_s)
                points = datadog_points(series)
                reported = next((unit_of(s.unit) for s in series if unit_of(s.unit)), None)
        except Invalid as e:
            result = compare([], [], check, policy)
            who = check.provider.value.capitalize()
            return result.model_copy(update={"reason": f"{who} refused the query: {e.message}", "query": query})
        before, after = split_points(points, d, policy.window, interval, c)
        if check.unit is None and reported:  # the check names none: Datadog's unit of the series
            check = check.model_copy(update={"unit": reported})
        return compare(before, after, check, policy).model_copy(update={"query": query})

    def _monitors(self, inp: JudgeInput, evidence: list[str]) -> list[MonitorResult]:
        item = inp.work_item
        looked_up = inp.alerts if (self.alertmanager or self.prometheus) else []
        out = [self._alert(labels, evidence) for labels in looked_up]
        ids = list(inp.monitor_ids)
        if not ids and item.monitor_id and re.fullmatch(r"[0-9]{1,18}", item.monitor_id):
            ids = [int(item.monitor_id)]
        unnamed = item.monitor_id and not ids and not looked_up  # an alert no source here can be asked about
        if inp.recovered:
            if ids or unnamed:
                evidence.append("monitor: recovered (the alert's recovery was received on the same alert cycle)")
            return out
        if not ids:
            if unnamed:  # e.g. Alertmanager's, with neither Alertmanager nor Prometheus configured
                evidence.append(
                    f"monitor {_plain(item.monitor_id or '', 100)}: NO DATA: no recovery received, and neither a "
                    "Datadog monitor id nor an alert Alertmanager or Prometheus here can be asked about"
                )
                name = _plain(item.monitor_id or "", 100)
                return [MonitorResult(id=None, name=name, state="Unknown", status=MetricStatus.NO_DATA)]
            return out
        if self.client is None:
            for mid in ids:
                out.append(MonitorResult(id=mid, state="Unknown", status=MetricStatus.NO_DATA))
                evidence.append(f"monitor {mid}: NO DATA: {_UNCONFIGURED[Provider.DATADOG]}")
            return out
        for mid in ids:
            heartbeat(f"read Datadog monitor {mid}")
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

    def _alert(self, labels: dict[str, str], evidence: list[str]) -> MonitorResult:
        """Whether the Alertmanager alert of ``labels`` still fires, asked of Alertmanager, else of Prometheus's
        ``ALERTS`` (module docstring)."""
        name = _plain(alert_name(labels), 200)
        heartbeat(f"ask whether alert {name} still fires")
        if self.alertmanager is not None:
            try:
                found = self.alertmanager.alerts(labels)
            except IntegrationError as e:
                if self.prometheus is None:
                    raise
                evidence.append(f"alert {name}: Alertmanager did not answer ({clean(e.message, 200)}); Prometheus read")
            else:
                firing = [a for a in found if a.state != "resolved"]
                if not firing:
                    evidence.append(f"alert {name}: PASS: resolved (no alert in Alertmanager matches its labels)")
                    return MonitorResult(id=None, name=name, state="resolved", status=MetricStatus.PASS)
                state = "active" if any(a.state == "active" for a in firing) else clean(firing[0].state, 40)
                silenced = sum(1 for a in firing if a.silenced_by or a.inhibited_by)
                why = f"; {silenced} silenced or inhibited: that hides an alert, not recovers it" if silenced else ""
                evidence.append(f"alert {name}: FAIL: still {state} in Alertmanager ({len(firing)} matching{why})")
                return MonitorResult(id=None, name=name, state=state, status=MetricStatus.FAIL)
        assert self.prometheus is not None
        query = f'ALERTS{{alertname="{promql_string(labels["alertname"])}",alertstate="firing"}}'
        series = self.prometheus.query(query)
        ignored = ("__name__", "alertstate")
        firing = [s for s in series if all(labels.get(k, v) == v for k, v in s.labels.items() if k not in ignored)]
        if firing:
            evidence.append(f"alert {name}: FAIL: still firing in Prometheus ({len(firing)} ALERTS series match)")
            return MonitorResult(id=None, name=name, state="firing", status=MetricStatus.FAIL)
        evidence.append(f"alert {name}: PASS: resolved (no firing ALERTS series in Prometheus matches its labels)")
        return MonitorResult(id=None, name=name, state="resolved", status=MetricStatus.PASS)


def _which(monitors: list[MonitorResult]) -> str:
    """``monitor 41000005 (High error rate on catalog)`` or ``alert HighErrorRatio{...}``, several joined."""
    kind = "monitor" if all(m.id is not None for m in monitors) else "alert"
    return f"{kind} " + ", ".join(
        f"{m.id} ({m.name or 'unnamed'})" if m.id is not None else str(m.name or "unnamed") for m in monitors
    )
