"""fixloop's configuration: environment variables ``FIXLOOP_*`` (and a ``.env`` file), read with pydantic-settings.

Only the settings a command needs are read, when it runs; secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import Field, HttpUrl, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIXLOOP_", env_file=".env", extra="ignore")

    ingest_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        gt=0,
        description="Largest report or payload fixloop reads, in bytes; a larger one is refused with a clear error.",
    )


S = TypeVar("S", bound=BaseSettings)


class ConfigError(ValueError):
    """A setting a command needs is missing or invalid; the message names the environment variable."""


def load(cls: type[S]) -> S:
    """``cls()`` read from the environment. Raises ``ConfigError`` naming the environment variable of the first
    invalid setting (its alias, e.g. ``OPENAI_API_KEY``, or prefix + field name), never echoing its value."""
    try:
        return cls()
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first.get("loc") else "*"
        env = name if name.isupper() else f"{cls.model_config.get('env_prefix', '')}{name.upper()}"
        raise ConfigError(f"{env}: {first.get('msg', 'invalid')}") from None


class LlmSettings(BaseSettings):
    """The ``llm`` triage engine's endpoint: any OpenAI-compatible Chat Completions API with structured outputs
    (OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM, ...).

    Environment: ``FIXLOOP_LLM_BASE_URL`` (e.g. ``https://api.openai.com/v1``), ``FIXLOOP_LLM_MODEL``,
    ``OPENAI_API_KEY`` (the openai library's own variable, so no prefix; an endpoint without authentication still
    needs a non-empty value, as the library requires one), ``FIXLOOP_LLM_TIMEOUT`` (seconds per HTTP request),
    ``FIXLOOP_LLM_MAX_RETRIES`` (retries of a 408/409/429/5xx, timeout or connection error, on top of the first
    attempt), ``FIXLOOP_LLM_MAX_ENTRIES`` (the largest digest sent; a larger storm is triaged by ``rules``).
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_LLM_", env_file=".env", extra="ignore", populate_by_name=True)

    base_url: HttpUrl | None = Field(default=None, description="The API root, up to and including /v1.")
    model: str | None = Field(default=None, min_length=1, description="The model name the endpoint serves.")
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias="OPENAI_API_KEY",
        description="The endpoint's API key (the openai library's own variable; any non-empty value for an "
        "endpoint without authentication).",
    )
    timeout: float = Field(default=60.0, gt=0, le=600, description="Seconds per HTTP request.")
    max_retries: int = Field(default=2, ge=0, le=10, description="Retries after the first attempt.")
    max_entries: int = Field(default=400, gt=0, description="Most digest entries sent in one request.")

    @classmethod
    def load(cls) -> LlmSettings:
        """The settings from the environment, checked as ``require`` does.

        Raises ``ConfigError`` naming the variable when one is missing or invalid (never echoing a secret)."""
        settings = load(cls)
        settings.require()
        return settings

    def require(self) -> None:
        """Raise ``ConfigError`` unless the endpoint, the model and the API key are all set."""
        missing = [
            env
            for env, value in (
                ("FIXLOOP_LLM_BASE_URL", self.base_url),
                ("FIXLOOP_LLM_MODEL", self.model),
                ("OPENAI_API_KEY", self.api_key and self.api_key.get_secret_value()),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"the llm engine needs {', '.join(missing)} (see README, 'fixloop triage')")


class TemporalSettings(BaseSettings):
    """Where the worker and the clients find Temporal.

    Environment: ``FIXLOOP_TEMPORAL_ADDRESS`` (host:port of the frontend, default ``localhost:7233``, the dev server
    ``fixloop temporal`` starts), ``FIXLOOP_TEMPORAL_NAMESPACE`` (default ``default``),
    ``FIXLOOP_TEMPORAL_TASK_QUEUE`` (default ``fixloop``), ``FIXLOOP_TEMPORAL_TLS`` (true for a cluster behind TLS
    or Temporal Cloud), ``FIXLOOP_TEMPORAL_API_KEY`` (Temporal Cloud API key; implies TLS), and for mutual TLS
    ``FIXLOOP_TEMPORAL_TLS_CERT`` and ``FIXLOOP_TEMPORAL_TLS_KEY`` (PEM files of the client certificate and its
    private key, set together or not at all) and ``FIXLOOP_TEMPORAL_TLS_CA`` (PEM file of the CA that signed the
    server's certificate, default the system roots); any of the three implies TLS. The files are read when a
    client connects (``fixloop.app.temporal.tls_config``).
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_TEMPORAL_", env_file=".env", extra="ignore")

    address: str = Field(
        default="localhost:7233",
        pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$",
        description="host:port of the Temporal frontend (the dev server of `fixloop temporal`, a cluster, or "
        "`<namespace>.<account>.tmprl.cloud:7233` / a regional endpoint for Temporal Cloud).",
    )
    namespace: str = Field(default="default", min_length=1, description="The Temporal namespace.")
    task_queue: str = Field(
        default="fixloop",
        min_length=1,
        description="The task queue workers poll and clients start workflows on; scale out by running more "
        "workers on it.",
    )
    tls: bool = Field(default=False, description="Connect over TLS (implied by an API key or a TLS file).")
    api_key: SecretStr | None = Field(default=None, description="Temporal Cloud API key (sent as a bearer token).")
    tls_cert: Path | None = Field(
        default=None, description="PEM file of the client certificate for mutual TLS (with FIXLOOP_TEMPORAL_TLS_KEY)."
    )
    tls_key: Path | None = Field(
        default=None,
        validate_default=True,
        description="PEM file of the client certificate's private key (with FIXLOOP_TEMPORAL_TLS_CERT).",
    )
    tls_ca: Path | None = Field(
        default=None, description="PEM file of the CA of the server's certificate (default: the system roots)."
    )

    @field_validator("tls_key")
    @classmethod
    def _cert_and_key(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if (key is None) != (info.data.get("tls_cert") is None) and "tls_cert" in info.data:
            raise ValueError("FIXLOOP_TEMPORAL_TLS_CERT and FIXLOOP_TEMPORAL_TLS_KEY are set together or not at all")
        return key

    @property
    def uses_tls(self) -> bool:
        """Whether clients connect over TLS: ``tls``, an API key or any TLS file."""
        return bool(self.tls or self.api_key is not None or self.tls_cert or self.tls_key or self.tls_ca)


class IntakeSettings(BaseSettings):
    """Windows of an intake, used when ``fixloop submit`` (or the gateway) starts one; a running intake keeps
    the options it was started with.

    Environment: ``FIXLOOP_INTAKE_QUIET_PERIOD`` (seconds without a new signal that close a window, default 120),
    ``FIXLOOP_INTAKE_WINDOW_MAX_AGE`` (seconds, default 900), ``FIXLOOP_INTAKE_WINDOW_MAX_SIGNALS`` (default 500),
    ``FIXLOOP_INTAKE_TRIAGE_MAX_BYTES`` (bytes of signals per triage activity, default 512 KiB, 32-768 KiB),
    ``FIXLOOP_INTAKE_ENGINE`` (``rules`` or ``llm``, default ``rules``), ``FIXLOOP_INTAKE_INCIDENT_WINDOW`` (seconds
    between alerts on connected entities of the repository's topology that make them one incident, default 900),
    ``FIXLOOP_INTAKE_ATTACH_WINDOW`` (seconds after a fixloop deploy during which an alert on that service is the
    deploy's regression, default and at most 3600: the triage engines' own bound).
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_INTAKE_", env_file=".env", extra="ignore")

    quiet_period: float = Field(default=120.0, gt=0, description="Seconds without a new signal that close a window.")
    window_max_age: float = Field(default=900.0, gt=0, description="Seconds after which a window closes anyway.")
    window_max_signals: int = Field(default=500, ge=1, le=1_000, description="Signals that close a window.")
    triage_max_bytes: int = Field(
        default=512 * 1024,
        ge=32 * 1024,
        le=768 * 1024,
        description="Bytes of signal JSON per triage activity: a closed window is triaged in chunks of this size "
        "(Temporal refuses a payload over 2 MiB).",
    )
    engine: str = Field(
        default="rules", pattern="^(rules|llm)$", description="Triage engine of a closed window: rules or llm."
    )
    incident_window: float = Field(
        default=900.0,
        gt=0,
        le=86_400,
        description="Seconds between two alerts on connected entities of the topology (fixloop.yaml's topology: "
        "section) that make them one incident; without a topology alerts are grouped per service and monitor.",
    )
    attach_window: float = Field(
        default=3600.0,
        gt=0,
        le=3600,
        description="Seconds after a fixloop deploy during which an alert on the deployed service is that deploy's "
        "regression (attached to its loop) rather than a new investigation or incident.",
    )


class LoopSettings(BaseSettings):
    """Timings of the remediation loops an intake starts (``fixloop.workflows.contracts.loop.LoopOptions``), used when
    ``fixloop submit`` or the gateway starts an intake; running loops keep the options they were started with.

    Environment: ``FIXLOOP_LOOP_POLL_INTERVAL`` (seconds between polls of a merge request or Kustomization when no
    webhook or Flux event came, default 600), ``FIXLOOP_LOOP_VERIFY_DELAY`` (seconds waited after the verification
    window for the metrics to arrive, default 120), ``FIXLOOP_LOOP_APPROVAL_ESCALATE_AFTER`` (seconds an MR may
    wait for its review before a reminder, default 172800), ``FIXLOOP_LOOP_DEPLOY_ESCALATE_AFTER`` (seconds, default
    3600), ``FIXLOOP_LOOP_DECIDE_ESCALATE_AFTER`` (seconds, default 86400), ``FIXLOOP_LOOP_INCIDENT_ESCALATE_AFTER``
    (seconds an incident's alerts may keep firing before each escalation, default 14400),
    ``FIXLOOP_LOOP_INCIDENT_COOLDOWN`` (seconds an incident's services stay its loop's after its fix, default 1800).
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_LOOP_", env_file=".env", extra="ignore")

    poll_interval: float = Field(default=600.0, ge=1, description="Seconds between polls when no event came.")
    verify_delay: float = Field(
        default=120.0, ge=0, description="Seconds after the verification window for the metrics to arrive."
    )
    approval_escalate_after: float = Field(
        default=172_800.0, gt=0, description="Seconds an MR waits for its review before each reminder."
    )
    deploy_escalate_after: float = Field(
        default=3_600.0, gt=0, description="Seconds a merged change waits for Flux before each escalation."
    )
    decide_escalate_after: float = Field(
        default=86_400.0, gt=0, description="Seconds an inconclusive verdict waits for a decision before each reminder."
    )
    incident_escalate_after: float = Field(
        default=14_400.0, gt=0, description="Seconds an incident's alerts may keep firing before each escalation."
    )
    incident_cooldown: float = Field(
        default=1_800.0, ge=0, description="Seconds an incident's services stay its loop's after its fix (flap guard)."
    )


class LogSettings(BaseSettings):
    """How ``fixloop worker``, ``fixloop gateway`` and the other commands log, on stderr
    (``fixloop.app.logs``).

    Environment: ``FIXLOOP_LOG_FORMAT`` (``text``, default, or ``json``: JSON Lines with ``ts``, ``level``,
    ``logger``, ``message`` and, where known, ``workflow_id``, ``run_id``, ``activity``, ``work_item``,
    ``jira_key``), ``FIXLOOP_LOG_LEVEL`` (``DEBUG``, ``INFO``, default, ``WARNING``, ``ERROR``, ``CRITICAL``).
    Either case is accepted.
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_LOG_", env_file=".env", extra="ignore")

    format: str = Field(
        default="text",
        pattern=r"^(?i:text|json)$",
        description="text (one line per record: command, level, logger, message) or json (JSON Lines with the "
        "workflow id, run id, activity, work item and Jira key where known).",
    )
    level: str = Field(
        default="INFO",
        pattern=r"^(?i:debug|info|warning|error|critical)$",
        description="The least severe level fixloop and the Temporal SDK log; other libraries (the HTTP clients) log "
        "WARNING and above only.",
    )

    @field_validator("format")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class WorkerSettings(BaseSettings):
    """The ``fixloop worker`` process.

    Environment: ``FIXLOOP_WORKER_METRICS_ADDRESS``, ``<ip>:<port>`` (e.g. ``0.0.0.0:9464``, ``[::]:9464``) on which
    the worker serves the Temporal SDK's metrics (task slots, polls, schedule-to-start and execution latencies, in
    the Prometheus text format) at ``/metrics``; also what Kubernetes probes. Unset (default): no HTTP port.
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_WORKER_", env_file=".env", extra="ignore")

    metrics_address: str | None = Field(default=None, pattern=r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}$")
