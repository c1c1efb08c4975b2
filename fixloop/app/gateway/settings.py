"""The gateway's settings (``FIXLOOP_GATEWAY_*``), read by ``fixloop gateway``; ``docs/configuration.md`` lists them."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.app.ingest import MAX_DEPTH, MAX_ELEMENTS, MAX_VALUES
from fixloop.app.temporal import BATCH_MAX_BYTES, PAYLOAD_LIMIT_BYTES
from fixloop.core.models import SIGNAL_MAX_BYTES
from fixloop.integrations.gitlab.api import GitLabSettings

SCOPE_PATTERN = r"^[A-Za-z0-9._/-]+$"  # IntakeInput.scope's


class GatewaySettings(BaseSettings):
    """The gateway's settings. Environment: ``FIXLOOP_GATEWAY_TOKEN`` (the shared secret of Datadog, Alertmanager
    and scanners; unset: those endpoints answer 401), ``FIXLOOP_GATEWAY_SCOPE`` (the intake signals go to, default
    ``FIXLOOP_GITLAB_PROJECT``, else ``platform/gitops``: the GitOps project's path), ``FIXLOOP_GATEWAY_MAX_BODY_BYTES``
    (default 32 MiB), ``FIXLOOP_GATEWAY_BATCH_WINDOW_MS`` (micro-batching window, default 5),
    ``FIXLOOP_GATEWAY_BATCH_MAX_BYTES`` (bytes of signals per signal-with-start, default 1 MiB, at most 1.5 MiB),
    ``FIXLOOP_GATEWAY_TEMPORAL_TIMEOUT`` (seconds a request waits for Temporal before its 503, default 10), the
    limits of "Bounded cost" in ``fixloop.app.gateway``'s docstring (``..._CONNECT_TIMEOUT``, ``..._MAX_JSON_DEPTH``,
    ``..._MAX_JSON_VALUES``, ``..._MAX_ELEMENTS``, ``..._HEADER_TIMEOUT``, ``..._BODY_TIMEOUT``,
    ``..._KEEP_ALIVE_TIMEOUT``, ``..._MAX_HEADER_BYTES``), the Flux replay bounds (``..._FLUX_MAX_AGE``,
    ``..._FLUX_MAX_FUTURE``), and ``FIXLOOP_GITLAB_BOT_USERNAME`` (fixloop's own GitLab user, whose approvals
    never count). The GitLab webhook token and the Flux HMAC key are those of ``WebhookSettings`` and
    ``FluxSettings``."""

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
