"""Alertmanager webhook payloads, v4 and v3: one signal per alert."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fixloop.app.ingest import parse_document
from fixloop.core.models import Severity, Source, Transition
from fixloop.integrations.alertmanager.webhook import label_fingerprint
from tests.conftest import fixture, one, signals


def test_label_fingerprint_matches_prometheus_common_test_vectors() -> None:
    # prometheus/common model/signature_test.go, TestMetricToFingerprint
    assert int(label_fingerprint({}), 16) == 14695981039346656037
    assert int(label_fingerprint({"name": "garland, briggs", "fear": "love is not enough"}), 16) == 5799056148416392346


def test_the_senders_fingerprint_is_used_when_present() -> None:
    # The example payloads carry fingerprints that do not hash from their (edited) labels: the sender's word wins,
    # so a re-delivery is recognised whatever labels a template shows.
    s = one(signals("alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json"))
    assert s.alert_cycle_key == "f74798f72524fe89@2022-07-26T19:55:58.970000+00:00"
    computed = one(signals("alertmanager/prometheus-msteams_prom_post_request_1alert.json"))  # no fingerprint field
    labels = {
        "alertname": "high_memory_load",
        "instance": "instance-with-hyphen_and_underscore",
        "job": "docker_nodes",
        "monitor": "master",
        "severity": "warning",
    }
    assert computed.alert_cycle_key.startswith(label_fingerprint(labels) + "@")


def test_v4_one_signal_per_alert() -> None:
    items = signals("alertmanager/prometheus-msteams_grafana-inspired_promstack.json")
    assert len(items) == 3 and len({s.fingerprint for s in items}) == 3
    s = one(items, scope="name:nginx,namespace:whatever/promstack")
    assert s.source is Source.ALERTMANAGER and s.transition is Transition.TRIGGERED
    assert s.monitor_id == "JustATestAlert_1" and s.severity is Severity.INFO
    assert s.alert_cycle_key == "554664fa753a2b45@2020-10-11T14:34:11.279383+00:00"
    assert s.group_key == '{}/{namespace="whatever/promstack"}:{alertname="JustATestAlert_1"}'
    assert "namespace:whatever/promstack" in s.tags


def test_v4_alert_without_status_or_fingerprint_and_with_offset_time() -> None:
    s = one(signals("alertmanager/prometheus-msteams_prom_post_request_1alert.json"))
    assert s.transition is Transition.TRIGGERED  # the payload's status
    assert s.observed_at == datetime(2018, 3, 7, 11, 33, 21, 873077, tzinfo=UTC)
    assert s.observed_at.utcoffset() == timedelta(hours=-5)
    assert (s.service, s.severity) == ("docker_nodes", Severity.MEDIUM)  # job label; severity "warning"


def test_v3_integer_group_key_and_a_resolved_alert() -> None:
    items = signals("alertmanager/promgen_alertmanager_v3_int-groupKey.json")
    assert {s.group_key for s in items} == {"353151"}
    down = one(items, monitor_id="node_down")
    assert (down.transition, down.service, down.env, down.severity) == (
        Transition.TRIGGERED,
        "Service 1",
        "prod",
        Severity.CRITICAL,
    )
    resolved = one(items, monitor_id="service_level_alert")
    assert resolved.transition is Transition.RECOVERED
    assert resolved.observed_at == datetime(2016, 4, 21, 20, 15, 37, 698000, tzinfo=UTC)  # endsAt


def test_resolution_of_the_same_firing_refreshes_the_same_signal() -> None:
    doc = json.loads(fixture("alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json").read_text())
    now = datetime.now(UTC)
    firing = parse_document(doc, ref="firing", received_at=now).signals[0]
    doc["status"] = doc["alerts"][0]["status"] = "resolved"
    doc["alerts"][0]["endsAt"] = "2022-07-26T20:10:00Z"
    resolved = parse_document(doc, ref="resolved", received_at=now).signals[0]
    assert resolved.transition is Transition.RECOVERED and firing.transition is Transition.TRIGGERED
    assert resolved.fingerprint == firing.fingerprint
    doc["alerts"][0]["startsAt"] = "2022-08-01T00:00:00Z"  # a new firing later: a new signal
    assert parse_document(doc, ref="again", received_at=now).signals[0].fingerprint != firing.fingerprint


def test_partial_payload_without_alerts_gives_none() -> None:
    assert signals("alertmanager/promgen_heartbeat_partial-payload.json") == []


def test_an_alert_with_too_many_long_labels_is_cut_and_counted() -> None:
    """70 labels of 500 characters (the attack of issue 14): the signal keeps 64 tags of at most 200 characters and
    says so in ``truncated`` (before, the labels past 64 were dropped without a word); its JSON fits 16 KiB."""
    doc = json.loads(fixture("alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json").read_bytes())
    doc["alerts"][0]["labels"].update({f"label_{k:02d}": "v" * 500 for k in range(70)})
    s = one(parse_document(doc, ref="delivery:t", received_at=datetime.now(UTC)).signals)
    assert len(s.tags) <= 64 and all(len(t) <= 200 for t in s.tags)
    assert s.truncated["tags"] == 72 - len(s.tags) + sum(t.endswith("\u2026") for t in s.tags)  # 72 labels in all
    assert s.truncated["scope"] == 1 and len(s.scope) == 512 and len(s.model_dump_json()) <= 16 * 1024
