"""Deploy verification (stage 6): per metric, a baseline window before the deploy against a window after it, and a
verdict with its numbers. Pure: no I/O, no clock; ``fixloop.activities.verify`` queries Datadog and calls this.

The semantics are those proven by canary analysis:

* **Kayenta** (Spinnaker's ``NetflixACAJudge``): each metric is classified by a Mann-Whitney U test (Wilcoxon
  rank-sum) of the experiment (after) against the control (baseline), only in the metric's ``direction``
  (``increase``, ``decrease`` or ``either`` is bad) and only when the change is larger than an effect-size floor;
  a metric without data is ``no_data`` and left out of the score (``mustHaveData`` makes that block the verdict);
  a failing ``critical`` metric fails the whole analysis; otherwise the score (the share of metrics with data that
  pass, 0-100) is held against ``scoreThresholds`` ``pass`` and ``marginal``.
* **Argo Rollouts** (``AnalysisTemplate``): ``failureLimit``, the number of failed metrics tolerated before the
  analysis fails whatever the score (a failed count greater than the limit fails).

Here a metric fails only when the one-sided p-value in the bad direction is below ``alpha`` AND the relative change
of medians ``(after - baseline) / baseline`` exceeds the metric's ``effect_floor`` in that direction: a tiny but
significant shift (a busy service makes everything significant) does not fail a deploy.

``fixloop.yaml`` (``verification:`` mapping, all keys optional; durations as ``30s``, ``10m``, ``1h``, ``1h30m``
or seconds)::

    verification:
      provider: datadog           # datadog | prometheus: where the metrics are read, and whose defaults apply
      window: 10m                 # each side: [deploy - window, deploy) against [deploy, deploy + window)
      interval: 30s               # one point per interval (the query's rollup)
      env: production             # the Datadog env tag; default: none (the query's env term is dropped)
      kustomization: flux-system/apps-production   # namespace/name of the Flux Kustomization that deploys
      alpha: 0.01                 # significance level of the one-sided test (Kayenta: a 98 % interval)
      thresholds: {pass: 95, marginal: 50}         # score thresholds (Kayenta scoreThresholds), 0-100
      failure_limit: 1            # failed metrics tolerated (Argo Rollouts failureLimit)
      min_points: 5               # fewer points on a side is no data
      metrics:                    # merged by name into the defaults: a known name overrides only the keys given
        - name: error rate
          effect_floor: 0.5
        - name: queue depth       # a new name needs a query
          query: "avg:app.queue.depth{service:{service},env:{env}}"
          provider: datadog       # default: the policy's provider (a known metric moved to another needs a query)
          unit: jobs              # of the query's values, shown with every number (default: none given)
          direction: increase     # increase | decrease | either: the change that is bad
          critical: false
          must_have_data: false
          missing_as_zero: false  # absent points count as 0 (sparse counts; Kayenta nanStrategy "replace")
          unit: messages      # what the values are in (default: the unit Datadog reports for the series)
          enabled: true
      services:                   # per service, merged by name on top of the metrics above
        payments:
          metrics:
            - {name: latency p95, effect_floor: 0.1, critical: true}

Every number shown (the evidence, the Jira comments and merge request notes, the Temporal UI) carries its unit:
the check's ``unit`` (the defaults: error rate ``errors/s`` and request rate ``req/s``, both ``.as_rate()`` of
APM counts; latency p95 ``s``, shown in ms below a second), else the unit Datadog reports for the series
(``fixloop.activities.verify``); a value in ``s`` is shown in ms or µs when smaller than a second.

Query templates of provider ``datadog`` are Datadog metric queries (docs.datadoghq.com/metrics/#query-timeseries-points)
with the placeholders ``{service}`` and ``{env}`` (or ``{{service}}``, ``{{env}}``); ``.rollup(avg, <interval>)`` is
appended unless the query has a rollup (docs.datadoghq.com/dashboards/functions/rollup/: ``avg`` is Datadog's enforced
default aggregator). Templates of provider ``prometheus`` are PromQL (prometheus.io/docs/prometheus/latest/querying/),
read with ``/api/v1/query_range`` at a step of the policy's interval, with ``{{service}}`` and ``{{env}}`` inside quoted
label values (escaped by code for the string, and for RE2 after ``=~``/``!~``: a value can never widen the selector)
and ``{{interval}}``, the interval as a duration for range selectors (``rate(x[{{interval}}])``: choose an interval of
at least four scrape intervals). Their defaults (``PROMETHEUS_METRICS``) read the Prometheus client libraries'
``http_requests_total`` (error rate: the share of ``code=~"5.."`` in %, request rate in req/s) and the histogram
``http_request_duration_seconds`` (p95 by ``histogram_quantile``, in s), the service and env as labels.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy.stats import mannwhitneyu

from fixloop.core.parsing import yaml_mapping


class VerdictResult(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"  # a human decides
    FAIL = "fail"
    NO_DATA = "no_data"  # a human decides; never a pass


class Direction(StrEnum):
    """The change of a metric that is bad."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class Provider(StrEnum):
    """Where a metric's points come from (Flagger's MetricTemplate / Argo Rollouts' AnalysisTemplate ``provider``):
    ``datadog`` (a Datadog metric query, ``GET /api/v1/query``) or ``prometheus`` (PromQL, ``GET
    /api/v1/query_range``)."""

    DATADOG = "datadog"
    PROMETHEUS = "prometheus"


class MetricStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"


# A Datadog tag value fixloop puts into a query scope: no comma, brace, colon or space can widen the scope.
TAG_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,99}$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_KUSTOMIZATION = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NO_ENV = re.compile(r",\s*env:\{env\}|env:\{env\}\s*,?")
# a PromQL label matcher on {{env}} with its commas (``,env="{{env}}"``): dropped when no env is set
_NO_ENV_PROMQL = re.compile(r"""(\s*,\s*)?[A-Za-z_]\w*\s*(?:=~|!~|!=|=)\s*(["'])\{\{\s*env\s*\}\}\2(\s*,\s*)?""")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
PROMQL_PLACEHOLDERS = ("service", "env", "interval")
UNIT = r"^[A-Za-z0-9%/._ \-]{1,20}$"  # a display unit: errors/s, req/s, s, ms, %, byte, messages

Name = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.%/()\-]*$")]


def parse_duration(value: object) -> object:
    """``30s``, ``10m``, ``1h``, ``1h30m`` -> ``timedelta``; a number is seconds; anything else is left to pydantic
    (``timedelta``, ISO 8601 ``PT10M`` as the model serialises itself). Raises ``ValueError`` for another string."""
    if isinstance(value, str) and not value.strip().upper().startswith(("P", "-P")):
        m = _DURATION.match(value.strip())
        if not value.strip() or not m or not any(m.groups()):
            raise ValueError(f"{value[:40]!r} is not a duration (e.g. 30s, 10m, 1h)")
        h, mi, s = (int(g or 0) for g in m.groups())
        return timedelta(hours=h, minutes=mi, seconds=s)
    return value


