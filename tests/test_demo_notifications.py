"""The demo as Datadog's notifier: a sandbox monitor turning Alert becomes the webhook body of fixloop's payload
template (deploy/datadog/payload.json), which the gateway's Datadog parser reads as that monitor's triggered alert."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fixloop.app.demo import datadog_notification
from fixloop.app.ingest import parse_document
from fixloop.core.models import Kind, Source, Transition
from fixloop.sandbox.app import Sandbox
from fixloop.sandbox.config import SandboxConfig
from fixloop.sandbox.datadog.service import Datadog
from fixloop.sandbox.world import MONITORS

ROOT = Path(__file__).resolve().parents[1]
AT = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)


def test_a_monitor_turning_alert_is_the_payload_templates_body_and_parses_as_its_triggered_alert(
    tmp_path: Path,
) -> None:
    sb = Sandbox.open(SandboxConfig(state_dir=tmp_path))
    mon = next(m for m in MONITORS if m.service == "inventory" and m.kind == "errors")
    body = datadog_notification(Datadog(sb).monitor_json(mon), AT)
    template = json.loads((ROOT / "deploy" / "datadog" / "payload.json").read_text())
    assert set(body) == set(template)  # every variable of the template, nothing else
    assert all(isinstance(v, str) for k, v in body.items() if k != "org")
    signal = parse_document(json.loads(json.dumps(body)), ref="x", received_at=datetime.now(UTC)).signals[0]
    assert (signal.source, signal.kind, signal.transition) == (Source.DATADOG, Kind.ALERT, Transition.TRIGGERED)
    assert (signal.service, signal.env, signal.monitor_id) == ("inventory", "production", str(mon.id))
    assert signal.observed_at == AT
    assert signal.title == f"[Triggered on {{service:inventory,env:production}}] {mon.name}"
    later = datadog_notification(Datadog(sb).monitor_json(mon), AT.replace(minute=30))
    again = parse_document(later, ref="y", received_at=AT).signals[0]
    assert again.fingerprint != signal.fingerprint  # a new alert cycle is a new alert, the same cycle the same one
    assert parse_document(body, ref="z", received_at=AT).signals[0].fingerprint == signal.fingerprint
