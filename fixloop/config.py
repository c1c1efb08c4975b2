"""fixloop's configuration: environment variables ``FIXLOOP_*`` (and a ``.env`` file), read with pydantic-settings.

Only the settings a command needs are read, when it runs; secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import Field, HttpUrl, SecretStr, ValidationError
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
    api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
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
    or Temporal Cloud), ``FIXLOOP_TEMPORAL_API_KEY`` (Temporal Cloud API key; implies TLS).
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_TEMPORAL_", env_file=".env", extra="ignore")

    address: str = Field(default="localhost:7233", pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    namespace: str = Field(default="default", min_length=1)
    task_queue: str = Field(default="fixloop", min_length=1)
    tls: bool = False
    api_key: SecretStr | None = None


class IntakeSettings(BaseSettings):
    """Windows of an intake, used when ``fixloop submit`` (or the gateway) starts one; a running intake keeps
    the options it was started with.

    Environment: ``FIXLOOP_INTAKE_QUIET_PERIOD`` (seconds without a new signal that close a window, default 120),
    ``FIXLOOP_INTAKE_WINDOW_MAX_AGE`` (seconds, default 900), ``FIXLOOP_INTAKE_WINDOW_MAX_SIGNALS`` (default 500),
    ``FIXLOOP_INTAKE_ENGINE`` (``rules`` or ``llm``, default ``rules``).
    """

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_INTAKE_", env_file=".env", extra="ignore")

    quiet_period: float = Field(default=120.0, gt=0)
    window_max_age: float = Field(default=900.0, gt=0)
    window_max_signals: int = Field(default=500, ge=1, le=1_000)
    engine: str = Field(default="rules", pattern="^(rules|llm)$")
