"""One HTTP server for every stand-in, each a FastAPI sub-application under its own prefix.

=========  ==========  ==========================================================================================
prefix     module      what a client configures
=========  ==========  ==========================================================================================
/gitlab    gitlab      ``gitlab.Gitlab(url=f"{base}/gitlab", private_token=...)``; clone ``{base}/gitlab/<ns>/<p>.git``
/jira      jira        ``jira.JIRA(server=f"{base}/jira", basic_auth=(email, api_token))``
/datadog   datadog     ``Configuration(host=f"{base}/datadog")`` with ``apiKeyAuth``/``appKeyAuth``
/kube      flux        the Kubernetes API server (``/kube/apis/kustomize.toolkit.fluxcd.io/v1/...``), bearer token
/registry  registry    an OCI distribution registry (``/registry/v2/<name>/tags/list``)
/world     prometheus  Prometheus scrape targets: ``/world/<env>/<service>/metrics`` (``sandbox.prometheus``)
=========  ==========  ==========================================================================================

Each sub-application is built by ``fixloop.sandbox.routes.stand_in`` from one FastAPI router per resource, with
exception handlers that give errors the real API's shape (GitLab
``{"message": ...}``, Jira ``{"errorMessages": [...], "errors": {...}}``, Datadog ``{"errors": [...]}``, a Kubernetes
``Status`` object, OCI ``{"errors": [{"code", "message", "detail"}]}``), never a stack trace.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import FastAPI

from fixloop.sandbox import require_extra
from fixloop.sandbox.bus import Bus
from fixloop.sandbox.config import Credentials, SandboxConfig, utcnow
from fixloop.sandbox.repos import RepoStore
from fixloop.sandbox.store import JsonStore
from fixloop.sandbox.world import World

log = logging.getLogger(__name__)

# (prefix, module): each module has ``build(sb: Sandbox) -> FastAPI``.
SERVICES: tuple[tuple[str, str], ...] = (
    ("/gitlab", "fixloop.sandbox.gitlab"),
    ("/jira", "fixloop.sandbox.jira"),
    ("/datadog", "fixloop.sandbox.datadog"),
    ("/kube", "fixloop.sandbox.flux"),
    ("/registry", "fixloop.sandbox.registry"),
    ("/world", "fixloop.sandbox.prometheus"),
)


@dataclass
class Sandbox:
    """What every stand-in shares: configuration, credentials, stores, the event bus, the git repositories and the
    world model. ``clock`` returns an aware UTC datetime; tests replace it to control time."""

    config: SandboxConfig
    credentials: Credentials
    bus: Bus = field(default_factory=Bus)
    clock: Callable[[], datetime] = utcnow
    _stores: dict[str, JsonStore] = field(default_factory=dict)
    _repos: RepoStore | None = None
    _world: World | None = None

    @classmethod
    def open(cls, config: SandboxConfig) -> Sandbox:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        return cls(config=config, credentials=Credentials.load_or_create(config.state_dir / "credentials.json"))

    def store(self, name: str) -> JsonStore:
        """The JSON state of one service (``<state_dir>/<name>.json``), created on first use."""
        if name not in self._stores:
            self._stores[name] = JsonStore(self.config.state_dir / f"{name}.json")
        return self._stores[name]

    @property
    def repos(self) -> RepoStore:
        """The git repositories (``<state_dir>/git``), opened on first use."""
        if self._repos is None:
            self._repos = RepoStore(self.config.state_dir / "git")
        return self._repos

    @property
    def world(self) -> World:
        """The Datadog world model, created on first use."""
        if self._world is None:
            self._world = World(self)
        return self._world

    def url(self, prefix: str, path: str = "") -> str:
        """An absolute URL of this server, e.g. ``url("/gitlab", "/api/v4")``."""
        return f"{self.config.public_url.rstrip('/')}{prefix}{path}"


def create_app(sb: Sandbox, services: tuple[tuple[str, str], ...] = SERVICES) -> FastAPI:
    """The sandbox's ASGI app: every stand-in in ``services`` mounted under its prefix, plus ``GET /healthz``.
    Raises ``fixloop.sandbox.ExtraMissing`` when the ``sandbox`` extra is not installed."""
    require_extra()
    app = FastAPI(title="fixloop sandbox", docs_url=None, redoc_url=None)
    for prefix, module in services:
        app.mount(prefix, importlib.import_module(module).build(sb))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
