"""Datadog monitor notifications delivered by the Webhooks integration -> one signal.

Format: Datadog has no fixed schema: the body is the payload template configured on the webhook
(docs.datadoghq.com/integrations/webhooks, "Usage" and the ``$VARIABLE`` list). The default template is
``{body $EVENT_MSG, last_updated $LAST_UPDATED, event_type $EVENT_TYPE, title $EVENT_TITLE, date $DATE,
org{id, name}, id $ID}``; extended templates add e.g. ``alert_id $ALERT_ID``, ``alert_transition
$ALERT_TRANSITION``, ``alert_cycle_key $ALERT_CYCLE_KEY``, ``aggreg_key $AGGREG_KEY``, ``alert_priority
$ALERT_PRIORITY``, ``alert_scope $ALERT_SCOPE``, ``tags $TAGS``, ``hostname $HOSTNAME``. fixloop accepts the
common spellings of those keys. Times are epoch milliseconds (as strings); ids are strings. The transition
comes from ``transition``/``alert_transition`` or else from the title prefix (``[Triggered]``, ``[Recovered]``,
``[Warn]``, ``[No Data]``, ``[Re-Triggered]``, optionally ``... on {scope}``); the monitor id from ``alert_id``
or else from the ``/monitors/<id>`` link in the body.
"""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field

from fixloop.core.models import Kind, Severity, Signal, Source, Transition, fingerprint
from fixloop.core.parsing import ParseContext, WireModel, clean, epoch_ms, opt, severity, title

Scalar = str | int | float


class Org(WireModel):
    id: Scalar | None = None
    name: str | None = None


class Webhook(WireModel):
    id: Scalar | None = None
    title: str | None = Field(default=None, validation_alias=AliasChoices("title", "event_title"))
    alert_title: str | None = None
    body: str | None = Field(default=None, validation_alias=AliasChoices("body", "event_msg", "text"))
    event_type: str | None = None
    date: Scalar | None = None
    last_updated: Scalar | None = None
    org: Org | Scalar | None = None
    transition: str | None = Field(default=None, validation_alias=AliasChoices("transition", "alert_transition"))
    alert_id: Scalar | None = Field(default=None, validation_alias=AliasChoices("alert_id", "monitor_id"))
    alert_cycle_key: Scalar | None = Field(default=None, validation_alias=AliasChoices("alert_cycle_key", "cycle_key"))
    aggregate: Scalar | None = Field(
        default=None, validation_alias=AliasChoices("aggregate", "aggreg_key", "aggregation_key")
    )
    alert_priority: str | None = None
    priority: str | None = None
    alert_type: str | None = None
    alert_status: str | None = None
    alert_scope: str | None = Field(default=None, validation_alias=AliasChoices("alert_scope", "scope"))
    hostname: str | None = Field(default=None, validation_alias=AliasChoices("hostname", "host_name", "host"))
    tags: str | list[str] | None = None
    service: str | None = None
    env: str | None = None
    link: str | None = Field(default=None, validation_alias=AliasChoices("link", "url", "alert_url", "event_url"))


_TITLE_PREFIX = re.compile(
    r"^\s*(?:\[P[1-5]\]\s*)?\[(?P<t>Triggered|Recovered|Warn|Warning|No Data|Re-Triggered|Re-Warn|Re-No Data|Renotify)"
    r"(?:\s+on\s+\{(?P<scope>[^}]*)\})?\]\s*",
    re.I,
)
_MONITOR_LINK = re.compile(r"/monitors?[/#](\d{1,20})")
_UNSET = re.compile(r"^\$[A-Z][A-Z0-9_]*$")  # a template variable Datadog left unsubstituted
_TRANSITIONS = {
    "triggered": Transition.TRIGGERED,
    "alert": Transition.TRIGGERED,
    "recovered": Transition.RECOVERED,
    "ok": Transition.RECOVERED,
    "success": Transition.RECOVERED,
    "warn": Transition.WARN,
    "warning": Transition.WARN,
    "no data": Transition.NO_DATA,
    "no_data": Transition.NO_DATA,
    "nodata": Transition.NO_DATA,
    "re-triggered": Transition.RENOTIFY,
    "retriggered": Transition.RENOTIFY,
    "re-warn": Transition.RENOTIFY,
    "re-no data": Transition.RENOTIFY,
    "renotify": Transition.RENOTIFY,
}
_PRIORITY = {
    "p1": Severity.CRITICAL,
    "p2": Severity.HIGH,
    "p3": Severity.MEDIUM,
    "p4": Severity.LOW,
    "p5": Severity.INFO,
}
_ALERT_TYPE = {"error": Severity.HIGH, "warning": Severity.MEDIUM, "info": Severity.INFO, "success": Severity.INFO}
_DATADOG_KEYS = ("event_type", "last_updated", "alert_transition", "transition", "alert_id", "alert_cycle_key", "org")


