"""Datadog monitor webhooks: the default template, custom ones, transitions from field or title prefix."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fixloop.app.ingest import IngestError, parse_document
from fixloop.core.models import Severity, Signal, Source, Transition
from tests.conftest import fixture, one, signals

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _doc(name: str) -> dict:
    return json.loads(fixture(f"datadog/{name}").read_text())


def _signal(doc: dict) -> Signal:
    return parse_document(doc, ref="x", received_at=NOW).signals[0]


def test_custom_template_transition_field_priority_and_aggregate() -> None:
    s = one(signals("datadog/inres-docs_query_alert_monitor_triggered_P1.json"))
    assert s.source is Source.DATADOG and s.transition is Transition.TRIGGERED
    assert s.monitor_id == "221164084"  # from the monitor link in the body
    assert s.severity is Severity.CRITICAL  # alert_priority P1
    assert s.group_key == "06ade3da0286048d242ea8e46f521c93"
    assert s.observed_at == datetime(2025, 10, 1, 18, 37, 4, tzinfo=UTC)  # last_updated, epoch ms
    assert s.title == "[Triggered] High tracking"
    assert s.url == "https://app.datadoghq.com/monitors/221164084"


def test_default_template_transition_from_title_prefix() -> None:
    s = one(signals("datadog/relay-integrations_test-notification_service_check_triggered.json"))
    assert s.transition is Transition.TRIGGERED
    assert s.monitor_id == "18692904"  # "monitors#18692904" in the body
    assert s.severity is Severity.UNKNOWN


def test_recovery_of_the_same_monitor_refreshes_the_signal() -> None:
    doc = _doc("inres-docs_query_alert_monitor_triggered_P1.json")
    triggered = parse_document(doc, ref="a", received_at=NOW).signals[0]
    doc.update(
        title="[Recovered] High tracking",
        transition="Recovered",
        id="8306082202796029999",
        last_updated="1759344124000",
        date="1759344124000",
    )
    recovered = parse_document(doc, ref="b", received_at=NOW).signals[0]
    assert recovered.transition is Transition.RECOVERED
    assert recovered.fingerprint == triggered.fingerprint
    doc["body"] = doc["body"].replace("221164084", "221164085")  # another monitor
    assert parse_document(doc, ref="c", received_at=NOW).signals[0].fingerprint != triggered.fingerprint


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("[Recovered] ", Transition.RECOVERED),
        ("[Warn] ", Transition.WARN),
        ("[No Data] ", Transition.NO_DATA),
        ("[Re-Triggered] ", Transition.RENOTIFY),
        ("[P2] [Triggered on {host:web-1,env:prod}] ", Transition.TRIGGERED),
    ],
)
def test_title_prefixes(prefix: str, expected: Transition) -> None:
    doc = _doc("relay-integrations_test-notification_service_check_triggered.json")
    doc["title"] = prefix + "Host Cluster Alert"
    s = _signal(doc)
    assert s.transition is expected
    if "on {" in prefix:
        assert s.scope == "host:web-1,env:prod"


def test_extended_template_fields_tags_service_env_cycle() -> None:
    doc = _doc("relay-integrations_test-notification_service_check_triggered.json")
    doc.update(
        alert_id="18692904",
        alert_transition="Triggered",
        alert_cycle_key="7212376435365419538",
        tags="env:prod,service:checkout,team:payments",
        alert_priority="P2",
        hostname="web-1",
    )
    s = _signal(doc)
    assert (s.service, s.env, s.severity, s.alert_cycle_key) == (
        "checkout",
        "prod",
        Severity.HIGH,
        "7212376435365419538",
    )
    assert s.tags == ["env:prod", "service:checkout", "team:payments", "host:web-1"]


def test_too_many_and_too_long_tags_are_cut_and_counted() -> None:
    """Datadog tags are at most 200 characters (its own limit); a payload with 100 tags of 300 characters keeps 64
    of at most 200 and counts every cut in ``truncated`` (before: over-long tags cut, the rest dropped, silently)."""
    doc = _doc("relay-integrations_test-notification_service_check_triggered.json")
    doc.update(alert_transition="Triggered", tags=",".join(f"k{i:03d}:" + "v" * 295 for i in range(100)))
    s = _signal(doc)
    assert len(s.tags) == 64 and all(len(t) == 200 and t.endswith("\u2026") for t in s.tags)
    assert s.tags[0].startswith("k000:") and s.truncated == {"tags": 100}  # 36 dropped + 64 shortened


def test_unsubstituted_template_variables_count_as_absent() -> None:
    doc = _doc("servicenow-docs_extended_webhook_payload_template.json")  # the template itself, $VARIABLES and all
    result = parse_document(doc, ref="tpl", received_at=NOW)
    s = one(result.signals)
    assert s.monitor_id is None and s.tags == [] and s.alert_cycle_key is None
    assert s.transition is Transition.TRIGGERED and any("no known transition" in w for w in result.warnings)


def test_wrong_type_names_the_field() -> None:
    doc = _doc("relay-integrations_test-notification_service_check_triggered.json")
    doc["org"] = ["not", "an", "object"]
    with pytest.raises(IngestError, match=r"field org"):
        parse_document(doc, ref="bad", received_at=NOW)
