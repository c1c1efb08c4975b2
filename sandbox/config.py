"""The sandbox's configuration and credentials.

Credentials are generated once per state directory (``credentials.json``, mode 0600) so they survive a restart and
are printed by ``fixloop sandbox up``; they are sandbox-only secrets, never production ones.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class Credentials(BaseModel):
    """Who may call the sandbox. ``SecretStr`` so a printed model never shows a token."""

    gitlab_bot_username: str = "fixloop-bot"
    gitlab_bot_token: SecretStr  # PRIVATE-TOKEN of fixloop's own (bot) user
    gitlab_reviewer_username: str = "reviewer"
    gitlab_reviewer_token: SecretStr  # a human reviewer who approves and merges
    gitlab_developer_username: str = "dana"
    # a developer who changes the repository by hand (the demo's incident); generated when an older file lacks it
    gitlab_developer_token: SecretStr = Field(default_factory=lambda: SecretStr("glpat-" + secrets.token_urlsafe(18)))
    gitlab_webhook_token: SecretStr  # sent as X-Gitlab-Token on webhook deliveries
    jira_email: str = "fixloop-bot@example.com"
    jira_api_token: SecretStr  # basic auth password (Jira Cloud API token)
    datadog_api_key: SecretStr  # DD-API-KEY
    datadog_app_key: SecretStr  # DD-APPLICATION-KEY
    kube_token: SecretStr  # Authorization: Bearer for the Kubernetes API (Flux objects)
    flux_hmac_key: SecretStr  # the generic-hmac Provider's secret (X-Signature: sha256=<hex>)
    registry_username: str = "fixloop-puller"  # basic credentials the registry's token service takes
    registry_password: SecretStr = Field(default_factory=lambda: SecretStr("dckr_pat_" + secrets.token_urlsafe(18)))
    # an OAuth2 refresh token (docker's identitytoken) the token service takes with grant_type=refresh_token
    registry_identity_token: SecretStr = Field(default_factory=lambda: SecretStr("rt-" + secrets.token_urlsafe(18)))

    @classmethod
    def generate(cls) -> Credentials:
        def tok(prefix: str) -> SecretStr:
            return SecretStr(prefix + secrets.token_urlsafe(18))

        return cls(
            gitlab_bot_token=tok("glpat-"),
            gitlab_reviewer_token=tok("glpat-"),
            gitlab_webhook_token=tok("whsec-"),
            jira_api_token=tok("ATATT"),
            datadog_api_key=SecretStr(secrets.token_hex(16)),
            datadog_app_key=SecretStr(secrets.token_hex(20)),
            kube_token=tok("kube-"),
            flux_hmac_key=tok("hmac-"),
        )

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """Read ``path`` or create it (mode 0600) with fresh random credentials; a file without a later-added
        credential is written again with it generated."""
        if path.is_file():
            text = path.read_text()
            creds = cls.model_validate_json(text)
            if set(cls.model_fields) <= set(json.loads(text)):
                return creds
        else:
            creds = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = creds.model_dump(mode="json")
        for key, value in creds:
            if isinstance(value, SecretStr):
                raw[key] = value.get_secret_value()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(raw, indent=2))
        return creds


def utcnow() -> datetime:
    return datetime.now(UTC)


class SandboxConfig(BaseModel):
    """Where the sandbox keeps its state and where it sends webhooks.

    ``public_url`` is the server's base URL (``http://127.0.0.1:<port>``); the stand-ins build their ``web_url``,
    ``self`` and clone URLs from it. Webhook URLs left ``None`` mean no delivery (the events are still recorded).
    """

    state_dir: Path
    public_url: str = "http://127.0.0.1:8900"
    gitlab_webhook_url: str | None = None  # GitLab project hook: merge request events, X-Gitlab-Token
    flux_webhook_url: str | None = None  # Flux notification-controller Provider address
    flux_provider: Literal["generic", "generic-hmac"] = "generic-hmac"
    flux_interval: float = Field(default=5.0, gt=0, description="Seconds between reconciliations of the branch.")
    ci_duration: float = Field(
        default=10.0, ge=0, le=3600, description="Seconds a CI pipeline runs before its build finishes (sandbox clock)."
    )
    rollout_ready_s: float = Field(
        default=2.0,
        ge=0,
        le=600,
        description="Seconds after a rollout's start until its new pods are Ready (sandbox clock).",
    )
    registry_anonymous: bool = True  # the registry's token service gives anonymous pull tokens (as Docker Hub does)
    world_seed: int = 7  # the Datadog world model's noise seed
    monitor_window: float = Field(
        default=300.0, ge=10, le=3600, description="Seconds a monitor averages over (its queries say last_5m)."
    )