def matches(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    return ("title" in doc or "alert_title" in doc or "event_title" in doc) and any(k in doc for k in _DATADOG_KEYS)


def _val(value: object) -> str | None:
    """A template value as text; None when empty or still a ``$VARIABLE``."""
    if value is None or isinstance(value, bool):
        return None
    s = str(value).strip()
    if not s or _UNSET.match(s):
        return None
    return s


def parse(doc: object, ctx: ParseContext) -> None:
    w = Webhook.model_validate(doc)
    raw_title = _val(w.title) or _val(w.alert_title) or ""
    prefix = _TITLE_PREFIX.match(raw_title)
    word = (_val(w.transition) or (prefix.group("t") if prefix else "") or "").lower()
    transition = _TRANSITIONS.get(word)
    if transition is None:
        ctx.warn(
            f"{ctx.pointer()}: no known transition (field {opt(word, 40) or 'absent'}, no [Triggered]/[Recovered] "
            "title prefix): taken as triggered"
        )
        transition = Transition.TRIGGERED
    name = raw_title[prefix.end() :] if prefix else raw_title
    body = _val(w.body) or ""
    monitor_id = _val(w.alert_id)
    if monitor_id is None:
        m = _MONITOR_LINK.search(body) or _MONITOR_LINK.search(_val(w.link) or "")
        monitor_id = m.group(1) if m else None
    scope = _val(w.alert_scope) or (prefix.group("scope") if prefix and prefix.group("scope") else None)
    tags = _tags(w.tags)
    host = _val(w.hostname)
    if host and not any(t.startswith("host:") for t in tags):
        tags.append(f"host:{host}")
    service = _val(w.service) or _tag(tags, "service")
    env = _val(w.env) or _tag(tags, "env")
    org_id = _val(w.org.id) if isinstance(w.org, Org) else _val(w.org)
    cycle = _val(w.alert_cycle_key)
    aggregate = _val(w.aggregate)
    observed = epoch_ms(_val(w.last_updated)) or epoch_ms(_val(w.date)) or ctx.received_at
    link = _val(w.link) or (f"https://app.datadoghq.com/monitors/{monitor_id}" if monitor_id else None)
    ctx.emit(
        Signal(
            # Identity: the monitor (or its title), the alert's group, and the cycle; not the transition, so a
            # recovery refreshes the signal its trigger made.
            fingerprint=fingerprint(
                "datadog", org_id, monitor_id or clean(name, 300).lower(), scope, cycle or aggregate
            ),
            source=Source.DATADOG,
            kind=Kind.ALERT,
            title=title(raw_title or f"Datadog monitor {monitor_id or '?'}"),
            severity=_severity(w, transition),
            observed_at=observed,
            raw_ref=ctx.pointer(),
            url=opt(link),
            monitor_id=opt(monitor_id),
            transition=transition,
            service=opt(service),
            env=opt(env),
            tags=tags,
            scope=opt(scope),
            alert_cycle_key=opt(cycle),
            group_key=opt(aggregate),
        )
    )


def _tags(value: str | list[str] | None) -> list[str]:
    items = value if isinstance(value, list) else (_val(value) or "").split(",")
    out = [t for t in (opt(x) for x in items) if t and not _UNSET.match(t)]
    return list(dict.fromkeys(out))


def _tag(tags: list[str], key: str) -> str | None:
    prefix = key + ":"
    return next((t[len(prefix) :] for t in tags if t.startswith(prefix)), None)


def _severity(w: Webhook, transition: Transition) -> Severity:
    for p in (_val(w.alert_priority), _val(w.priority)):
        if p and p.lower() in _PRIORITY:
            return _PRIORITY[p.lower()]
    alert_type = (_val(w.alert_type) or "").lower()
    if alert_type in _ALERT_TYPE:
        return _ALERT_TYPE[alert_type]
    if transition is Transition.RECOVERED:
        return Severity.INFO
    if transition is Transition.WARN:
        return Severity.MEDIUM
    return severity(_val(w.alert_status)) if _val(w.alert_status) else Severity.UNKNOWN
