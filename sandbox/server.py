"""Serving the sandbox with uvicorn: in the foreground (``fixloop sandbox up``) or in a thread (tests)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; ``port=0`` picks a free one (read it back with ``sock.getsockname()[1]``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without, each answer waits ~40 ms for the client's delayed ACK (Nagle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


@contextmanager
def serve_in_thread(app: FastAPI, sock: socket.socket) -> Iterator[str]:
    """Run ``app`` on ``sock`` in a daemon thread until the block ends; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    while not server.started and thread.is_alive():
        started.wait(0.01)
    if not server.started:
        raise RuntimeError("sandbox server failed to start")
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def endpoints(sb) -> dict[str, str]:  # sb: fixloop.sandbox.app.Sandbox
    """The environment that points fixloop at this sandbox: ``{FIXLOOP_* variable: value}``, credentials included
    (sandbox-only secrets, printed on purpose by ``fixloop sandbox up``)."""
    c = sb.credentials
    return {
        "FIXLOOP_GITLAB_URL": sb.url("/gitlab"),
        "FIXLOOP_GITLAB_TOKEN": c.gitlab_bot_token.get_secret_value(),
        "FIXLOOP_GITLAB_PROJECT": "platform/gitops",
        "FIXLOOP_GITLAB_BOT_USERNAME": c.gitlab_bot_username,
        "FIXLOOP_GITLAB_WEBHOOK_TOKEN": c.gitlab_webhook_token.get_secret_value(),
        "FIXLOOP_JIRA_URL": sb.url("/jira"),
        "FIXLOOP_JIRA_EMAIL": c.jira_email,
        "FIXLOOP_JIRA_API_TOKEN": c.jira_api_token.get_secret_value(),
        "FIXLOOP_DATADOG_HOST": sb.url("/datadog"),
        "FIXLOOP_DATADOG_API_KEY": c.datadog_api_key.get_secret_value(),
        "FIXLOOP_DATADOG_APP_KEY": c.datadog_app_key.get_secret_value(),
        "FIXLOOP_DATADOG_SERVICE_DEPENDENCIES_ENV": "production",  # the env tag of the seeded production services
        "FIXLOOP_KUBE_API_URL": sb.url("/kube"),
        "FIXLOOP_KUBE_TOKEN": c.kube_token.get_secret_value(),
        "FIXLOOP_FLUX_HMAC_KEY": c.flux_hmac_key.get_secret_value(),
        "FIXLOOP_REGISTRY_USERNAME": c.registry_username,
        "FIXLOOP_REGISTRY_PASSWORD": c.registry_password.get_secret_value(),
        "FIXLOOP_REGISTRY_URL": sb.url("/registry"),  # last: ``fixloop sandbox up --env`` readers stop at it
    }
