"""fixloop's configuration: environment variables ``FIXLOOP_*`` (and a ``.env`` file), read with pydantic-settings.

Only the settings a command needs are read, when it runs; secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIXLOOP_", env_file=".env", extra="ignore")

    ingest_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        gt=0,
        description="Largest report or payload fixloop reads, in bytes; a larger one is refused with a clear error.",
    )