def fmt_duration(d: timedelta) -> str:
    """``timedelta(minutes=10)`` -> ``10 min``; ``30 s``; ``1 h``; ``1 h 30 min``."""
    s = int(d.total_seconds())
    if s % 60:
        return f"{s} s"
    h, m = divmod(s // 60, 60)
    return " ".join(p for p in (f"{h} h" if h else "", f"{m} min" if m else "") if p) or "0 s"


_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")  # Go's regexp.QuoteMeta
_STRING_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _strings(template: str) -> list[tuple[int, int, str]]:
    """The string literals of a PromQL expression: ``(start, end, quote)`` of each (``"..."``, ``'...'`` with
    backslash escapes, or a raw ````...````), end exclusive. Raises ``ValueError`` for an unterminated one."""
    out = []
    i = 0
    while i < len(template):
        c = template[i]
        if c in "\"'`":
            j = i + 1
            while j < len(template) and template[j] != c:
                j += 2 if c != "`" and template[j] == "\\" else 1
            if j >= len(template):
                raise ValueError(f"unterminated string literal at character {i + 1}")
            out.append((i, j + 1, c))
            i = j + 1
        else:
            i += 1
    return out


def promql_template(template: str) -> list[tuple[str, str | None, bool]]:
    """The placeholders of a PromQL template, in order: ``(name, quote, in_regex)``: ``quote`` the string literal's
    quote character it stands in (None outside one), ``in_regex`` whether that string is the operand of ``=~`` or
    ``!~``. Raises ``ValueError`` for an unknown placeholder (known: ``PROMQL_PLACEHOLDERS``), a ``{{service}}`` or
    ``{{env}}`` outside a double- or single-quoted string (a label value fixloop fills must be a string it escapes),
    ``{{interval}}`` inside one, or an unterminated string."""
    strings = _strings(template)
    out: list[tuple[str, str | None, bool]] = []
    for m in _PLACEHOLDER.finditer(template):
        name = m[1]
        if name not in PROMQL_PLACEHOLDERS:
            raise ValueError(f"{{{{{name[:30]}}}}} is not a placeholder (known: {', '.join(PROMQL_PLACEHOLDERS)})")
        inside = next(((a, q) for a, b, q in strings if a < m.start() and m.end() < b), None)
        if name == "interval":
            if inside:
                raise ValueError("{{interval}} is a duration: put it in a range selector, e.g. [{{interval}}]")
            out.append((name, None, False))
            continue
        if inside is None or inside[1] == "`":
            raise ValueError(f'{{{{{name}}}}} must be inside a quoted label value, e.g. {name}="{{{{{name}}}}}"')
        before = template[: inside[0]].rstrip()
        out.append((name, inside[1], before.endswith(("=~", "!~"))))
    return out


def promql_string(value: str, quote: str = '"', regex: bool = False) -> str:
    """``value`` as the content of a PromQL string literal quoted with ``quote`` (PromQL strings follow Go's
    escaping: backslash, the quote, newline, carriage return, tab escaped), regex metacharacters escaped first as
    Go's ``regexp.QuoteMeta`` does when the string is a regex matcher's (``=~``, ``!~``), so the value matches
    itself only. Raises ``ValueError`` for another control character."""
    if any(ord(c) < 0x20 and c not in "\n\r\t" for c in value) or "\x7f" in value:
        raise ValueError(f"{value[:60]!r} has a control character")
    if regex:
        value = _RE2_SPECIAL.sub(r"\\\1", value)
    out = "".join(_STRING_ESCAPES.get(c, c) for c in value)
    return out.replace(quote, "\\" + quote)


class MetricCheck(BaseModel):
    """One metric compared before and after a deploy.

    query: a Datadog metric query template with ``{service}`` and ``{env}`` placeholders. direction: the change
    that is bad. critical: failing it fails the verdict whatever the score. must_have_data: no data on either side
    makes the verdict ``no_data``. effect_floor: the smallest relative change of medians that can fail
    (0.2 = 20 %). missing_as_zero: a side with fewer points than the window holds is padded with zeros (a sparse
    count such as errors reports nothing when nothing happened). unit: what the values are in (``errors/s``, ``s``,
    ``%``; None: the unit Datadog reports for the series). enabled: False drops a default metric.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    query: str = Field(min_length=1, max_length=1_000, pattern=r"^[^\n\r]+$")
    provider: Provider = Provider.DATADOG
    direction: Direction = Direction.INCREASE
    critical: bool = False
    must_have_data: bool = False
    effect_floor: float = Field(default=0.2, ge=0.0, le=100.0)
    missing_as_zero: bool = False
    unit: str | None = Field(default=None, pattern=UNIT)
    enabled: bool = True

    @model_validator(mode="after")
    def _template(self) -> MetricCheck:
        if self.provider is Provider.PROMETHEUS:
            promql_template(self.query)  # raises ValueError naming the placeholder
        return self


# The APM trace metrics (docs.datadoghq.com/tracing/metrics/metrics_namespace/): ``trace.<span>.errors`` and
# ``.hits`` are counts, per second with ``.as_rate()``; ``trace.<span>.duration.by.service.95p`` is in seconds.
ERROR_RATE = MetricCheck(
    name="error rate",
    query="sum:trace.http.request.errors{service:{service},env:{env}}.as_rate()",
    direction=Direction.INCREASE,
    critical=True,
    missing_as_zero=True,
    unit="errors/s",
)
LATENCY_P95 = MetricCheck(
    name="latency p95",
    query="avg:trace.http.request.duration.by.service.95p{service:{service},env:{env}}",
    direction=Direction.INCREASE,
    unit="s",
)
REQUEST_RATE = MetricCheck(
    name="request rate",
    query="sum:trace.http.request.hits{service:{service},env:{env}}.as_rate()",
    direction=Direction.DECREASE,
    must_have_data=True,
    unit="req/s",
)


# Prometheus: the conventional HTTP server metrics of the Prometheus client libraries (a counter
# ``http_requests_total`` with a ``code`` label, a histogram ``http_request_duration_seconds``), the service and env
# as target labels; ``{{interval}}`` is the policy's interval as a PromQL duration (choose it >= 4 scrape intervals).
_PROM_SCOPE = 'service="{{service}}",env="{{env}}"'


def _on_prometheus(check: MetricCheck, query: str, **update: Any) -> MetricCheck:
    """``check`` (a Datadog default) read from Prometheus with ``query``: the same name, direction and rules."""
    return MetricCheck.model_validate({**check.model_dump(), "provider": Provider.PROMETHEUS, "query": query, **update})


_RATE = "[{{interval}}]))"
PROM_ERROR_RATE = _on_prometheus(
    ERROR_RATE,
    f'100 * sum(rate(http_requests_total{{{_PROM_SCOPE},code=~"5.."}}{_RATE} '
    f"/ sum(rate(http_requests_total{{{_PROM_SCOPE}}}{_RATE}",
    unit="%",
)
PROM_LATENCY_P95 = _on_prometheus(
    LATENCY_P95,
    f"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{_PROM_SCOPE}}}{_RATE})",
)
PROM_REQUEST_RATE = _on_prometheus(REQUEST_RATE, f"sum(rate(http_requests_total{{{_PROM_SCOPE}}}{_RATE}")


def shown_unit(unit: str | None) -> str:
    """The unit a value of ``unit`` is shown in: ``ms`` for seconds (``s``), else ``unit``; ``no unit given`` for
    None."""
    if unit is None:
        return "no unit given"
    return "ms" if unit == "s" else unit


DEFAULT_METRICS: tuple[MetricCheck, ...] = (ERROR_RATE, LATENCY_P95, REQUEST_RATE)
PROMETHEUS_METRICS: tuple[MetricCheck, ...] = (PROM_ERROR_RATE, PROM_LATENCY_P95, PROM_REQUEST_RATE)
DEFAULTS: dict[Provider, tuple[MetricCheck, ...]] = {
    Provider.DATADOG: DEFAULT_METRICS,
    Provider.PROMETHEUS: PROMETHEUS_METRICS,
}

_POLICY_KEYS = (
    "provider",
    "window",
    "interval",
    "env",
    "kustomization",
    "alpha",
    "thresholds",
    "failure_limit",
    "min_points",
    "metrics",
    "services",
)


class VerificationPolicy(BaseModel):
    """How a deploy is verified (``verification:`` of a repository's ``fixloop.yaml``; ``from_policy`` parses it).

    window: the length of each side. interval: seconds per point. env: the Datadog ``env`` tag (None: the query's
    ``env:{env}`` term is dropped). kustomization: ``namespace/name`` of the Flux Kustomization. metrics: the checks
    of every service; services: the full list for the services that override it. alpha: the significance level.
    pass_score / marginal_score: score thresholds, 0-100. failure_limit: failed metrics tolerated. min_points:
    fewer points on a side is no data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Provider = Provider.DATADOG
    window: timedelta = timedelta(minutes=10)
    interval: timedelta = timedelta(seconds=30)
    env: str | None = None
    kustomization: str = "flux-system/apps-production"
    metrics: tuple[MetricCheck, ...] = DEFAULT_METRICS
    services: dict[Annotated[str, Field(pattern=TAG_VALUE.pattern)], tuple[MetricCheck, ...]] = Field(
        default_factory=dict
    )
    alpha: float = Field(default=0.01, gt=0.0, le=0.5)
    pass_score: float = Field(default=95.0, ge=0.0, le=100.0)
    marginal_score: float = Field(default=50.0, ge=0.0, le=100.0)
    failure_limit: int = Field(default=1, ge=0, le=100)
    min_points: int = Field(default=5, ge=2, le=1_000)

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, values: object) -> object:
        """Without ``metrics`` given, the provider's defaults (``DEFAULTS``)."""
        if isinstance(values, dict) and "metrics" not in values and values.get("provider") is not None:
            return {**values, "metrics": DEFAULTS[Provider(values["provider"])]}
        return values

    @field_validator("window", "interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not TAG_VALUE.match(value):
            raise ValueError("not a Datadog tag value (letters, digits, _ . - /)")
        return value

    @field_validator("kustomization")
    @classmethod
    def _kustomization(cls, value: str) -> str:
        if not _KUSTOMIZATION.match(value):
            raise ValueError("must be namespace/name of a Kustomization (e.g. flux-system/apps-production)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> VerificationPolicy:
        interval = self.interval.total_seconds()
        if interval < 1 or interval != int(interval):
            raise ValueError("interval: must be a whole number of seconds, at least 1s")
        if self.window < self.interval * self.min_points:
            raise ValueError(f"window: must hold at least min_points ({self.min_points}) intervals")
        if self.window > self.interval * 700:
            raise ValueError("window: at most 700 intervals (Datadog caps the points of a query)")
        if self.window > timedelta(hours=24):
            raise ValueError("window: at most 24h")
        if self.marginal_score > self.pass_score:
            raise ValueError("thresholds: marginal must not exceed pass")
        return self

    @property
    def points(self) -> int:
        """Points a full window holds."""
        return int(self.window.total_seconds() // self.interval.total_seconds())

    @property
    def interval_s(self) -> int:
        return int(self.interval.total_seconds())

    @property
    def kustomization_ref(self) -> tuple[str, str]:
        """``(namespace, name)`` of the Kustomization."""
        ns, name = self.kustomization.split("/", 1)
        return ns, name

    def checks_for(self, service: str | None) -> list[MetricCheck]:
        """The enabled checks of ``service`` (its override, else ``metrics``)."""
        checks = self.services.get(service, self.metrics) if service else self.metrics
        return [c for c in checks if c.enabled]

    @classmethod
    def from_policy(cls, raw: Mapping[str, Any] | None) -> VerificationPolicy:
        """The policy of the ``verification:`` mapping of a ``fixloop.yaml`` (already loaded from YAML); the
        defaults for None. Raises ``ValueError`` naming the key (``verification.window: ...``) for an unknown key
        or an invalid value."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError("verification: must be a mapping")
        for key in raw:
            if key not in _POLICY_KEYS:
                raise ValueError(f"verification.{str(key)[:40]}: unknown key (known: {', '.join(_POLICY_KEYS)})")
        values: dict[str, Any] = {}
        for key in ("window", "interval", "env", "kustomization", "alpha", "failure_limit", "min_points"):
            if raw.get(key) is not None:
                values[key] = raw[key]
        provider = raw.get("provider") or Provider.DATADOG
        if provider not in tuple(Provider):
            known = " or ".join(p.value for p in Provider)
            raise ValueError(f"verification.provider: {str(provider)[:40]!r} is not a provider ({known})")
        provider = values["provider"] = Provider(provider)
        thresholds = raw.get("thresholds")
        if thresholds is not None:
            if not isinstance(thresholds, Mapping) or set(thresholds) - {"pass", "marginal"}:
                raise ValueError("verification.thresholds: must be a mapping of pass and marginal (0-100)")
            for key, field in (("pass", "pass_score"), ("marginal", "marginal_score")):
                if thresholds.get(key) is not None:
                    values[field] = thresholds[key]
        metrics = _merge_checks(DEFAULTS[provider], raw.get("metrics"), "verification.metrics", provider)
        values["metrics"] = metrics
        services = raw.get("services")
        if services is not None:
            if not isinstance(services, Mapping):
                raise ValueError("verification.services: must be a mapping of service name to overrides")
            merged: dict[str, tuple[MetricCheck, ...]] = {}
            for svc, override in services.items():
                where = f"verification.services.{str(svc)[:60]}"
                if not isinstance(svc, str) or not TAG_VALUE.match(svc):
                    raise ValueError(f"{where}: not a service name (letters, digits, _ . - /)")
                if not isinstance(override, Mapping) or set(override) - {"metrics"}:
                    raise ValueError(f"{where}: must be a mapping with a metrics list")
                merged[svc] = _merge_checks(metrics, override.get("metrics"), f"{where}.metrics", provider)
            values["services"] = merged
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            raise ValueError(_first_error(e, "verification")) from None

    @classmethod
    def from_policy_text(cls, text: str | None) -> VerificationPolicy:
        """The policy of a whole ``fixloop.yaml`` text (its ``verification:`` key); the defaults for None or a file
        without that key. Raises ``ValueError`` for a file that is not YAML or an invalid ``verification:``."""
        if text is None:
            return cls()
        return cls.from_policy(yaml_mapping(text).get("verification"))


def _first_error(e: ValidationError, prefix: str) -> str:
    err = e.errors(include_url=False)[0]
    yaml_keys = {"pass_score": "thresholds.pass", "marginal_score": "thresholds.marginal"}  # the fixloop.yaml names
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{yaml_keys.get(str(p), p)}" for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if msg.split(":", 1)[0] in ("interval", "window", "thresholds") and not loc:
        return f"{prefix}.{msg}"
    return f"{prefix}{loc}: {msg}"


def _merge_checks(
    base: Sequence[MetricCheck], raw: object, where: str, provider: Provider = Provider.DATADOG
) -> tuple[MetricCheck, ...]:
    """``base`` with the entries of ``raw`` merged by name: a known name overrides the keys given, a new name is
    appended (and needs a query); an entry without ``provider`` is the known metric's, else ``provider``'s. An entry
    moving a known metric to another provider needs its own query (the known one is the other provider's)."""
    if raw is None:
        return tuple(base)
    if not isinstance(raw, list):
        raise ValueError(f"{where}: must be a list of metrics")
    out = {c.name: c for c in base}
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{where}[{i}]: must be a mapping with a name")
        known = out.get(entry["name"])
        moved = known is not None and entry.get("provider") not in (None, known.provider.value)
        if moved and not entry.get("query"):
            raise ValueError(
                f"{where}[{i}].query: required when the provider changes to {str(entry['provider'])[:20]} "
                f"(the default query is {known.provider.value}'s)"  # type: ignore[union-attr]
            )
        merged = {**known.model_dump(), **entry} if known else {"provider": provider, **entry}
        try:
            out[entry["name"]] = MetricCheck.model_validate(merged)
        except ValidationError as e:
            raise ValueError(_first_error(e, f"{where}[{i}]")) from None
    return tuple(out.values())


# --- queries and points --------------------------------------------------------------------------------------------


def render_query(template: str, service: str, env: str | None, interval_s: int) -> str:
    """The Datadog query of ``template`` for ``service`` in ``env`` (None: the ``env:{env}`` scope term is
    dropped), with ``.rollup(avg, interval_s)`` appended unless it has a rollup. Raises ``ValueError`` for a
    service or env that is not a plain tag value (it could widen the scope) or an ``{env}`` left without an env."""
    for what, value in (("service", service), ("env", env)):
        if value is not None and not TAG_VALUE.match(value):
            raise ValueError(f"{what} {value[:60]!r} is not a Datadog tag value (letters, digits, _ . - /)")
    q = template.replace("{{service}}", "{service}").replace("{{env}}", "{env}")  # the PromQL spelling too
    if env is None:
        q = _NO_ENV.sub("", q).replace("{}", "{*}")
        if "{env}" in q:
            raise ValueError("the query uses {env} outside a scope and no env is set")
    q = q.replace("{service}", service).replace("{env}", env or "")
    if ".rollup(" not in q:
        q += f".rollup(avg, {interval_s})"
    return q


def render_promql(template: str, service: str, env: str | None, interval_s: int) -> str:
    """The PromQL of ``template`` for ``service`` in ``env``: ``{{service}}`` and ``{{env}}`` (inside quoted label
    values) escaped for their string (``promql_string``), ``{{interval}}`` as a duration (``30s``); with ``env``
    None every label matcher on ``{{env}}`` is dropped with its comma. Values come from code (the work item's
    service, the policy's env), never from signal text, and still cannot leave their string. Raises
    ``ValueError`` for a bad template (``promql_template``), an empty service or a value with a control
    character."""
    if not service:
        raise ValueError("no service to put in the query")
    if env is None:
        template = _NO_ENV_PROMQL.sub(lambda m: "," if m[1] and m[3] else "", template)
    places = promql_template(template)
    values = {"service": service, "env": env}
    parts: list[str] = []
    pos = 0
    for m, (name, quote, regex) in zip(_PLACEHOLDER.finditer(template), places, strict=True):
        parts.append(template[pos : m.start()])
        if name == "interval":
            parts.append(f"{interval_s}s")
        else:
            value = values[name]
            if value is None:
                raise ValueError("the query uses {{env}} outside a label matcher and no env is set")
            parts.append(promql_string(value, quote or '"', regex))
        pos = m.end()
    return "".join(parts) + template[pos:]


def render(check: MetricCheck, service: str, env: str | None, interval_s: int) -> str:
    """The query of ``check`` for its provider (``render_query`` for Datadog, ``render_promql`` for Prometheus)."""
    if check.provider is Provider.PROMETHEUS:
        return render_promql(check.query, service, env, interval_s)
    return render_query(check.query, service, env, interval_s)


def split_points(
    points: Iterable[tuple[float, float | None]],
    deployed_at: datetime,
    window: timedelta,
    interval_s: int,
    changed_at: datetime | None = None,
) -> tuple[list[float], list[float]]:
    """The values of ``points`` (``(epoch seconds of the bucket start, value or None)``) whose whole bucket
    ``[t, t + interval_s)`` lies in the baseline ``[changed_at - window, changed_at)`` or the after window
    ``[deployed_at, deployed_at + window)``. ``changed_at`` (default ``deployed_at``) is when the change began to
    take effect (Flux applied it), ``deployed_at`` when it runs (its rollout complete): a bucket holding either, or
    between them, belongs to neither (the old and the new version both served then). None, NaN and infinite
    values are dropped."""
    d, w = deployed_at.timestamp(), window.total_seconds()
    c = min(d, changed_at.timestamp()) if changed_at is not None else d
    baseline: list[float] = []
    after: list[float] = []
    for t, v in points:
        if v is None or not math.isfinite(v):
            continue
        if c - w <= t and t + interval_s <= c:
            baseline.append(float(v))
        elif d <= t and t + interval_s <= d + w:
            after.append(float(v))
    return baseline, after


def change_start(applied_at: datetime | None, seen_at: datetime, merged_at: datetime | None = None) -> datetime:
    """When a change began to take effect, for the end of its verification baseline: ``applied_at`` (when Flux
    says it applied it, ``DeployState.applied_at``) bounded by ``seen_at`` (when fixloop saw it applied: it cannot
    be later; a cluster clock ahead of the worker's) and ``merged_at`` (the merge's time: it cannot be earlier; an
    older Ready transition of the same Kustomization); ``seen_at`` when Flux says nothing. An early end only widens
    the gap the comparison leaves out; a late one would put the new version's buckets in the baseline."""
    if applied_at is None or applied_at > seen_at:
        return seen_at
    if merged_at is not None and applied_at < merged_at:
        return min(merged_at, seen_at)
    return applied_at


# --- one metric ----------------------------------------------------------------------------------------------------


class MetricResult(BaseModel):
    """A metric's comparison. ``effect``: ``(median_after - median_baseline) / median_baseline`` (0.25 = +25 %);
    None when there is no data or the baseline median is 0 and the after median is not (an unbounded change).
    ``p_value``: the one-sided Mann-Whitney U p-value in the bad direction (two-sided for ``either``); None
    without a test (no data, or every value the same). ``query``: the Datadog query run, when one was. ``unit``: what
    the medians are in (the check's, else Datadog's; None: neither says)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    status: MetricStatus
    direction: Direction
    critical: bool = False
    must_have_data: bool = False
    effect_floor: float
    n_baseline: int
    n_after: int
    median_baseline: float | None = None
    median_after: float | None = None
    p_value: float | None = None
    effect: float | None = None
    reason: str
    query: str | None = None
    unit: str | None = Field(default=None, pattern=UNIT)


def _alternative(direction: Direction) -> str:
    # mannwhitneyu(after, baseline, alternative=...): "greater" tests that after is stochastically larger.
    return {Direction.INCREASE: "greater", Direction.DECREASE: "less", Direction.EITHER: "two-sided"}[direction]


def _num(x: float) -> str:
    if abs(x) >= 1_000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


_SCALED = {"s": ((1.0, "s"), (1e-3, "ms"), (1e-6, "\u00b5s")), "ms": ((1e3, "s"), (1.0, "ms"), (1e-3, "\u00b5s"))}


def value(x: float, unit: str | None) -> str:
    """``x`` in ``unit`` for a reader: ``0.4 errors/s``, ``120 ms`` (a time below a second in ms or µs), ``1.25 %``;
    the bare number without a unit."""
    scales = _SCALED.get(unit or "")
    if scales and x != 0:
        factor, shown = next(((f, u) for f, u in scales if abs(x) >= f), scales[-1])
        return f"{_num(x / factor)} {shown}"
    return f"{_num(x)} {unit}" if unit else _num(x)


def percent(effect: float | None) -> str:
    """A relative change for a reader: ``+200 %``, ``-75 %``, ``+8.3 %`` (one decimal below 10 %); ``from 0``
    when the baseline is 0 (``MetricResult.effect`` None)."""
    if effect is None:
        return "from 0"
    pct = effect * 100
    return f"{pct:+.0f} %" if abs(pct) >= 10 else f"{pct:+.1f} %"


_pct = percent


def _p(p: float | None) -> str:
    return "n/a" if p is None else ("< 1e-12" if p < 1e-12 else f"{p:.2g}")


def compare(
    baseline: Sequence[float], after: Sequence[float], check: MetricCheck, policy: VerificationPolicy
) -> MetricResult:
    """Compare ``after`` with ``baseline`` (values of one metric, one per interval) for ``check``.

    ``no_data`` when a side has fewer than ``policy.min_points`` finite values (after padding with zeros up to
    ``policy.points`` when ``check.missing_as_zero``); ``fail`` only when the Mann-Whitney U p-value in the bad
    direction is below ``policy.alpha`` and the relative change of medians exceeds ``check.effect_floor`` in that
    direction; else ``pass``."""
    b = [float(v) for v in baseline if v is not None and math.isfinite(v)]
    a = [float(v) for v in after if v is not None and math.isfinite(v)]
    if check.missing_as_zero:
        b += [0.0] * max(0, policy.points - len(b))
        a += [0.0] * max(0, policy.points - len(a))
    common = {
        "name": check.name,
        "unit": check.unit,
        "direction": check.direction,
        "critical": check.critical,
        "must_have_data": check.must_have_data,
        "effect_floor": check.effect_floor,
        "n_baseline": len(b),
        "n_after": len(a),
    }
    if len(b) < policy.min_points or len(a) < policy.min_points:
        return MetricResult(
            **common,
            status=MetricStatus.NO_DATA,
            median_baseline=statistics.median(b) if b else None,
            median_after=statistics.median(a) if a else None,
            reason=f"{len(b)} points before, {len(a)} after (needs {policy.min_points} each side)",
        )
    mb, ma = statistics.median(b), statistics.median(a)
    if mb != 0:
        effect: float | None = (ma - mb) / abs(mb)
    else:
        effect = 0.0 if ma == 0 else None
    if len(set(a) | set(b)) == 1:
        p: float | None = None  # every value the same: nothing changed, nothing to test
    else:
        p = float(mannwhitneyu(a, b, alternative=_alternative(check.direction)).pvalue)
        if not math.isfinite(p):
            p = None
    change = ma - mb if effect is None else effect  # the sign of an unbounded change is that of the medians
    floor = check.effect_floor
    bad_size = {
        Direction.INCREASE: change > 0 and (effect is None or effect > floor),
        Direction.DECREASE: change < 0 and (effect is None or effect < -floor),
        Direction.EITHER: change != 0 and (effect is None or abs(effect) > floor),
    }[check.direction]
    significant = p is not None and p < policy.alpha
    failed = significant and bad_size
    moved = "rose" if ma > mb else ("fell" if ma < mb else "held")
    better = {Direction.INCREASE: ma < mb, Direction.DECREASE: ma > mb, Direction.EITHER: False}[check.direction]
    medians = f"median {value(mb, check.unit)} \u2192 {value(ma, check.unit)}"
    stats = f"{medians} ({_pct(effect)}), p = {_p(p)}"
    if failed:
        reason = f"{moved} {_pct(effect)} ({medians}, p = {_p(p)})"
    elif bad_size:
        reason = f"{moved} but not significantly (p >= {policy.alpha:g}): {stats}"
    elif better and (effect is None or abs(effect) > floor):
        reason = f"{moved} (the good way): {stats}"
    elif significant and change != 0 and not better:
        reason = f"{moved} within the {floor * 100:g} % floor: {stats}"
    else:
        reason = f"no significant change: {stats}"
    return MetricResult(
        **common,
        status=MetricStatus.FAIL if failed else MetricStatus.PASS,
        median_baseline=mb,
        median_after=ma,
        p_value=p,
        effect=effect,
        reason=reason,
    )


# --- the verdict ---------------------------------------------------------------------------------------------------


def score(results: Sequence[MetricResult]) -> float | None:
    """The share (0-100) of the metrics with data that pass; None when none has data."""
    with_data = [r for r in results if r.status is not MetricStatus.NO_DATA]
    if not with_data:
        return None
    return 100.0 * sum(r.status is MetricStatus.PASS for r in with_data) / len(with_data)


def evidence_line(r: MetricResult) -> str:
    """One line of evidence for a metric (plain text, no markup characters)."""
    tags = [t for t, on in (("critical", r.critical), ("required", r.must_have_data)) if on]
    head = f"{r.name}{' (' + ', '.join(tags) + ')' if tags else ''}: {r.status.value.upper().replace('_', ' ')}"
    if r.status is MetricStatus.NO_DATA:
        return f"{head}: {r.reason}"
    test = "two-sided" if r.direction is Direction.EITHER else "one-sided"
    bad = {Direction.INCREASE: "an increase", Direction.DECREASE: "a decrease"}.get(r.direction, "a change either way")
    before, after = value(r.median_baseline or 0.0, r.unit), value(r.median_after or 0.0, r.unit)
    return (
        f"{head}: median {before} \u2192 {after} ({_pct(r.effect)}), "
        f"{test} Mann-Whitney U p = {_p(r.p_value)}; bad: {bad} beyond {r.effect_floor * 100:g} %; "
        f"n = {r.n_baseline} before / {r.n_after} after"
    )


def change_line(r: MetricResult) -> str:
    """A metric's medians before and after with their unit and the relative change, plain text:
    ``error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %)``; ``latency p95: no data (3 points before, ...)``."""
    if r.median_baseline is None or r.median_after is None or r.status is MetricStatus.NO_DATA:
        return f"{r.name}: no data ({r.reason})"
    return f"{r.name} {value(r.median_baseline, r.unit)} \u2192 {value(r.median_after, r.unit)} ({_pct(r.effect)})"


def headline(results: Sequence[MetricResult], limit: int = 3, more: bool = True) -> str:
    """What failed, in a few words for a title: the failed metrics (critical first, at most ``limit``; with ``more``
    the others counted, ``and 2 more``) with their relative change, ``error rate +200 %, latency p95 +45 %`` (a rise
    from 0: ``error rate from 0 to 1.2 errors/s``); empty when none failed."""
    failed = sorted((r for r in results if r.status is MetricStatus.FAIL), key=lambda r: not r.critical)
    words = [
        f"{r.name} {_pct(r.effect)}"
        if r.effect is not None
        else f"{r.name} from 0 to {value(r.median_after or 0.0, r.unit)}"
        for r in failed[:limit]
    ]
    rest = f" and {len(failed) - limit} more" if more and len(failed) > limit else ""
    return ", ".join(words) + rest


def _names(results: Sequence[MetricResult]) -> str:
    names = [r.name for r in results]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _finding(r: MetricResult) -> str:
    return f"{r.name} {r.reason}"


def judge(
    results: Sequence[MetricResult], policy: VerificationPolicy, subject: str = "the service"
) -> tuple[VerdictResult, str, list[str]]:
    """The verdict of ``results``, a one-line summary (about ``subject``) and one evidence line per metric plus
    the score.

    In order: a failing critical metric fails; more failed metrics than ``policy.failure_limit`` fail; a
    ``must_have_data`` metric without data, or no metric with data, gives ``no_data`` (never a pass); else the score
    (share of metrics with data that pass) is ``pass`` at ``policy.pass_score`` or more, ``marginal`` at
    ``policy.marginal_score`` or more, else ``fail``."""
    failed = [r for r in results if r.status is MetricStatus.FAIL]
    missing = [r for r in results if r.status is MetricStatus.NO_DATA]
    required = [r for r in missing if r.must_have_data]
    s = score(results)
    evidence = [evidence_line(r) for r in results]
    evidence.append(
        "score: "
        + ("n/a (no metric has data)" if s is None else f"{s:.0f}/100")
        + f" (pass >= {policy.pass_score:g}, marginal >= {policy.marginal_score:g}); "
        + f"failed {len(failed)} (limit {policy.failure_limit}), no data {len(missing)} of {len(results)}"
    )
    critical = [r for r in failed if r.critical]
    if critical:
        ordered = critical + [r for r in failed if not r.critical]
        return (
            VerdictResult.FAIL,
            f"{subject} regressed after the deploy: " + "; ".join(map(_finding, ordered)),
            evidence,
        )
    if len(failed) > policy.failure_limit:
        summary = f"{subject} regressed after the deploy ({len(failed)} metrics failed): " + "; ".join(
            map(_finding, failed)
        )
        return VerdictResult.FAIL, summary, evidence
    if required or s is None:
        lacking = required or missing
        what = f"no data for {_names(lacking)}" if lacking else "no metric to compare"
        return VerdictResult.NO_DATA, f"Not enough data to judge {subject} after the deploy: {what}.", evidence
    if s >= policy.pass_score:
        checked = [r for r in results if r.status is MetricStatus.PASS]
        skipped = f" ({_names(missing)}: no data)" if missing else ""
        summary = (
            f"{subject} shows no regression over {fmt_duration(policy.window)} after the deploy: "
            f"{_names(checked)} held{skipped}."
        )
        return VerdictResult.PASS, summary, evidence
    detail = "; ".join(map(_finding, failed))
    if s >= policy.marginal_score:
        return (
            VerdictResult.MARGINAL,
            f"{subject} is borderline after the deploy (score {s:.0f}/100, a human decides): {detail}",
            evidence,
        )
    return VerdictResult.FAIL, f"{subject} regressed after the deploy (score {s:.0f}/100): {detail}", evidence


def describe_plans(policy: VerificationPolicy, services: Sequence[str]) -> str:
    """The verification plan of a change to ``services`` for its merge request: ``describe_plan`` of its one
    service (or of none); for several (a bump of one package across services), each is verified on its own and
    every one must pass (one failing fails the change, and its one revert merge request undoes it for all)."""
    if len(services) < 2:
        return describe_plan(policy, services[0] if services else None)
    names = ", ".join(services[:10]) + (f" and {len(services) - 10} more" if len(services) > 10 else "")
    head = (
        f"This change touches {len(services)} services ({names}): fixloop verifies each on its own after the "
        "deploy, and the change passes only when every one does (one failing fails it, and one revert merge "
        "request undoes it for all)."
    )
    shared = all(policy.checks_for(s) == policy.checks_for(services[0]) for s in services)
    if shared:
        return f"{head} {describe_plan(policy, services[0]).replace(f'service {services[0]}', 'each service')}"
    return " ".join([head, *(describe_plan(policy, s) for s in services[:10])])


def describe_plan(policy: VerificationPolicy, service: str | None) -> str:
    """The verification plan in one paragraph for the merge request: which metrics of which service, each with the
    unit its numbers are given in (``shown_unit``), which windows, what fails it, what happens then."""
    checks = policy.checks_for(service)
    bad = {Direction.INCREASE: "an increase", Direction.DECREASE: "a decrease", Direction.EITHER: "a change"}
    metrics = "; ".join(
        (f"{c.name} in {shown_unit(c.unit)} (" if c.unit else f"{c.name} ({shown_unit(None)}, ")
        + f"{bad[c.direction]} of the median beyond {c.effect_floor:.0%}{', critical' if c.critical else ''})"
        for c in checks
    )
    who = f"service {service}" if service else "the service (none could be named from the change: a human decides)"
    sources = sorted({c.provider.value.capitalize() for c in checks}) or [policy.provider.value.capitalize()]
    return (
        f"After Flux applies the merge, fixloop compares the {fmt_duration(policy.window)} before the deploy with "
        f"the {fmt_duration(policy.window)} after it ({fmt_duration(policy.interval)} points, from "
        f"{' and '.join(sources)}) for {who}: "
        f"{metrics or 'no metrics'}. A metric fails on that change with a one-sided Mann-Whitney U p < "
        f"{policy.alpha:g}; a critical metric failing, or more than {policy.failure_limit} failing, fails the change "
        "and opens a revert merge request (approved like this one). Marginal results or missing data go to a human; "
        "an alert that triggered this work item must also have recovered."
    )
