"""Prometheus Alertmanager API v2: the alerts it holds now and its status, to tell whether the alerts that triggered
a work item have recovered, on the bounded JSON client (``fixloop.integrations.bounded``).

Vendor doc: prometheus/alertmanager ``api/v2/openapi.yaml`` -- ``GET /api/v2/alerts`` (query: ``filter``, repeated,
one matcher each such as ``alertname="X"``; ``active``, ``silenced``, ``inhibited``, ``unprocessed``: booleans,
default true; ``receiver``: a regex) answers ``gettableAlerts``, ``[{labels, annotations, startsAt, endsAt,
updatedAt, fingerprint, receivers: [{name}], status: {state: active|suppressed|unprocessed, silencedBy: [],
inhibitedBy: [], mutedBy: []}, generatorURL}]`` (times RFC 3339; an alert that is no longer firing is absent, or
has an ``endsAt`` in the past until it is dropped); ``GET /api/v2/status`` answers ``{cluster: {status, peers},
versionInfo: {version, ...}, config: {original}, uptime}``. Matchers: ``pkg/labels/parse.go`` (``ParseMatcher``:
a double-quoted value with ``\\\\``, ``\\"`` and ``\\n`` escaped), which the UTF-8 matchers parser of 0.27+
(``matcher/parse``) reads the same. Recorded answers: ``tests/fixtures/recorded/alertmanager/``.

Errors: ``Invalid`` (400: Alertmanager refused a filter, with its reason), ``AuthError`` (401/403, from a proxy in
front of Alertmanager), ``NotFound`` (404: not the v2 API), ``HttpStatusError`` (429/5xx, retryable),
``TransportError`` (no answer in ``timeout`` seconds), ``IntegrationError`` (an answer over ``max_bytes`` or
``MAX_ALERTS`` alerts, not JSON, or of another shape: the JSON pointer of the first wrong value). Messages never
carry the token or a body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.core.parsing import clean
from fixloop.integrations.bounded import ApiAccess, BaseUrl, JsonApi, access_options, json_pointer
from fixloop.integrations.checks import CheckResult, Status, bounded, failed, hint
from fixloop.integrations.errors import AuthError, IntegrationError

SYSTEM = "alertmanager"
PREFIX = "FIXLOOP_ALERTMANAGER_"
MAX_ALERTS = 10_000  # alerts of one answer
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_UNSET = datetime.fromisoformat("0001-01-01T00:00:00+00:00")  # Go's zero time: no time


class AlertmanagerSettings(BaseSettings, ApiAccess):
    """``FIXLOOP_ALERTMANAGER_URL`` (the base URL, e.g. ``http://alertmanager:9093``; setting it enables the alert
    recovery checks), ``FIXLOOP_ALERTMANAGER_TOKEN`` or ``FIXLOOP_ALERTMANAGER_USERNAME`` +
    ``FIXLOOP_ALERTMANAGER_PASSWORD`` (exclusive), ``FIXLOOP_ALERTMANAGER_TIMEOUT`` (seconds per request),
    ``FIXLOOP_ALERTMANAGER_CA_FILE`` (extra CA bundle), ``FIXLOOP_ALERTMANAGER_MAX_BYTES`` (answer cap)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    url: BaseUrl = Field(
        description="Alertmanager base URL (e.g. http://alertmanager:9093); setting it enables reading alerts "
        "back from its API v2 (whether the triggering alerts recovered)."
    )


@dataclass(frozen=True)
class ApiAlert:
    """One alert Alertmanager holds: ``state`` is ``active``, ``suppressed`` (silenced or inhibited: who by in
    ``silenced_by`` / ``inhibited_by``, silence ids and alert fingerprints) or ``unprocessed``; ``ends_at`` is when
    it stops counting as firing unless Prometheus re-sends it (None: unset)."""

    fingerprint: str
    labels: dict[str, str]
    state: str
    silenced_by: list[str]
    inhibited_by: list[str]
    starts_at: datetime | None
    ends_at: datetime | None
    generator_url: str | None


def matcher(name: str, value: str) -> str:
    """The equality matcher ``name="value"`` in Alertmanager's matcher syntax, the value double-quoted with
    backslash, double quote and line feed escaped (``\\\\``, ``\\"``, ``\\n``; ``pkg/labels/parse.go``).
    ``ValueError`` for a ``name`` that is not ``[a-zA-Z_][a-zA-Z0-9_]*`` or a value that is not valid Unicode text
    (a lone surrogate)."""
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"not a label name: {clean(name, 64)!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the label value is not valid UTF-8 text") from None
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"'


def _wrong(where: tuple[object, ...], what: str) -> IntegrationError:
    return IntegrationError(SYSTEM, f"the answer is not the API's: {json_pointer(where)} {what}")


