"""A running sandbox (Jira, GitLab, registry) with fixloop's activity classes configured from its ``FIXLOOP_*``
variables, as ``fixloop sandbox up`` prints them: shared by the activity tests against the stand-ins."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import gitlab
from pydantic_settings import BaseSettings

from fixloop.activities.merge_request import MergeRequestActivities
from fixloop.activities.plan import PlanActivities
from fixloop.activities.work_item import WorkItemActivities
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.jira import JiraClient, JiraSettings
from fixloop.integrations.registry import RegistrySettings
from fixloop.sandbox.app import SERVICES, Sandbox, create_app
from fixloop.sandbox.config import SandboxConfig
from fixloop.sandbox.server import bind, endpoints, serve_in_thread

S = TypeVar("S", bound=BaseSettings)
PREFIXES = ("/jira", "/gitlab", "/registry")


def configured(cls: type[S], env: dict[str, str], **override: str) -> S:
    """``cls`` from the ``FIXLOOP_*`` variables in ``env`` (not the process environment or a ``.env`` file)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    values: dict[str, Any] = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    return cls(_env_file=None, **(values | override))  # type: ignore[call-arg]


class Clock:
    """A sandbox clock the test moves (``Sandbox.clock``): ``now`` is what it answers."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    sb: Sandbox
    url: str
    env: dict[str, str]
    jira: WorkItemActivities
    change: PlanActivities
    gitlab: MergeRequestActivities
    bot: GitLabClient  # fixloop's own GitLab client, to look at what the activities did
    jira_client: JiraClient

    def project(self, token: str | None = None) -> Any:
        """python-gitlab's project object, as the bot (or with ``token``, e.g. the reviewer's)."""
        gl = gitlab.Gitlab(self.env["FIXLOOP_GITLAB_URL"], private_token=token or self.env["FIXLOOP_GITLAB_TOKEN"])
        return gl.projects.get(self.env["FIXLOOP_GITLAB_PROJECT"])

    @property
    def reviewer_token(self) -> str:
        return self.sb.credentials.gitlab_reviewer_token.get_secret_value()


@contextmanager
def running_world(state_dir: Path) -> Iterator[World]:
    sock = bind()
    port = sock.getsockname()[1]
    sb = Sandbox.open(SandboxConfig(state_dir=state_dir, public_url=f"http://127.0.0.1:{port}"))
    services = tuple(s for s in SERVICES if s[0] in PREFIXES)
    with serve_in_thread(create_app(sb, services), sock) as url:
        env = endpoints(sb)
        jira_settings = configured(JiraSettings, env)
        gitlab_settings = configured(GitLabSettings, env)
        change = PlanActivities(
            gitlab_settings, configured(RegistrySettings, env), jira_url=str(jira_settings.url).rstrip("/")
        )
        try:
            yield World(
                sb=sb,
                url=url,
                env=env,
                jira=WorkItemActivities(jira_settings),
                change=change,
                gitlab=MergeRequestActivities(gitlab_settings),
                bot=GitLabClient(gitlab_settings),
                jira_client=JiraClient(jira_settings),
            )
        finally:
            change.close()
