"""Prometheus Alertmanager webhook payloads -> signals, one per alert.

Format (prometheus/alertmanager ``docs/configuration.md``, "<webhook_config>"; ``notify/webhook/webhook.go``):
``{version "4" (older "3"), groupKey (a string; an integer in some v3 senders), truncatedAlerts, status
firing|resolved, receiver, groupLabels, commonLabels, commonAnnotations, externalURL, alerts[{status, labels,
annotations, startsAt, endsAt ("0001-01-01T00:00:00Z" = unset), generatorURL, fingerprint}]}``.

An alert's identity is its label set: ``fingerprint`` is Alertmanager's own (FNV-1a over the sorted labels,
``prometheus/common`` ``model.LabelSet.Fingerprint``), computed here when a sender omits it. The signal
fingerprint adds ``startsAt``: a resolved notification of the same firing refreshes the same signal, a new
firing of the same alert later is a new one.
"""

from __future__ import annotations

from datetime import datetime

from fixloop.core.models import Kind, Signal, Source, Transition, fingerprint
from fixloop.core.parsing import ParseContext, WireModel, aware, opt, severity, title

_FNV_OFFSET64 = 14695981039346656037
_FNV_PRIME64 = 1099511628211
_SEPARATOR = 0xFF
_SERVICE_LABELS = ("service", "service_name", "app", "app_kubernetes_io_name", "application", "job")
_ENV_LABELS = ("env", "environment", "stage")


class Alert(WireModel):
    status: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None


class Payload(WireModel):
    version: str | int | None = None
    groupKey: str | int | None = None
    truncatedAlerts: int | None = None
    status: str | None = None
    receiver: str | None = None
    commonLabels: dict[str, str] = {}
    alerts: list[Alert]


def label_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint: 64-bit FNV-1a over the sorted ``name 0xff value 0xff`` pairs,
    as 16 hex chars."""
    h = _FNV_OFFSET64
    for name in sorted(labels):
        for chunk in (name.encode(), labels[name].encode()):
            for byte in chunk:
                h = ((h ^ byte) * _FNV_PRIME64) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ _SEPARATOR) * _FNV_PRIME64) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def matches(doc: object) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("alerts"), list)
        and any(k in doc for k in ("groupKey", "receiver", "version", "commonLabels", "groupLabels", "status"))
    )


def parse(doc: object, ctx: ParseContext) -> None:
    payload = Payload.model_validate(doc)
    group_key = opt(payload.groupKey) if payload.groupKey is not None else None
    if payload.truncatedAlerts:
        ctx.warn(
            f"{ctx.pointer('truncatedAlerts')}: Alertmanager left out {payload.truncatedAlerts} alert(s) (max_alerts)"
        )
    for i, alert in enumerate(payload.alerts):
        labels = alert.labels
        status = (alert.status or payload.status or "firing").lower()
        transition = Transition.RECOVERED if status == "resolved" else Transition.TRIGGERED
        am_fp = alert.fingerprint or label_fingerprint(labels)
        starts = aware(alert.startsAt)
        ends = aware(alert.endsAt)
        observed = (ends if transition is Transition.RECOVERED else starts) or starts or ctx.received_at
        name = labels.get("alertname") or payload.commonLabels.get("alertname") or "alert"
        summary = (
            alert.annotations.get("summary") or alert.annotations.get("title") or alert.annotations.get("description")
        )
        cycle = f"{am_fp}@{starts.isoformat() if starts else ''}"
        scope = ",".join(f"{k}:{v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
        ctx.emit(
            Signal(
                fingerprint=fingerprint("alertmanager", am_fp, starts.isoformat() if starts else None),
                source=Source.ALERTMANAGER,
                kind=Kind.ALERT,
                title=title(f"{name}: {summary}" if summary else name),
                severity=severity(labels.get("severity")),
                observed_at=observed,
                raw_ref=ctx.pointer("alerts", i),
                url=opt(alert.generatorURL),
                monitor_id=opt(name),
                transition=transition,
                service=opt(next((labels[k] for k in _SERVICE_LABELS if labels.get(k)), None)),
                env=opt(next((labels[k] for k in _ENV_LABELS if labels.get(k)), None)),
                tags=[t for t in (opt(f"{k}:{v}") for k, v in sorted(labels.items())) if t],
                scope=opt(scope),
                alert_cycle_key=opt(cycle),
                group_key=group_key,
            )
        )
