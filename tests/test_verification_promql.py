"""PromQL templates of the Prometheus provider (``fixloop.core.verification``): placeholders filled by code and
escaped for where they land, the provider's defaults and the policy's ``provider:`` keys; and the Alertmanager label
sets a verification looks up (``fixloop.core.models.alertmanager_alerts``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.core.models import ALERT_LABELS_MAX, Kind, Signal, Source, Transition, alertmanager_alerts
from fixloop.core.verification import (
    DEFAULT_METRICS,
    PROMETHEUS_METRICS,
    MetricCheck,
    Provider,
    VerificationPolicy,
    describe_plan,
    promql_string,
    promql_template,
    render,
    render_promql,
)

_GO_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}


def go_unquote(literal: str, quote: str = '"') -> str:
    """The value of a PromQL (Go) string literal's content quoted with ``quote``: the escapes ``render_promql``
    writes undone; an unescaped quote or newline fails."""
    out, i = [], 0
    while i < len(literal):
        c = literal[i]
        if c == "\\":
            out.append(_GO_ESCAPES[literal[i + 1]])
            i += 2
        else:
            assert c not in quote + "\n", f"unescaped {c!r} in {literal!r}"
            out.append(c)
            i += 1
    return "".join(out)


def literal_after(query: str, label: str) -> str:
    """The content of the double-quoted value of ``label`` in ``query`` (escapes honoured)."""
    m = re.search(rf'{label}\s*=~?\s*"((?:[^"\\]|\\.)*)"', query)
    assert m, query
    return m[1]


def test_defaults_render_for_a_service_and_env() -> None:
    queries = [render(c, "catalog", "production", 30) for c in PROMETHEUS_METRICS]
    assert queries == [
        '100 * sum(rate(http_requests_total{service="catalog",env="production",code=~"5.."}[30s])) '
        '/ sum(rate(http_requests_total{service="catalog",env="production"}[30s]))',
        "histogram_quantile(0.95, sum by (le) "
        '(rate(http_request_duration_seconds_bucket{service="catalog",env="production"}[30s])))',
        'sum(rate(http_requests_total{service="catalog",env="production"}[30s]))',
    ]
    assert [c.unit for c in PROMETHEUS_METRICS] == ["%", "s", "req/s"]
    assert [c.name for c in PROMETHEUS_METRICS] == [c.name for c in DEFAULT_METRICS]  # overrides carry over


def test_no_env_drops_the_env_matcher_with_its_comma() -> None:
    request_rate = render(PROMETHEUS_METRICS[2], "catalog", None, 30)
    assert request_rate == 'sum(rate(http_requests_total{service="catalog"}[30s]))'
    assert render_promql('up{env="{{env}}"}', "x", None, 5) == "up{}"
    assert render_promql('up{env="{{env}}", job="{{service}}"}', "x", None, 5) == 'up{job="x"}'
    assert render_promql('up{a="1", env=~"{{env}}", b="2"}', "x", None, 5) == 'up{a="1",b="2"}'


def test_a_service_name_that_would_break_the_query_stays_in_its_string() -> None:
    hostile = 'x"} or vector(1) or up{a="'
    q = render_promql('sum(up{service="{{service}}"})', hostile, "prod", 30)
    assert q == 'sum(up{service="x\\"} or vector(1) or up{a=\\""})'
    assert go_unquote(literal_after(q, "service")) == hostile
    regex = render_promql('up{service=~"{{service}}"}', "pay.*|x", None, 30)
    assert regex == 'up{service=~"pay\\\\.\\\\*\\\\|x"}'  # the regex matches the name only
    assert re.fullmatch(go_unquote(literal_after(regex, "service")), "pay.*|x")
    assert not re.fullmatch(go_unquote(literal_after(regex, "service")), "payments")
    with pytest.raises(ValueError, match="control character"):
        render_promql('up{service="{{service}}"}', "a\x00b", None, 30)
    with pytest.raises(ValueError, match="no service"):
        render_promql('up{service="{{service}}"}', "", None, 30)


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("up{service={{service}}}", "must be inside a quoted label value"),
        ("up{service=`{{service}}`}", "must be inside a quoted label value"),
        ('rate(up[{{interval}}]) + up{x="{{interval}}"}', "{{interval}} is a duration"),
        ('up{service="{{team}}"}', "{{team}} is not a placeholder"),
        ('up{service="{{service}}}', "unterminated string"),
    ],
)
def test_bad_templates_are_refused_when_the_policy_is_read(template: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        VerificationPolicy.from_policy({"provider": "prometheus", "metrics": [{"name": "x", "query": template}]})


_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, blacklist_characters="\x7f")


@given(st.text(_TEXT | st.sampled_from('\\"\'\n\t'), max_size=60))
def test_any_value_round_trips_through_its_string(value: str) -> None:
    for quote in ('"', "'"):
        content = promql_string(value, quote)
        assert go_unquote(content, quote) == value
        assert re.search(rf"(?<!\\)(?:\\\\)*{quote}", content) is None  # no quote that would end the string
    q = render_promql('up{service="{{service}}",env="{{env}}"}[{{interval}}]', value or "x", "prod", 7)
    assert go_unquote(literal_after(q, "service")) == (value or "x") and q.endswith("[7s]")
    pattern = go_unquote(promql_string(value, '"', regex=True))
    assert re.fullmatch(pattern, value)  # RE2 and Python agree on escaped literals


def test_policy_provider_picks_the_defaults_and_per_metric_providers() -> None:
    prom = VerificationPolicy.from_policy({"provider": "prometheus", "window": "24s", "interval": "2s"})
    assert prom.provider is Provider.PROMETHEUS and prom.metrics == PROMETHEUS_METRICS
    assert VerificationPolicy.from_policy(None).metrics == DEFAULT_METRICS
    assert VerificationPolicy(provider=Provider.PROMETHEUS).metrics == PROMETHEUS_METRICS
    mixed = VerificationPolicy.from_policy(
        {
            "metrics": [
                {"name": "error rate", "effect_floor": 0.5},  # stays Datadog's
                {"name": "queue depth", "provider": "prometheus", "query": 'max(queue_depth{app="{{service}}"})'},
                {"name": "latency p95", "provider": "prometheus", "query": 'max(p95{app="{{service}}"})'},
            ]
        }
    )
    providers = {c.name: c.provider for c in mixed.metrics}
    assert providers == {
        "error rate": Provider.DATADOG,
        "latency p95": Provider.PROMETHEUS,
        "request rate": Provider.DATADOG,
        "queue depth": Provider.PROMETHEUS,
    }
    assert "from Datadog and Prometheus" in describe_plan(mixed, "catalog")
    with pytest.raises(ValueError, match=r"verification\.metrics\[0\]\.query: required when the provider changes"):
        VerificationPolicy.from_policy({"metrics": [{"name": "error rate", "provider": "prometheus"}]})
    with pytest.raises(ValueError, match="verification.provider: 'graphite' is not a provider"):
        VerificationPolicy.from_policy({"provider": "graphite"})
    # a policy serialised before providers existed (a running loop's history) reads as Datadog's
    old = VerificationPolicy.model_validate_json(VerificationPolicy().model_dump_json(exclude={"provider"}))
    assert old.provider is Provider.DATADOG and all(c.provider is Provider.DATADOG for c in old.metrics)


def test_datadog_templates_take_the_promql_spelling_of_placeholders() -> None:
    check = MetricCheck(name="q", query="avg:app.queue{service:{{service}},env:{{env}}}")
    assert render(check, "payments", "prod", 30) == "avg:app.queue{service:payments,env:prod}.rollup(avg, 30)"
    assert promql_template('sum(rate(x{a=~"{{service}}"}[{{interval}}]))') == [
        ("service", '"', True),
        ("interval", None, False),
    ]


def _alert(tags: list[str], source: Source = Source.ALERTMANAGER) -> Signal:
    return Signal(
        fingerprint=f"{abs(hash(tuple(tags))) % 16**32:032x}",
        source=source,
        kind=Kind.ALERT,
        title="alert",
        severity="high",
        observed_at=datetime(2026, 12, 1, tzinfo=UTC),
        raw_ref="hook#/alerts/0",
        transition=Transition.TRIGGERED,
        monitor_id="HighErrorRatio",
        tags=tags,
    )


def test_alertmanager_label_sets_from_signals() -> None:
    cut = "description:" + "x" * 187 + "\u2026"  # a label value cut at parse time cannot be matched on
    a = _alert(["alertname:HighErrorRatio", "env:production", "service:catalog", "severity:critical", cut])
    same = _alert(["alertname:HighErrorRatio", "env:production", "service:catalog", "severity:critical"])
    other = _alert(["alertname:HighErrorRatio", "service:inventory", "bad-name:x", "url:http://a:b"])
    datadog = _alert(["service:catalog"], Source.DATADOG)
    nameless = _alert(["service:catalog"])
    assert alertmanager_alerts([a, same, other, datadog, nameless]) == [
        {"alertname": "HighErrorRatio", "env": "production", "service": "catalog", "severity": "critical"},
        {"alertname": "HighErrorRatio", "service": "inventory", "url": "http://a:b"},
    ]
    many = _alert(["alertname:A", *(f"l{i:02d}:v" for i in range(60))])
    assert len(alertmanager_alerts([many])[0]) == ALERT_LABELS_MAX
