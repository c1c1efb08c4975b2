"""The gateway: webhooks and scanner reports in over HTTP, signals and loop events out to Temporal.

The package's rooms: ``app`` (``create_app``: the routes, exception handlers and OpenAPI description, and the
``/v1/signals`` and ``/v1/reports`` endpoints), ``settings`` (``GatewaySettings``), ``requests`` (content type, body
reading, the one JSON parse, the error answer), ``auth`` (the shared token, GitLab's secret token, Flux's HMAC),
``batching`` (the micro-batching collector and its byte-sized batches), ``hooks`` (the GitLab and Flux hooks, with
the Flux replay check), ``metrics`` (the Prometheus metrics) and ``server`` (uvicorn with connection deadlines).

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
                                      (``integrations/alertmanager/webhook.py``)   ``Authorization: Bearer <token>``
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
  * Connections (``fixloop.app.gateway.server``, uvicorn's httptools protocol with deadlines): the request line and
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
(``fixloop.activities.deploy.deploy_event``) is signalled to every running loop of the scope in stage ``await_deploy``
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

from fixloop.app.gateway.app import REPORT_SOURCES, create_app
from fixloop.app.gateway.auth import GITLAB_TOKEN_HEADER, SIGNATURE_HEADER, TOKEN_HEADER
from fixloop.app.gateway.requests import json_path
from fixloop.app.gateway.settings import GatewaySettings

__all__ = [
    "GITLAB_TOKEN_HEADER",
    "REPORT_SOURCES",
    "SIGNATURE_HEADER",
    "TOKEN_HEADER",
    "GatewaySettings",
    "create_app",
    "json_path",
]