def _strings(value: object, where: tuple[object, ...]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise _wrong(where, "is not an array of strings")
    return list(value)


def _time(value: object, where: tuple[object, ...]) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise _wrong(where, "is not a time")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _wrong(where, "is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise _wrong(where, "has no UTC offset")
    return None if when == _UNSET else when


def _alert(item: object, where: tuple[object, ...]) -> ApiAlert:
    if not isinstance(item, dict):
        raise _wrong(where, "is not an object")
    fp = item.get("fingerprint")
    if not isinstance(fp, str) or not fp:
        raise _wrong((*where, "fingerprint"), "is not a string")
    labels = item.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise _wrong((*where, "labels"), "is not an object of strings")
    status = item.get("status")
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        raise _wrong((*where, "status", "state"), "is not a string")
    url = item.get("generatorURL")
    if url is not None and not isinstance(url, str):
        raise _wrong((*where, "generatorURL"), "is not a string")
    return ApiAlert(
        fingerprint=fp,
        labels=dict(labels),
        state=status["state"],
        silenced_by=_strings(status.get("silencedBy"), (*where, "status", "silencedBy")),
        inhibited_by=_strings(status.get("inhibitedBy"), (*where, "status", "inhibitedBy")),
        starts_at=_time(item.get("startsAt"), (*where, "startsAt")),
        ends_at=_time(item.get("endsAt"), (*where, "endsAt")),
        generator_url=url or None,
    )


def parse_alerts(doc: object) -> list[ApiAlert]:
    """The alerts of a ``GET /api/v2/alerts`` answer (``gettableAlerts``), in Alertmanager's order.
    ``IntegrationError`` for another shape (the JSON pointer of the first wrong value) or more than ``MAX_ALERTS``
    alerts."""
    if not isinstance(doc, list):
        raise _wrong((), "is not an array")
    if len(doc) > MAX_ALERTS:
        raise IntegrationError(SYSTEM, f"the answer holds {len(doc)} alerts, over the limit of {MAX_ALERTS}")
    return [_alert(item, (i,)) for i, item in enumerate(doc)]


def error_reason(doc: object) -> str | None:
    """Alertmanager's reason in an error answer: the JSON string go-swagger sends, or a ``message``."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return doc["message"]
    return None


def _flag(value: bool) -> str:
    return "true" if value else "false"


class AlertmanagerClient(JsonApi):
    """The API v2 at ``settings.url``. Use as a context manager, or call ``close()``."""

    def __init__(self, settings: AlertmanagerSettings, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(SYSTEM, transport=transport, **access_options(settings, SYSTEM, error_reason))
        self.settings = settings

    def alerts(
        self,
        matchers: Mapping[str, str],
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,
    ) -> list[ApiAlert]:
        """``GET /api/v2/alerts``: the alerts whose labels equal every one of ``matchers`` (each its own ``filter``
        parameter, built by ``matcher``), limited to the kinds asked for (all by default), parsed by
        ``parse_alerts``. ``ValueError`` for a matcher name that is not a label name."""
        params = [("filter", matcher(name, value)) for name, value in matchers.items()]
        params += [
            ("active", _flag(active)),
            ("silenced", _flag(silenced)),
            ("inhibited", _flag(inhibited)),
            ("unprocessed", _flag(unprocessed)),
        ]
        return parse_alerts(self.get_json("/api/v2/alerts", params))

    def status(self) -> dict[str, Any]:
        """``GET /api/v2/status`` as Alertmanager answers it (``versionInfo.version``, ``cluster.status``,
        ``uptime``, ``config.original``); ``IntegrationError`` for an answer that is not an object."""
        doc = self.get_json("/api/v2/status")
        if not isinstance(doc, dict):
            raise _wrong((), "is not an object")
        return doc


PROBE_ALERTNAME = "fixloop-config-check"  # no such alert: the filter is parsed and answered, nothing is listed


def check(settings: AlertmanagerSettings, timeout: float) -> CheckResult:
    """``fixloop config check``'s alertmanager line: ``GET /api/v2/status`` (version, cluster status), then ``GET
    /api/v2/alerts`` with an ``alertname`` filter (the filters recovery checks send are taken); each request
    bounded by ``timeout`` seconds."""
    target = settings.url
    auth = f"{PREFIX}TOKEN or {PREFIX}USERNAME/_PASSWORD"
    try:
        with AlertmanagerClient(bounded(settings, timeout)) as client:
            status = client.status()
            client.alerts({"alertname": PROBE_ALERTNAME})
    except IntegrationError as e:
        return failed(SYSTEM, target, e, hint(e, {AuthError: auth}, f"{PREFIX}URL and {PREFIX}CA_FILE"))
    version = _field(status, "versionInfo", "version") or "version unknown"
    cluster = _field(status, "cluster", "status") or "unknown"
    return CheckResult(Status.OK, SYSTEM, f"{target} (Alertmanager {version}, cluster {cluster}, alert filters answer)")


def _field(doc: dict[str, Any], section: str, name: str) -> str | None:
    part = doc.get(section)
    value = part.get(name) if isinstance(part, dict) else None
    return clean(value, 40) if isinstance(value, str) else None
