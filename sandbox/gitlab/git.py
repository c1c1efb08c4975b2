"""``git clone``/``fetch`` over smart HTTP (read-only: upload-pack only; every write goes through the API) of the
bare repositories of ``sb.repos``, at ``/gitlab/<namespace>/<name>.git``, with dulwich's WSGI server, and the
raw-path routing GitLab's API needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from a2wsgi import WSGIMiddleware
from dulwich.server import FileSystemBackend
from dulwich.web import GunzipFilter, HTTPGitApplication, LimitedInputFilter
from starlette.routing import Route


class RawPath:
    """ASGI middleware: route on the raw (still percent-encoded) path, so ``platform%2Fgitops`` and encoded file
    paths stay one path segment, as GitLab's router treats them. Handlers ``unquote`` their path parameters."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = dict(scope, path=scope["raw_path"].decode("latin-1"))
        await self.app(scope, receive, send)


class ReposBackend(FileSystemBackend):
    """dulwich's file system backend with URL paths taken relative to the root (``/platform/gitops.git``)."""

    def open_repository(self, path: str):  # noqa: ANN201 - dulwich's BackendRepo
        text = path.decode() if isinstance(path, bytes) else str(path)
        return super().open_repository(text.lstrip("/"))


def git_app(root: str) -> WSGIMiddleware:
    """Smart-HTTP ``git clone``/``fetch`` of the bare repositories under ``root``; upload-pack only."""
    app = HTTPGitApplication(ReposBackend(root))
    app.handlers.pop(b"git-receive-pack", None)
    return WSGIMiddleware(LimitedInputFilter(GunzipFilter(app)))


def git_route(root: str) -> Route:
    """The smart-HTTP route; it goes after every API route (its path pattern would match them)."""
    return Route("/{repo:path}.git/{rest:path}", endpoint=git_app(root), methods=["GET", "POST"])
