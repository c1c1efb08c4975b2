"""GitLab's wire conventions, shared by the service and its routers: constants, the error answer, timestamps,
Grape's parameter parsing (query string, then a JSON or form body) and its pagination headers (docs.gitlab.com/api/
rest/#pagination)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import JSONResponse

PREFIX = "/gitlab"
API = "/api/v4"
GITOPS = "platform/gitops"
APPROVALS_REQUIRED = 1
VERSION = "17.11.0-ee"
DRAFT_RE = re.compile(r"^\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|draft\s|\[wip\]|wip:|wip\s)", re.I)
MAX_DELIVERIES = 200
# groups and their members (user id -> access level; GitLab's 10 guest .. 50 owner)
GROUPS: dict[str, dict[str, Any]] = {
    "platform": {"id": 101, "members": {1: 50, 2: 30, 3: 40, 4: 30}},
    "platform/reviewers": {"id": 150, "members": {3: 40}},
}


class ApiError(Exception):
    """An error answer in GitLab's shape: ``{"message": ...}`` (or ``{"error": ...}`` for parameter errors)."""

    def __init__(self, status: int, message: Any, key: str = "message") -> None:
        super().__init__(status)
        self.status, self.message, self.key = status, message, key


def ts(dt: datetime) -> str:
    """GitLab's REST timestamp: ``2019-07-11T22:34:43.500Z``."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def hook_ts(iso: str | None) -> str | None:
    """GitLab's webhook timestamp: ``2013-12-03 17:23:34 UTC``."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC") if iso else None


def commit_ts(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def as_list(value: Any) -> list[str]:
    """Labels and similar: a JSON list or GitLab's comma-separated string."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def require(params: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if params.get(n) in (None, "")]
    if missing:
        raise ApiError(400, ", ".join(f"{n} is missing" for n in missing), key="error")


def as_int(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} is invalid", key="error") from None


def paginate(request: Request, items: list[Any], params: dict[str, Any]) -> JSONResponse:
    """One page of ``items`` with GitLab's pagination headers."""
    per_page = min(max(as_int(params.get("per_page"), "per_page", 20), 1), 100)
    page = max(as_int(params.get("page"), "page", 1), 1)
    total = len(items)
    pages = max((total + per_page - 1) // per_page, 1)
    body = items[(page - 1) * per_page : page * per_page]
    headers = {
        "X-Total": str(total),
        "X-Total-Pages": str(pages),
        "X-Per-Page": str(per_page),
        "X-Page": str(page),
        "X-Next-Page": str(page + 1) if page < pages else "",
        "X-Prev-Page": str(page - 1) if page > 1 else "",
    }

    def link(p: int, rel: str) -> str:
        return f'<{request.url.include_query_params(page=p, per_page=per_page)}>; rel="{rel}"'

    links = [link(page + 1, "next")] if page < pages else []
    links += [link(page - 1, "prev")] if page > 1 else []
    links += [link(1, "first"), link(pages, "last")]
    headers["Link"] = ", ".join(links)
    return JSONResponse(body, headers=headers)


async def read_params(request: Request) -> dict[str, Any]:
    """The request's parameters as Grape merges them: the query string, then a JSON or form body."""
    out: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        out[key.removesuffix("[]")] = values if key.endswith("[]") else values[-1]
    body = await request.body()
    if body:
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                data = json.loads(body)
            except ValueError:
                raise ApiError(400, "400 Bad request - body is not valid JSON", key="error") from None
            if not isinstance(data, dict):
                raise ApiError(400, "400 Bad request - body must be a JSON object", key="error")
            out.update(data)
        elif "x-www-form-urlencoded" in ctype:
            for key, value in parse_qsl(body.decode(errors="replace"), keep_blank_values=True):
                if key.endswith("[]"):
                    out.setdefault(key[:-2], []).append(value)
                else:
                    out[key] = value
    return out


def avatar(email: str) -> str:
    """GitLab's default avatar: a Gravatar identicon URL."""
    return f"https://www.gravatar.com/avatar/{hashlib.md5(email.encode()).hexdigest()}?s=80&d=identicon"


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
