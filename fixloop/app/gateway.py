"""The gateway: webhooks and scanner reports in over HTTP, signals and loop events out to Temporal.

``fixloop gateway`` serves ``create_app`` with uvicorn. A 2xx answer means what was sent is durably in Temporal:
signals are answered once the signal-with-start of the intake (``fixloop.app.temporal.submit_signals``) has returned;
webhook events once the loop's update or signal has. Any Temporal failure is a 503 (with ``Retry-After``), so the
sender retries; a retried delivery is deduplicated by the intake (by signal fingerprint: ``workflows/intake.py``).

Endpoints (request bodies are JSON: ``Content-Type: application/json``, UTF-8)

====================================  ===========================================  ==================================
Endpoint                              Body (format: where it is documented)        Authentication
====================================  ===========================================  ==================================
``POST /v1/signals/datadog``          Datadog Webhooks integration payload         ``X-Fixloop-Token: <token>``
                                      (docs.datadoghq.com/integrations/webhooks;
                                      ``integrations/datadog/webhook.py``)
``POST /v1/signals/alertmanager``     Alertmanager ``webhook_config`` payload      ``X-Fixloop-Token`` or
                                      (``integrations/alertmanager.py``)           ``Authorization: Bearer <token>``
``POST /v1/reports/{source}``         a scanner's JSON report; ``source`` is one   same
                                      of trivy, gitlab, grype, snyk, osv,
                                      pip-audit (``integrations/<source>``)
``POST /v1/reports``                  any of the formats above, detected as        same
                                      ``fixloop ingest`` detects them
``POST /v1/hooks/gitlab``             GitLab "Merge Request Hook"                  ``X-Gitlab-Token: <secret token>``
                                      (``integrations/gitlab/webhook.py``)         (FIXLOOP_GITLAB_WEBHOOK_TOKEN)
``POST /v1/hooks/flux``               Flux notification-controller event, from a   ``X-Signature: sha256=<hex HMAC of
                                      ``generic-hmac`` Provider                    the body>`` keyed with
                                      (``integrations/flux.py``)                   FIXLOOP_FLUX_HMAC_KEY
``GET /healthz``                      -                                            none
``GET /metrics``                      - (Prometheus text format)                   none
``GET /openapi.json``                 - (OpenAPI 3 description of the above)       none
====================================  ===========================================  ==================================

``<token>`` is FIXLOOP_GATEWAY_TOKEN, the shared secret of Datadog, Alertmanager and the scanners (Datadog: the
webhook's "Custom Headers" ``{"X-Fixloop-Token": "<token>"}``; Alertmanager: ``http_config.authorization``
``{type: Bearer, credentials: <token>}``; CI: ``curl -H "X-Fixloop-Token: $TOKEN" -H "Content-Type:
application/json" --data-binary @trivy.json <gateway>/v1/reports/trivy``). A secret that is not configured accepts
nothing. Secrets are compared in constant time and never logged or echoed.

Answers
  * 202 ``{"signals": n, "intake": "intake/<scope>", "delivery": id, "duplicates": d}``, with ``"truncated": t`` when
    t of them had oversized fields cut (``Signal.truncated`` counts what each lost): the signals are in the intake
    (``delivery`` names the document in each signal's ``raw_ref``: ``delivery:<id>#<JSON pointer>``); 200 with
    ``"signals": 0`` for a valid document without findings (nothing is sent). GitLab and Flux hooks: 200 with what
    was done (``{"workflow": id, "woken": true, "update": "approve"}``, ``{"workflow": id, "woken": true, "signal":
    "merge_request_event"}``: the loop was woken and reads the merge request from GitLab,
    ``{"loops": [...]}``) or ``{"ignored": reason}`` for a valid delivery fixloop has nothing to do with (another
    branch, an approval the loop refuses, a loop that is not running, a Flux event that is not a deploy outcome):
    a 2xx, so GitLab and Flux do not retry it.
  * Errors are ``{"error": message, "field": name}`` (``field`` names the header, ``body``, or the JSON field, e.g.
    ``alerts[0].labels``): 400 malformed JSON or not this endpoint's format, 401 missing or wrong secret, 404 unknown
    report source, 413 body over FIXLOOP_GATEWAY_MAX_BODY_BYTES (checked while reading, before parsing) or over a
    count limit (below), 415 not ``application/json`` (or a ``Content-Encoding``), 422 valid JSON with invalid
    values (a Flux event too old or too far ahead: field ``timestamp``), 503 Temporal unavailable (retry; with
    ``Retry-After``). A 500 is a bug in fixloop, never the sender's input.

Bounded cost per request (issue 14)
  * Connections (``fixloop/app/httpserver.py``, uvicorn's httptools protocol with deadlines): the request line and
    headers within FIXLOOP_GATEWAY_HEADER_TIMEOUT (10 s) and FIXLOOP_GATEWAY_MAX_HEADER_BYTES (64 KiB), the body
    within FIXLOOP_GATEWAY_BODY_TIMEOUT (30 s) of the headers, idle keep-alive connections closed after
    FIXLOOP_GATEWAY_KEEP_ALIVE_TIMEOUT (5 s); otherwise 408/431 and the connection is closed.
  * Order: the secret is checked before the body is read (for Flux, whose signature is an HMAC of the body, the
    body is read only up to its 1 MiB limit before the check), then the body is read up to its limit, then parsed
    once (orjson, ``fixloop.app.ingest.decode``) within limits every endpoint shares: FIXLOOP_GATEWAY_MAX_JSON_VALUES
    (1,000,000 JSON values, counted on the bytes before the parse: 413 ``body``) and FIXLOOP_GATEWAY_MAX_JSON_DEPTH
    (64 nested containers: 400 ``body``); then, for reports and alerts, FIXLOOP_GATEWAY_MAX_ELEMENTS (20,000
    elements per finding list, e.g. Trivy ``Results`` and ``Results[].Vulnerabilities``, Alertmanager ``alerts``,
    Grype ``matches``: 413 naming the list) before any pydantic model is built. The GitLab and Flux hook parsers
    validate the decoded document (no second JSON parse).
  * Memory: a request holds its body once (a growing buffer, not copied), the value count's copy of it only when
    the cheap bound is over the limit, and the parse at most about 4 x the body + 130 bytes x JSON values
    (orjson's objects, measured: ``fixloop/app/ingest.py``). Bodies over 256 KiB are parsed in a worker thread, one at
    a time, so the event loop (``/healthz``) keeps answering and the parse bound holds per process. With the
    defaults the worst document costs about 4 x 32 MiB + 130 MB; ``bench/gateway.py`` reports the process's
    ``peak_rss_mb`` over a run that includes the 8.6 MB report of 3 M empty results (refused before parsing).
    Bodies being read are not pooled: N slow senders of 32 MiB hold N x 32 MiB for at most the body timeout.
  * Temporal: the connection attempt, shared by concurrent requests, and each call's retries of an unreachable
    server are bounded by FIXLOOP_GATEWAY_CONNECT_TIMEOUT (1.5 s), so while Temporal is down a request gets its
    503 within that time, not after the SDK's 10 s of retries.
  * A client that disconnects before its body is read is a warning (``client_disconnect``), not an error.

Micro-batching: deliveries for the same scope that arrive within FIXLOOP_GATEWAY_BATCH_WINDOW_MS of the first
travel in one ``submit_signals`` call, as many as fit FIXLOOP_GATEWAY_BATCH_MAX_BYTES of signal JSON (a larger
delivery goes alone, split across signal-with-starts: Temporal refuses a payload over 2 MiB); while that call runs,
later deliveries gather for the next one (at most one call per scope in flight, so batches grow with the load).
Every delivery is answered from its call's outcome: 2xx once all its signals are recorded. Every signal is at most
16 KiB (``fixloop.core.models.Signal`` cuts oversized fields and counts the cuts in ``truncated``), so a delivery
within the body limit always fits; a payload Temporal still refuses for its size is a 413, never a 503.

Metrics (``/metrics``, label ``endpoint`` e.g. ``signals/datadog``, ``reports/trivy``, ``hooks/gitlab``; ``source``
the signals' source): ``fixloop_gateway_deliveries_received_total``, ``..._accepted_total``, ``..._ignored_total``,
``..._rejected_total{reason}`` (unauthorized, unknown_source, too_large, unsupported_media_type, malformed, invalid,
unavailable, client_disconnect, internal_error), ``fixloop_gateway_signals_accepted_total{source}``,
``fixloop_gateway_signal_duplicates_total{source}`` (a finding listed twice in one document, or a fingerprint this
process already delivered: a retry or an alert's later transition; the intake's own counters are authoritative),
``fixloop_gateway_request_duration_seconds{endpoint}``, ``fixloop_gateway_batch_signals`` and
``fixloop_gateway_batch_deliveries`` (per Temporal call), ``fixloop_gateway_temporal_calls_total{outcome}``,
``fixloop_gateway_temporal_call_seconds``.

GitLab: a project webhook (or a system hook) on "Merge request events" to ``<gateway>/v1/hooks/gitlab`` with the secret
token. A merge request's loop is found from its source branch (``fixloop/<work-item-id>``, or
``fixloop/revert/<work-item-id>/<sha12>``) and the project's path: workflow ``remediate/<project path>/<work-item-id>``,
so the intake's scope (FIXLOOP_GATEWAY_SCOPE) must be the GitOps project's path (not its numeric id). A hook is a
claim, never a fact: it only wakes the loop, which reads approvals and merge from the GitLab API before it decides.
``approval`` and ``approved`` actions wake it through the ``approve`` update (with a deterministic update id, so a
re-delivery is one update; the bot user's approvals and approvals of another head are refused early by its validator
and answered 200 ``ignored``); every other action through the ``merge_request_event`` signal.

Flux: a ``Provider`` of type ``generic-hmac`` with ``address: <gateway>/v1/hooks/flux`` and a secret whose ``token`` is
FIXLOOP_FLUX_HMAC_KEY, and an ``Alert`` on the Kustomization FIXLOOP_FLUX_KUSTOMIZATION; a deploy outcome
(``fixloop.activities.flux.deploy_event``) is signalled to every running loop of the scope in stage ``await_deploy``
(Temporal
visibility: ``FixloopStage``/``FixloopScope``); a loop not yet visible there finds the deploy by its poll fallback.

Flux replays: an event whose ``timestamp`` is older than FIXLOOP_GATEWAY_FLUX_MAX_AGE (600 s) or further ahead than
FIXLOOP_GATEWAY_FLUX_MAX_FUTURE (120 s) is refused (422, field ``timestamp``; nothing is signalled); a deploy
outcome already delivered by this process, the same (involved object, revision, reason, timestamp), is answered
200 ``{"ignored": ...}`` without a signal (a concurrent copy counts as delivered; one whose delivery failed with a
503 does not, so Flux's retry gets through). The keys are kept per gateway process, for FIXLOOP_GATEWAY_FLUX_MAX_AGE
and at most 10,000 of them: with several replicas a replay that reaches another replica within the age bound is
signalled once more. That changes no outcome: the loop's ``deploy_event`` handler (``workflows/remediation.py``
``_apply_events``) sets ``state.deploy`` from the event's revision and readiness, so the same event applied twice
leaves the same state; what a replay costs is one more signal in the loop's history (and, for another revision,
one more note). An older event replayed after a newer one could flip a failed/applied deploy back: the age bound
is what stops that.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from fixloop import __version__
from fixloop.activities.flux import deploy_event
from fixloop.activities.gitlab import Approval, MrState
from fixloop.app.ingest import (
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_VALUES,
    IngestError,
    IngestResult,
    TooDeep,
    TooMany,
    decode,
    parse_document,
)
from fixloop.app.temporal import BATCH_MAX_BYTES, PAYLOAD_LIMIT_BYTES, submit_signals
from fixloop.core.config import IntakeSettings, LoopSettings, TemporalSettings, load
from fixloop.core.models import SIGNAL_MAX_BYTES, Signal, SignalTooLarge, Source, signal_bytes
from fixloop.core.parsing import ParseError, clean
from fixloop.integrations.flux import (
    MAX_EVENT_BYTES,
    FluxEvent,
    FluxEventError,
    FluxSettings,
    parse_event,
    verify_signature,
)
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.integrations.gitlab.webhook import (
    APPROVAL_ACTIONS,
    EVENTS,
    MAX_HOOK_BYTES,
    MergeRequestHook,
    MergeRequestHookError,
    WebhookSettings,
    parse_merge_request_hook,
    verify_token,
)
from fixloop.workflows import policies
from fixloop.workflows.intake import intake_id
from fixloop.workflows.remediation import (
    ApprovalEvent,
    DeployEvent,
    MergeRequestEvent,
    RemediationWorkflow,
    Stage,
    loop_id,
)

log = logging.getLogger("fixloop.app.gateway")

TOKEN_HEADER = "X-Fixloop-Token"
GITLAB_TOKEN_HEADER = "X-Gitlab-Token"
GITLAB_EVENT_HEADER = "X-Gitlab-Event"
SIGNATURE_HEADER = "X-Signature"
SECRET_MAX_CHARS = 1_024  # a presented secret longer than this is refused without comparing
SCOPE_PATTERN = r"^[A-Za-z0-9._/-]+$"  # IntakeInput.scope's
REPORT_SOURCES = (Source.TRIVY, Source.GITLAB, Source.GRYPE, Source.SNYK, Source.OSV, Source.PIP_AUDIT)
# The field each format is recognised by: named in the 400 answer when a body is not that format.
FORMAT_FIELDS = {
    Source.DATADOG: "title",
    Source.ALERTMANAGER: "alerts",
    Source.TRIVY: "SchemaVersion",
    Source.GITLAB: "vulnerabilities",
    Source.GRYPE: "matches",
    Source.SNYK: "vulnerabilities",
    Source.OSV: "results",
    Source.PIP_AUDIT: "dependencies",
}
THREAD_PARSE_BYTES = 256 << 10  # larger bodies are parsed in a thread, so the event loop keeps answering
WARNINGS_SHOWN = 10
DELIVERED_REMEMBERED = 100_000  # fingerprints this process delivered, for the duplicates metric
LOOPS_LISTED = 1_000  # loops of one scope signalled per Flux event at most
FLUX_EVENTS_REMEMBERED = 10_000  # Flux event keys kept for the replay check (per process; oldest dropped first)

Connect = Callable[[], Awaitable[Client]]


class GatewaySettings(BaseSettings):
    """The gateway's settings. Environment: ``FIXLOOP_GATEWAY_TOKEN`` (the shared secret of Datadog, Alertmanager
    and scanners; unset: those endpoints answer 401), ``FIXLOOP_GATEWAY_SCOPE`` (the intake signals go to, default
    ``FIXLOOP_GITLAB_PROJECT``, else ``platform/gitops``: the GitOps project's path), ``FIXLOOP_GATEWAY_MAX_BODY_BYTES``
    (default 32 MiB), ``FIXLOOP_GATEWAY_BATCH_WINDOW_MS`` (micro-batching window, default 5),
    ``FIXLOOP_GATEWAY_BATCH_MAX_BYTES`` (bytes of signals per signal-with-start, default 1 MiB, at most 1.5 MiB),
    ``FIXLOOP_GATEWAY_TEMPORAL_TIMEOUT`` (seconds a request waits for Temporal before its 503, default 10), the
    limits of "Bounded cost" in the module docstring (``..._CONNECT_TIMEOUT``, ``..._MAX_JSON_DEPTH``,
    ``..._MAX_JSON_VALUES``, ``..._MAX_ELEMENTS``, ``..._HEADER_TIMEOUT``, ``..._BODY_TIMEOUT``,
    ``..._KEEP_ALIVE_TIMEOUT``, ``..._MAX_HEADER_BYTES``), the Flux replay bounds (``..._FLUX_MAX_AGE``,
    ``..._FLUX_MAX_FUTURE``), and
    ``FIXLOOP_GITLAB_BOT_USERNAME`` (fixloop's own GitLab user, whose approvals never count). The GitLab webhook
    token and the Flux HMAC key are those of ``WebhookSettings`` and ``FluxSettings``."""

    model_config = SettingsConfigDict(
        env_prefix="FIXLOOP_GATEWAY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    token: SecretStr | None = Field(
        default=None,
        description="Shared secret of the Datadog, Alertmanager and scanner endpoints (unset: they answer 401).",
    )
    scope: str = Field(
        default=GitLabSettings.model_fields["project"].default,
        min_length=1,
        max_length=200,
        pattern=SCOPE_PATTERN,
        validation_alias=AliasChoices("FIXLOOP_GATEWAY_SCOPE", "FIXLOOP_GITLAB_PROJECT"),
        description="The intake signals go to: the GitOps project's path (default FIXLOOP_GITLAB_PROJECT).",
    )
    max_body_bytes: int = Field(default=32 << 20, gt=0, le=1 << 30, description="Largest request body, in bytes.")
    batch_window_ms: float = Field(
        default=5.0, ge=0, le=10_000, description="Milliseconds requests are collected into one batch to Temporal."
    )
    batch_max_bytes: int = Field(
        default=BATCH_MAX_BYTES,
        ge=4 * SIGNAL_MAX_BYTES,
        le=PAYLOAD_LIMIT_BYTES * 3 // 4,
        description="Largest batch of signals in one signal-with-start, in bytes of JSON (Temporal refuses a "
        "payload over 2 MiB); a larger delivery is split across calls.",
    )
    temporal_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds a request waits for Temporal before its 503."
    )
    connect_timeout: float = Field(
        default=1.5,
        gt=0,
        le=60,
        description="Seconds a request waits for a Temporal connection before its 503 (Temporal down: 503 this fast).",
    )
    max_json_depth: int = Field(
        default=MAX_DEPTH, ge=2, le=1_000, description="Deepest nesting of JSON containers in a body (deeper: 400)."
    )
    max_json_values: int = Field(
        default=MAX_VALUES,
        ge=1_000,
        le=100_000_000,
        description="Most JSON values in one body, counted before it is parsed (more: 413, field body).",
    )
    max_elements: int = Field(
        default=MAX_ELEMENTS,
        ge=1,
        le=10_000_000,
        description="Most elements of one finding list of a report (results, alerts, vulnerabilities, matches, "
        "packages; more: 413 naming the list).",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Seconds a connection may take to send a request's headers."
    )
    body_timeout: float = Field(
        default=30.0, gt=0, le=3_600, description="Seconds a request may take to send its body once its headers are in."
    )
    keep_alive_timeout: int = Field(
        default=5, ge=1, le=600, description="Seconds an idle keep-alive connection stays open (uvicorn's)."
    )
    max_header_bytes: int = Field(
        default=64 << 10, ge=4 << 10, le=16 << 20, description="Largest request line and headers, in bytes (431)."
    )
    flux_max_age: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Seconds a Flux event's timestamp may be in the past (older: 422, a replay changes nothing).",
    )
    flux_max_future: float = Field(
        default=120.0, ge=0, le=3_600, description="Seconds a Flux event's timestamp may be ahead (clock skew)."
    )
    bot_username: str = Field(
        default=GitLabSettings.model_fields["bot_username"].default,
        min_length=1,
        validation_alias=AliasChoices("FIXLOOP_GITLAB_BOT_USERNAME"),
        description="fixloop's own GitLab user, whose approvals never count.",
    )


class Rejected(Exception):
    """A request answered with an error: ``status``, a metrics ``reason``, the message and the field it is about."""

    def __init__(
        self, status: int, reason: str, error: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.reason = reason
        self.error = error
        self.field = field
        self.headers = headers


class Unavailable(Rejected):
    """Temporal could not be reached or did not answer in time: 503, the sender retries."""

    def __init__(self, what: str = "nothing was recorded") -> None:
        super().__init__(
            503, "unavailable", f"Temporal is unavailable: {what}; retry later", None, {"Retry-After": "5"}
        )


_TOO_LARGE = re.compile(r"size limit|too large|larger than max|exceeds.*(size|limit)", re.IGNORECASE)


def _refused(e: BaseException) -> Rejected:
    """The answer to a failed ``submit_signals``: 413 for a payload Temporal refuses by its size (``SignalTooLarge``;
    the server's blob size limit is ``INVALID_ARGUMENT``, a request over gRPC's message size ``RESOURCE_EXHAUSTED``
    naming the size), else ``Unavailable`` (503, retry)."""
    if isinstance(e, SignalTooLarge) or (
        isinstance(e, RPCError)
        and e.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.RESOURCE_EXHAUSTED)
        and _TOO_LARGE.search(e.message or "")
    ):
        return Rejected(413, "too_large", f"Temporal refused the signals as too large: {clean(e, 200)}", "body")
    return Unavailable()


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


_UNION_MEMBER = frozenset({"str", "int", "float", "bool", "bytes", "none"})


def json_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a JSON path: ``("alerts", 0, "labels")`` -> ``alerts[0].labels``. The members
    pydantic names inside a union (``("tags", "list[str]", 0)``) are left out: they are types, not fields."""
    out = ""
    for part in loc:
        if isinstance(part, str) and (part in _UNION_MEMBER or "[" in part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return clean(out, 200) or "body"


# ---------------------------------------------------------------- metrics


class Metrics:
    """The gateway's Prometheus metrics, in their own registry (one per app)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.received = Counter(
            "fixloop_gateway_deliveries_received", "Requests received, per endpoint.", ["endpoint"], registry=r
        )
        self.accepted = Counter(
            "fixloop_gateway_deliveries_accepted",
            "Deliveries answered 2xx after Temporal recorded them.",
            ["endpoint"],
            registry=r,
        )
        self.ignored = Counter(
            "fixloop_gateway_deliveries_ignored",
            "Valid deliveries with nothing to do (answered 200 so the sender does not retry).",
            ["endpoint"],
            registry=r,
        )
        self.rejected = Counter(
            "fixloop_gateway_deliveries_rejected",
            "Requests answered 4xx/5xx, by reason.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.signals = Counter(
            "fixloop_gateway_signals_accepted", "Signals delivered to an intake, per source.", ["source"], registry=r
        )
        self.duplicates = Counter(
            "fixloop_gateway_signal_duplicates",
            "Signals whose fingerprint was repeated in one document or already delivered by this process.",
            ["source"],
            registry=r,
        )
        self.latency = Histogram(
            "fixloop_gateway_request_duration_seconds",
            "Time from the request to its answer, per endpoint.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_signals = Histogram(
            "fixloop_gateway_batch_signals",
            "Signals per Temporal call (micro-batch).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=r,
        )
        self.batch_deliveries = Histogram(
            "fixloop_gateway_batch_deliveries",
            "Deliveries per Temporal call (micro-batch).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.temporal_calls = Counter(
            "fixloop_gateway_temporal_calls", "submit_signals calls, by outcome (ok, failed).", ["outcome"], registry=r
        )
        self.temporal_seconds = Histogram(
            "fixloop_gateway_temporal_call_seconds",
            "Duration of each submit_signals call (all its signal-with-starts).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self._children: dict[str, tuple[Any, Any, Any, Any]] = {}

    def of(self, endpoint: str) -> tuple[Any, Any, Any, Any]:
        """The received, accepted and ignored counters and the latency histogram of ``endpoint`` (looked up once)."""
        found = self._children.get(endpoint)
        if found is None:
            found = self._children[endpoint] = (
                self.received.labels(endpoint),
                self.accepted.labels(endpoint),
                self.ignored.labels(endpoint),
                self.latency.labels(endpoint),
            )
        return found


# ---------------------------------------------------------------- micro-batching


@dataclass
class _Delivery:
    """One delivery's signals waiting for Temporal, their JSON bytes, and the future its request awaits."""

    signals: list[Signal]
    size: int
    future: asyncio.Future[str]


@dataclass
class _Collector:
    """Deliveries for one scope waiting for the next ``submit_signals`` call, and the task that makes it."""

    waiting: deque[_Delivery] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


# ---------------------------------------------------------------- the gateway


class Gateway:
    """What the routes share: settings, the lazily connected Temporal client, the collectors, the metrics."""

    def __init__(
        self,
        settings: GatewaySettings,
        connect: Connect,
        *,
        task_queue: str,
        intake: IntakeSettings,
        flux: FluxSettings,
        gitlab_webhook: WebhookSettings,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self.task_queue = task_queue
        self.intake = intake
        self.loop = load(LoopSettings)  # the timings of the loops an intake this starts will start
        self.flux = flux
        self.gitlab_webhook = gitlab_webhook
        self.metrics = Metrics()
        self.client: Client | None = None
        self._connecting: asyncio.Task[Client] | None = None
        self._parse_lock = asyncio.Lock()  # one large body parsed at a time: the parse memory bound is per process
        self._flux_seen: OrderedDict[tuple[str, ...], float] = OrderedDict()  # Flux event key -> its timestamp
        self._collectors: dict[str, _Collector] = {}
        self._delivered: OrderedDict[str, None] = OrderedDict()
        token = settings.token.get_secret_value() if settings.token else ""
        self._token_digest = _digest(token) if token else None

    # --- plumbing ------------------------------------------------------------------------------------------------

    async def serve(self, endpoint: str, request: Request, work: Callable[[], Awaitable[tuple[int, dict]]]) -> Response:
        """Run one endpoint's ``work``: the answer, the metrics and a log line for a rejection."""
        m = self.metrics
        received, accepted, ignored, latency = m.of(endpoint)
        received.inc()
        started = time.perf_counter()
        try:
            status, body = await work()
        except Rejected as e:
            m.rejected.labels(endpoint, e.reason).inc()
            log.info("%s %s: %d %s (%s)", request.method, endpoint, e.status, e.reason, e.field or "-")
            return _json(e.status, {"error": e.error, "field": e.field}, e.headers)
        except ClientDisconnect:  # the sender went away mid-body (or the server's body deadline closed it)
            m.rejected.labels(endpoint, "client_disconnect").inc()
            log.warning("%s %s: client gone before its body was read; nothing recorded", request.method, endpoint)
            return _json(400, {"error": "client disconnected", "field": "body"})
        except Exception:
            m.rejected.labels(endpoint, "internal_error").inc()
            log.exception("%s %s: internal error", request.method, endpoint)
            return _json(500, {"error": "internal error (a bug in fixloop; nothing was recorded)", "field": None})
        finally:
            latency.observe(time.perf_counter() - started)
        (ignored if "ignored" in body else accepted).inc()
        return _json(status, body)

    async def temporal(self) -> Client:
        """The Temporal client, connected on first use; ``Unavailable`` while it cannot be (retried per request).
        Concurrent requests share one connection attempt and each waits for it at most
        FIXLOOP_GATEWAY_CONNECT_TIMEOUT seconds, so while Temporal is down every request gets its 503 within that
        time (not one attempt after another's)."""
        if self.client is not None:
            return self.client
        attempt = self._connecting
        if attempt is None:
            attempt = self._connecting = asyncio.create_task(self._connect_once(), name="gateway-temporal-connect")
        try:
            return await asyncio.wait_for(asyncio.shield(attempt), self.settings.connect_timeout)
        except Exception as e:  # connect raises RuntimeError, TimeoutError, or the CLI's own errors
            log.warning("cannot connect to Temporal: %s: %s", type(e).__name__, clean(e, 300))
            raise Unavailable() from None

    async def _connect_once(self) -> Client:
        """One connection attempt (bounded by FIXLOOP_GATEWAY_CONNECT_TIMEOUT); the next request after a failure
        makes a new one."""
        try:
            self.client = await asyncio.wait_for(self._connect(), self.settings.connect_timeout)
            return self.client
        finally:
            self._connecting = None

    def authorize(self, request: Request) -> None:
        """The shared secret: ``X-Fixloop-Token`` or ``Authorization: Bearer``; 401 unless it matches."""
        presented = request.headers.get(TOKEN_HEADER)
        if presented is None:
            auth = request.headers.get("authorization")
            if auth is not None and auth[:7].lower() == "bearer ":
                presented = auth[7:].strip()
        expected = self._token_digest
        if expected is None or presented is None or len(presented) > SECRET_MAX_CHARS:
            ok = False
        else:
            ok = hmac.compare_digest(_digest(presented), expected)
        if not ok:
            raise Rejected(401, "unauthorized", f"missing or wrong {TOKEN_HEADER}", TOKEN_HEADER)

    # --- signals -------------------------------------------------------------------------------------------------

    async def signals(self, request: Request, source: Source | None) -> tuple[int, dict]:
        """A webhook payload or scanner report of ``source`` (None: detected) -> its signals, into the intake."""
        self.authorize(request)
        check_content_type(request)
        body = await read_body(request, self.settings.max_body_bytes)
        delivery = uuid.uuid4().hex[:16]
        if len(body) > THREAD_PARSE_BYTES:
            async with self._parse_lock:
                result = await asyncio.to_thread(parse_signals, body, f"delivery:{delivery}", source, self.settings)
            del body
        else:
            result = parse_signals(body, f"delivery:{delivery}", source, self.settings)
        answer: dict[str, Any] = {"signals": len(result.signals), "intake": None, "delivery": delivery}
        truncated = sum(1 for s in result.signals if s.truncated)
        if truncated:  # signals whose oversized fields were cut (each counts what it lost in its ``truncated``)
            answer["truncated"] = truncated
        if result.warnings:
            answer["warnings"] = [clean(w, 300) for w in result.warnings[:WARNINGS_SHOWN]]
        if not result.signals:
            return 200, answer
        answer["intake"] = await self.submit(self.settings.scope, result.signals)
        again = self._remember(result.signals)
        label = result.source.value if result.source else "unknown"
        self.metrics.signals.labels(label).inc(len(result.signals))
        if result.duplicates + again:
            self.metrics.duplicates.labels(label).inc(result.duplicates + again)
        answer["duplicates"] = result.duplicates + again
        return 202, answer

    def _remember(self, signals: Sequence[Signal]) -> int:
        """Record delivered fingerprints (bounded); how many had been delivered before."""
        seen = self._delivered
        again = 0
        for s in signals:
            if s.fingerprint in seen:
                again += 1
                seen.move_to_end(s.fingerprint)
            else:
                seen[s.fingerprint] = None
        while len(seen) > DELIVERED_REMEMBERED:
            seen.popitem(last=False)
        return again

    async def submit(self, scope: str, signals: list[Signal]) -> str:
        """Deliver ``signals`` to the intake of ``scope`` together with the other deliveries of the batch window;
        the intake's workflow id once Temporal has recorded all of them, ``Unavailable`` if it did not. A signal that
        alone is over FIXLOOP_GATEWAY_BATCH_MAX_BYTES (impossible for a validated ``Signal``: it is at most
        ``SIGNAL_MAX_BYTES``) is a 413 naming the record, before anything is sent."""
        size = 0
        for s in signals:
            n = signal_bytes(s)
            if n > self.settings.batch_max_bytes - 2:
                where = s.raw_ref.partition("#")[2] or "body"
                raise Rejected(413, "too_large", f"a signal of {n} bytes is over the batch budget", where)
            size += n + 1
        collector = self._collectors.setdefault(scope, _Collector())
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        collector.waiting.append(_Delivery(signals, size, future))
        if collector.task is None:
            collector.task = asyncio.create_task(self._flush(scope, collector), name=f"gateway-batch-{scope}")
        return await future

    def _next_batch(self, collector: _Collector) -> list[_Delivery]:
        """The waiting deliveries that go in the next call: in arrival order, while their signals fit
        FIXLOOP_GATEWAY_BATCH_MAX_BYTES (at least one; ``submit_signals`` splits a larger delivery across calls)."""
        budget = self.settings.batch_max_bytes
        batch = [collector.waiting.popleft()]
        size = batch[0].size
        while collector.waiting and size + collector.waiting[0].size <= budget:
            size += collector.waiting[0].size
            batch.append(collector.waiting.popleft())
        return batch

    async def _flush(self, scope: str, collector: _Collector) -> None:
        """Send the collector's deliveries after the batch window, in calls of at most FIXLOOP_GATEWAY_BATCH_MAX_BYTES
        (``_next_batch``); repeat while more gathered during a call (they have waited already: no second window).
        Each delivery's future gets its call's outcome: Temporal refusing a payload as too large is a 413 (retrying
        cannot help; the byte budgets make it a bug), any other failure ``Unavailable``."""
        try:
            await asyncio.sleep(self.settings.batch_window_ms / 1000)
            while collector.waiting:
                batch = self._next_batch(collector)
                signals = [s for d in batch for s in d.signals]
                m = self.metrics
                m.batch_signals.observe(len(signals))
                m.batch_deliveries.observe(len(batch))
                started = time.perf_counter()
                wid, error = "", None
                try:
                    wid = await asyncio.wait_for(self._send(scope, signals), self.settings.temporal_timeout)
                except Exception as e:
                    error = e
                    if not isinstance(e, Unavailable):
                        log.warning(
                            "signal-with-start of %s failed: %s: %s", intake_id(scope), type(e).__name__, clean(e, 300)
                        )
                m.temporal_seconds.observe(time.perf_counter() - started)
                m.temporal_calls.labels("ok" if error is None else "failed").inc()
                for d in batch:
                    if not d.future.done():
                        if error is None:
                            d.future.set_result(wid)
                        else:
                            d.future.set_exception(_refused(error))
        finally:
            collector.task = None
            while collector.waiting:  # cancelled while deliveries waited (shutdown): they must not hang
                d = collector.waiting.popleft()
                if not d.future.done():
                    d.future.set_exception(Unavailable())

    async def _send(self, scope: str, signals: list[Signal]) -> str:
        client = await self.temporal()
        return await submit_signals(
            client,
            scope,
            signals,
            task_queue=self.task_queue,
            intake=self.intake,
            loop=self.loop,
            max_bytes=self.settings.batch_max_bytes,
        )

    # --- GitLab ----------------------------------------------------------------------------------------------------

    async def gitlab_hook(self, request: Request) -> tuple[int, dict]:
        """A GitLab merge request hook -> the ``approve`` update or the ``merge_request_event`` signal of its loop: a
        wake-up (the loop reads the merge request from GitLab)."""
        if not verify_token(request.headers.get(GITLAB_TOKEN_HEADER), self.gitlab_webhook.token):
            raise Rejected(401, "unauthorized", f"missing or wrong {GITLAB_TOKEN_HEADER}", GITLAB_TOKEN_HEADER)
        check_content_type(request)
        body = await read_body(request, min(self.settings.max_body_bytes, MAX_HOOK_BYTES))
        event = request.headers.get(GITLAB_EVENT_HEADER)
        if event is not None and event.strip() not in EVENTS:
            return 200, {"ignored": f"{clean(event, 60)!r} is not a merge request event"}
        doc = decode_body(body, self.settings)
        if not isinstance(doc, dict):
            raise Rejected(400, "malformed", "not a GitLab webhook: the body is not a JSON object", "body")
        kind = doc.get("object_kind")
        if kind != "merge_request":
            if isinstance(kind, str):  # another event of a system hook (push, tag push, ...)
                return 200, {"ignored": f"object_kind {clean(kind, 40)!r} is not a merge request event"}
            raise Rejected(400, "malformed", "not a GitLab merge request event: no object_kind", "object_kind")
        try:
            hook = parse_merge_request_hook(doc, event)
        except MergeRequestHookError as e:
            raise Rejected(422, "invalid", f"invalid merge request event: {e}", hook_field(str(e))) from None
        work_item = fixloop_work_item(hook.object_attributes.source_branch)
        if work_item is None:
            return 200, {"ignored": f"branch {clean(hook.object_attributes.source_branch, 100)!r} is not fixloop's"}
        wid = loop_id(hook.project_path, work_item)
        if hook.action in APPROVAL_ACTIONS:
            return await self._approve(hook, wid)
        return await self._mr_event(hook, wid)

    async def _approve(self, hook: MergeRequestHook, wid: str) -> tuple[int, dict]:
        """Wake loop ``wid`` with the ``approve`` update (its validator may refuse an obvious non-approval: 200
        ``ignored``); the approval it claims counts only if GitLab's API lists it."""
        try:
            approval = hook.approval(self.settings.bot_username)
        except MergeRequestHookError as e:
            raise Rejected(422, "invalid", f"invalid merge request event: {e}", hook_field(str(e))) from None
        assert approval is not None  # an approval action always gives one
        update = ApprovalEvent(approval=Approval(**approval.model_dump()))
        client = await self.temporal()
        handle = client.get_workflow_handle_for(RemediationWorkflow.run, wid)
        try:
            await asyncio.wait_for(
                handle.execute_update(
                    RemediationWorkflow.approve,
                    update,
                    id=f"gitlab-approval/{hook.iid}/{approval.by}/{approval.sha}",  # a re-delivery is one update
                ),
                self.settings.temporal_timeout,
            )
        except WorkflowUpdateFailedError as e:  # the validator refused it: nothing was recorded
            cause = e.cause.message if hasattr(e.cause, "message") else str(e.cause)
            return 200, {"workflow": wid, "ignored": clean(cause, 300)}
        except RPCError as e:
            return self._rpc_outcome(e, wid)
        except Exception as e:
            raise self._unavailable(e, wid) from None
        return 200, {"workflow": wid, "woken": True, "update": "approve"}

    async def _mr_event(self, hook: MergeRequestHook, wid: str) -> tuple[int, dict]:
        """Wake loop ``wid`` with the ``merge_request_event`` signal; the state it claims is never believed."""
        if hook.head_sha is None:
            return 200, {"workflow": wid, "ignored": "no object_attributes.last_commit: the event names no head"}
        try:
            event = MergeRequestEvent(
                iid=hook.iid, state=MrState(hook.state), head_sha=hook.head_sha, merge_sha=hook.merge_sha
            )
        except ValueError:
            raise Rejected(
                422,
                "invalid",
                f"object_attributes.state: {clean(hook.state, 40)!r} is not a merge request state",
                "object_attributes.state",
            ) from None
        client = await self.temporal()
        handle = client.get_workflow_handle_for(RemediationWorkflow.run, wid)
        try:
            await asyncio.wait_for(
                handle.signal(RemediationWorkflow.merge_request_event, event), self.settings.temporal_timeout
            )
        except RPCError as e:
            return self._rpc_outcome(e, wid)
        except Exception as e:
            raise self._unavailable(e, wid) from None
        return 200, {"workflow": wid, "woken": True, "signal": "merge_request_event", "action": hook.action}

    def _rpc_outcome(self, e: RPCError, wid: str) -> tuple[int, dict]:
        if e.status is RPCStatusCode.NOT_FOUND:  # no such loop, or it has ended
            return 200, {"workflow": wid, "ignored": "no running loop with this id"}
        raise self._unavailable(e, wid)

    def _unavailable(self, e: BaseException, wid: str) -> Unavailable:
        log.warning("Temporal call for %s failed: %s: %s", wid, type(e).__name__, clean(e, 300))
        return Unavailable("the event was not delivered")

    # --- Flux ------------------------------------------------------------------------------------------------------

    async def flux_hook(self, request: Request) -> tuple[int, dict]:
        """A Flux event -> ``deploy_event`` to every running loop of the scope waiting for its deploy."""
        check_content_type(request)
        body = await read_body(request, min(self.settings.max_body_bytes, MAX_EVENT_BYTES))
        key = self.flux.hmac_key
        if (
            key is None
            or not key.get_secret_value()
            or not verify_signature(body, request.headers.get(SIGNATURE_HEADER), key)
        ):
            raise Rejected(401, "unauthorized", f"missing or wrong {SIGNATURE_HEADER}", SIGNATURE_HEADER)
        doc = decode_body(body, self.settings)  # the one parse: bounded nesting, a 400 for what is not JSON
        try:
            event = parse_event(doc)
        except FluxEventError as e:
            raise Rejected(422, "invalid", str(e), event_field(str(e))) from None
        self._check_fresh(event)
        deploy = deploy_event(event, self.flux.kustomization)
        if deploy is None:
            return 200, {"ignored": f"not a deploy outcome of Kustomization {self.flux.kustomization}"}
        key = flux_event_key(event)
        if key in self._flux_seen:
            return 200, {"ignored": "this event was already delivered (a replay or a re-delivery)"}
        self._flux_seen[key] = event.timestamp.timestamp()  # claimed now: a concurrent copy is a replay too
        try:
            return await self._signal_deploy(deploy)
        except BaseException:
            self._flux_seen.pop(key, None)  # not delivered: Flux's retry must get through
            raise
        finally:
            self._forget_old_flux_events()

    def _check_fresh(self, event: FluxEvent) -> None:
        """422 (field ``timestamp``) for an event older than FIXLOOP_GATEWAY_FLUX_MAX_AGE or further ahead than
        FIXLOOP_GATEWAY_FLUX_MAX_FUTURE: a replay of an old signed event changes nothing."""
        stamp = event.timestamp if event.timestamp.tzinfo else event.timestamp.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - stamp).total_seconds()
        if age > self.settings.flux_max_age:
            raise Rejected(
                422,
                "invalid",
                f"event timestamp is {age:.0f} s old, over FIXLOOP_GATEWAY_FLUX_MAX_AGE "
                f"({self.settings.flux_max_age:g} s)",
                "timestamp",
            )
        if -age > self.settings.flux_max_future:
            raise Rejected(
                422,
                "invalid",
                f"event timestamp is {-age:.0f} s ahead, over FIXLOOP_GATEWAY_FLUX_MAX_FUTURE "
                f"({self.settings.flux_max_future:g} s)",
                "timestamp",
            )

    def _forget_old_flux_events(self) -> None:
        """Drop remembered keys whose event is now too old to be accepted anyway, and the oldest beyond
        ``FLUX_EVENTS_REMEMBERED``."""
        seen = self._flux_seen
        horizon = time.time() - self.settings.flux_max_age
        while seen and (len(seen) > FLUX_EVENTS_REMEMBERED or next(iter(seen.values())) < horizon):
            seen.popitem(last=False)

    async def _signal_deploy(self, deploy: DeployEvent) -> tuple[int, dict]:
        scope = self.settings.scope
        query = (
            f'{policies.SA_STAGE.name} = "{Stage.AWAIT_DEPLOY.value}" AND {policies.SA_SCOPE.name} = "{scope}" '
            'AND ExecutionStatus = "Running"'
        )
        client = await self.temporal()

        async def signal_all() -> list[str]:
            ids = [w.id async for w in client.list_workflows(query, limit=LOOPS_LISTED)]
            results = await asyncio.gather(
                *(client.get_workflow_handle(wid).signal(RemediationWorkflow.deploy_event, deploy) for wid in ids),
                return_exceptions=True,
            )
            for r in results:
                if isinstance(r, BaseException) and not (
                    isinstance(r, RPCError) and r.status is RPCStatusCode.NOT_FOUND
                ):
                    raise r
            return [wid for wid, r in zip(ids, results, strict=True) if not isinstance(r, BaseException)]

        try:
            loops = await asyncio.wait_for(signal_all(), self.settings.temporal_timeout)
        except Exception as e:
            raise self._unavailable(e, f"loops of {scope}") from None
        return 200, {"revision": deploy.revision, "ready": deploy.ready, "loops": loops}


# ---------------------------------------------------------------- request helpers


def check_content_type(request: Request) -> None:
    """415 unless the body is JSON (``application/json`` or ``application/*+json``, UTF-8) and not encoded."""
    raw = request.headers.get("content-type", "")
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    json_type = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
    if not json_type or charset not in (None, "utf-8", "utf8"):
        shown = clean(raw, 80) or "none"
        raise Rejected(415, "unsupported_media_type", f"Content-Type {shown!r}: send application/json", "Content-Type")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Rejected(
            415,
            "unsupported_media_type",
            f"Content-Encoding {clean(encoding, 40)!r} is not accepted",
            "Content-Encoding",
        )


async def read_body(request: Request, limit: int) -> bytearray:
    """The body, read up to ``limit`` bytes: 413 as soon as it is larger (declared or while reading). One buffer
    that grows with what arrives (nothing is allocated for a ``Content-Length`` that is only declared) and is not
    copied afterwards. ``ClientDisconnect`` if the client goes away first."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Rejected(400, "malformed", "Content-Length is not a number", "Content-Length")
        if int(declared) > limit:
            raise Rejected(413, "too_large", f"body of {int(declared)} bytes is over the {limit}-byte limit", "body")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise Rejected(413, "too_large", f"body is over the {limit}-byte limit", "body")
    return buf


def decode_body(body: bytes | bytearray, settings: GatewaySettings) -> object:
    """The body as JSON, parsed once (``fixloop.app.ingest.decode``: orjson) within the limits every endpoint shares:
    400 naming ``body`` for what is not JSON or is nested deeper than FIXLOOP_GATEWAY_MAX_JSON_DEPTH, 413 naming
    ``body`` for more JSON values than FIXLOOP_GATEWAY_MAX_JSON_VALUES (counted before the parse)."""
    try:
        return decode(body, "body", max_depth=settings.max_json_depth, max_values=settings.max_json_values)
    except TooMany as e:
        raise Rejected(413, "too_large", f"{e.reason} (FIXLOOP_GATEWAY_MAX_JSON_VALUES)", "body") from None
    except TooDeep as e:
        raise Rejected(400, "malformed", f"{e.reason} (FIXLOOP_GATEWAY_MAX_JSON_DEPTH)", "body") from None
    except IngestError as e:
        raise Rejected(400, "malformed", e.reason, "body") from None


def parse_signals(body: bytes | bytearray, ref: str, source: Source | None, settings: GatewaySettings) -> IngestResult:
    """The signals of one document, parsed exactly as ``fixloop ingest`` does (``fixloop.app.ingest.parse_document``),
    within ``settings``' limits. 400 for malformed or too deeply nested JSON or a body that is not ``source``'s
    format (naming the field that format is recognised by), 413 for too many JSON values (``body``) or elements of
    a finding list (naming the list, e.g. ``Results``), 422 for a document of the format with invalid values
    (naming the first offending field)."""
    doc = decode_body(body, settings)
    try:
        return parse_document(
            doc, ref=ref, received_at=datetime.now(UTC), source=source, max_elements=settings.max_elements
        )
    except TooMany as e:
        raise Rejected(413, "too_large", f"{e.reason} (FIXLOOP_GATEWAY_MAX_ELEMENTS)", e.field) from None
    except IngestError as e:
        # parse_document raises ``from None``; what it caught is still the context (PEP 415)
        cause = e.__context__
        if isinstance(cause, ValidationError):
            first = cause.errors(include_url=False)[0]
            raise Rejected(422, "invalid", e.reason, json_path(first.get("loc", ()))) from None
        if isinstance(cause, ParseError):
            raise Rejected(422, "invalid", e.reason, "body") from None
        named = FORMAT_FIELDS.get(source) if source is not None and isinstance(doc, dict) else None
        raise Rejected(400, "malformed", e.reason, named or "body") from None


_BRANCH = re.compile(r"^fixloop/(wi-[0-9a-f]{24})$")
_REVERT_BRANCH = re.compile(r"^fixloop/revert/(wi-[0-9a-f]{24})/[0-9a-f]{12}$")


def fixloop_work_item(branch: str) -> str | None:
    """The work item id of a fixloop branch (``fixloop/<id>``, ``fixloop/revert/<id>/<sha12>``), else None."""
    m = _BRANCH.match(branch) or _REVERT_BRANCH.match(branch)
    return m.group(1) if m else None


def hook_field(message: str) -> str:
    """The field a ``MergeRequestHookError`` message is about (``invalid or missing: a.b, c`` -> ``a.b``)."""
    head, _, rest = message.partition(":")
    if head == "invalid or missing":
        return clean(rest.strip().split(",")[0].split(" ")[0], 200) or "body"
    return clean(head, 200) or "body"


def flux_event_key(event: FluxEvent) -> tuple[str, ...]:
    """What makes a Flux event the same event for the replay check: the involved object (kind, namespace, name),
    the revision, the reason and the timestamp (notification-controller gives a new timestamp to each new event)."""
    o = event.involvedObject
    return (o.kind, o.namespace or "", o.name, event.revision or "", event.reason, event.timestamp.isoformat())


def event_field(message: str) -> str:
    """The field a ``FluxEventError`` message is about (``not a Flux event (invalid: a.b, c)`` -> ``a.b``)."""
    m = re.search(r"invalid: ([^,)]+)", message)
    return clean(m.group(1), 200) if m else "body"


# ---------------------------------------------------------------- the app

SECURITY_SCHEMES = {
    "fixloopToken": {
        "type": "apiKey",
        "in": "header",
        "name": TOKEN_HEADER,
        "description": "FIXLOOP_GATEWAY_TOKEN (or `Authorization: Bearer <token>`).",
    },
    "gitlabToken": {
        "type": "apiKey",
        "in": "header",
        "name": GITLAB_TOKEN_HEADER,
        "description": "The GitLab webhook's secret token (FIXLOOP_GITLAB_WEBHOOK_TOKEN).",
    },
    "fluxSignature": {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": "`<sha224|sha256|sha384|sha512>=<hex HMAC of the body>` keyed with FIXLOOP_FLUX_HMAC_KEY "
        "(Flux `generic-hmac` Provider).",
    },
}

_ERROR = {
    "content": {"application/json": {"example": {"error": "field alerts.0.labels: ...", "field": "alerts[0].labels"}}}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON, or not this endpoint's format.", **_ERROR},
    401: {"description": "Missing or wrong secret.", **_ERROR},
    413: {"description": "Body over the size limit, or too many JSON values or finding-list elements.", **_ERROR},
    415: {"description": "Not application/json.", **_ERROR},
    422: {"description": "Valid JSON with invalid values.", **_ERROR},
    503: {"description": "Temporal unavailable: nothing was recorded; retry.", **_ERROR},
}


def _body(description: str, scheme: str) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` and ``security`` of an endpoint (the handlers read the raw body and headers
    themselves: no per-request validation or dependency resolution)."""
    return {
        "security": [{scheme: []}],
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
        },
    }


_SIGNALS_ANSWER = {
    "description": "Recorded in the intake.",
    "content": {"application/json": {"example": {"signals": 1, "intake": "intake/platform/gitops", "delivery": "..."}}},
}


def create_app(
    settings: GatewaySettings,
    connect: Connect,
    *,
    task_queue: str | None = None,
    intake: IntakeSettings | None = None,
    flux: FluxSettings | None = None,
    gitlab_webhook: WebhookSettings | None = None,
) -> FastAPI:
    """The gateway's ASGI app. ``connect()`` returns a Temporal client (with pydantic's data converter, e.g.
    ``fixloop.app.temporal.connect``); it is called on the first request that needs Temporal and again after each
    failure, so a Temporal that is down is a 503 per request, not a failure to start. ``task_queue`` (default
    ``TemporalSettings``'), ``intake`` (the windows of an intake this starts), ``flux`` (HMAC key and
    Kustomization) and ``gitlab_webhook`` (the webhook token) default to the environment; an invalid variable
    raises ``fixloop.core.config.ConfigError`` naming it."""
    gw = Gateway(
        settings,
        connect,
        task_queue=task_queue or load(TemporalSettings).task_queue,
        intake=intake or load(IntakeSettings),
        flux=flux or load(FluxSettings),
        gitlab_webhook=gitlab_webhook or load(WebhookSettings),
    )
    app = FastAPI(
        title="fixloop gateway",
        version=__version__,
        description="Webhooks and scanner reports in; signals and loop events into Temporal. A 2xx means "
        "Temporal has recorded the delivery; retry on 5xx (retries are deduplicated).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        return _json(
            422, {"error": clean(first.get("msg", "invalid request"), 300), "field": json_path(first.get("loc", ()))}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _json(exc.status_code, {"error": clean(exc.detail, 300), "field": None}, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("%s %s: internal error", request.method, request.url.path)
        return _json(500, {"error": "internal error (a bug in fixloop)", "field": None})

    @app.post(
        "/v1/signals/datadog",
        status_code=202,
        summary="A Datadog monitor notification (Webhooks integration).",
        responses={202: _SIGNALS_ANSWER, **_ERRORS},
        openapi_extra=_body(
            "The webhook's payload template: the default or extended one (integrations/datadog).", "fixloopToken"
        ),
    )
    async def datadog(request: Request) -> Response:
        return await gw.serve("signals/datadog", request, lambda: gw.signals(request, Source.DATADOG))

    @app.post(
        "/v1/signals/alertmanager",
        status_code=202,
        summary="A Prometheus Alertmanager webhook notification.",
        responses={202: _SIGNALS_ANSWER, **_ERRORS},
        openapi_extra=_body("Alertmanager's webhook payload (version 4).", "fixloopToken"),
    )
    async def alertmanager(request: Request) -> Response:
        return await gw.serve("signals/alertmanager", request, lambda: gw.signals(request, Source.ALERTMANAGER))

    @app.post(
        "/v1/reports",
        status_code=202,
        summary="A scanner report or alert payload of any supported format, detected as `fixloop ingest` does.",
        responses={202: _SIGNALS_ANSWER, **_ERRORS},
        openapi_extra=_body(
            "Trivy, GitLab security report, Grype, Snyk, OSV-Scanner or pip-audit JSON.", "fixloopToken"
        ),
    )
    async def report(request: Request) -> Response:
        return await gw.serve("reports", request, lambda: gw.signals(request, None))

    @app.post(
        "/v1/reports/{source}",
        status_code=202,
        summary="A scanner report: source is trivy, gitlab, grype, snyk, osv or pip-audit.",
        responses={202: _SIGNALS_ANSWER, 404: {"description": "Unknown source.", **_ERROR}, **_ERRORS},
        openapi_extra=_body("The scanner's JSON output (e.g. `trivy image --format json`).", "fixloopToken"),
    )
    async def report_of(request: Request, source: str) -> Response:
        known = {s.value: s for s in REPORT_SOURCES}
        endpoint = f"reports/{source}" if source in known else "reports/unknown"

        async def work() -> tuple[int, dict]:
            if source not in known:
                raise Rejected(404, "unknown_source", f"unknown report source; one of {', '.join(known)}", "source")
            return await gw.signals(request, known[source])

        return await gw.serve(endpoint, request, work)

    @app.post(
        "/v1/hooks/gitlab",
        summary="A GitLab merge request hook: approvals and state changes of fixloop's merge requests.",
        responses={200: {"description": "Delivered to the loop, or ignored (with the reason)."}, **_ERRORS},
        openapi_extra=_body("GitLab's Merge Request Hook body (X-Gitlab-Event: Merge Request Hook).", "gitlabToken"),
    )
    async def gitlab(request: Request) -> Response:
        return await gw.serve("hooks/gitlab", request, lambda: gw.gitlab_hook(request))

    @app.post(
        "/v1/hooks/flux",
        summary="A Flux notification-controller event (generic-hmac Provider): deploy outcomes.",
        responses={200: {"description": "Signalled to the loops awaiting a deploy, or ignored."}, **_ERRORS},
        openapi_extra=_body(
            "The event: {involvedObject, severity, timestamp, message, reason, metadata, ...}.", "fluxSignature"
        ),
    )
    async def flux_hook(request: Request) -> Response:
        return await gw.serve("hooks/flux", request, lambda: gw.flux_hook(request))

    @app.get("/healthz", summary="Liveness: the gateway answers; whether it has a Temporal connection.")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "temporal": "connected" if gw.client is not None else "not connected",
            "scope": settings.scope,
            "intake": intake_id(settings.scope),
        }

    @app.get("/metrics", summary="Prometheus metrics.", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
