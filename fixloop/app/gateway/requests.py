"""Request plumbing shared by every endpoint: the content type, the body read within its limit, the one JSON parse,
and the error answer ``{"error": message, "field": name}`` (``Rejected``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request, Response
from pydantic import ValidationError

from fixloop.app.gateway.settings import GatewaySettings
from fixloop.app.ingest import IngestError, IngestResult, TooDeep, TooMany, decode, parse_document
from fixloop.core.models import Source
from fixloop.core.parsing import ParseError, clean

# The field each format is recognised by: named in the 400 answer when a body is not that format.
FORMAT_FIELDS = {
    Source.DATADOG: "title",
    Source.ALERTMANAGER: "alerts",
    Source.TRIVY: "SchemaVersion",
    Source.GITLAB: "vulnerabilities",
    Source.GRYPE: "matches",
    Source.SNYK: "vulnerabilities",
    Source.OSV: "results",
    Source.PIP_AUDIT: "dependencies",
    Source.FIXLOOP: "fixloop_inspection",
}


class Rejected(Exception):
    """A request answered with an error: ``status``, a metrics ``reason``, the message and the field it is about."""

    def __init__(
        self, status: int, reason: str, error: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.reason = reason
        self.error = error
        self.field = field
        self.headers = headers


class Unavailable(Rejected):
    """Temporal could not be reached or did not answer in time: 503, the sender retries."""

    def __init__(self, what: str = "nothing was recorded") -> None:
        super().__init__(
            503, "unavailable", f"Temporal is unavailable: {what}; retry later", None, {"Retry-After": "5"}
        )


def json_answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON answer (orjson) with ``status`` and ``headers``."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


_UNION_MEMBER = frozenset({"str", "int", "float", "bool", "bytes", "none"})


def json_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a JSON path: ``("alerts", 0, "labels")`` -> ``alerts[0].labels``. The members
    pydantic names inside a union (``("tags", "list[str]", 0)``) are left out: they are types, not fields."""
    out = ""
    for part in loc:
        if isinstance(part, str) and (part in _UNION_MEMBER or "[" in part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return clean(out, 200) or "body"


def check_content_type(request: Request) -> None:
    """415 unless the body is JSON (``application/json`` or ``application/*+json``, UTF-8) and not encoded."""
    raw = request.headers.get("content-type", "")
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    json_type = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
    if not json_type or charset not in (None, "utf-8", "utf8"):
        shown = clean(raw, 80) or "none"
        raise Rejected(415, "unsupported_media_type", f"Content-Type {shown!r}: send application/json", "Content-Type")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Rejected(
            415,
            "unsupported_media_type",
            f"Content-Encoding {clean(encoding, 40)!r} is not accepted",
            "Content-Encoding",
        )


async def read_body(request: Request, limit: int) -> bytearray:
    """The body, read up to ``limit`` bytes: 413 as soon as it is larger (declared or while reading). One buffer
    that grows with what arrives (nothing is allocated for a ``Content-Length`` that is only declared) and is not
    copied afterwards. ``ClientDisconnect`` if the client goes away first."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Rejected(400, "malformed", "Content-Length is not a number", "Content-Length")
        if int(declared) > limit:
            raise Rejected(413, "too_large", f"body of {int(declared)} bytes is over the {limit}-byte limit", "body")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise Rejected(413, "too_large", f"body is over the {limit}-byte limit", "body")
    return buf


def decode_body(body: bytes | bytearray, settings: GatewaySettings) -> object:
    """The body as JSON, parsed once (``fixloop.app.ingest.decode``: orjson) within the limits every endpoint shares:
    400 naming ``body`` for what is not JSON or is nested deeper than FIXLOOP_GATEWAY_MAX_JSON_DEPTH, 413 naming
    ``body`` for more JSON values than FIXLOOP_GATEWAY_MAX_JSON_VALUES (counted before the parse)."""
    try:
        return decode(body, "body", max_depth=settings.max_json_depth, max_values=settings.max_json_values)
    except TooMany as e:
        raise Rejected(413, "too_large", f"{e.reason} (FIXLOOP_GATEWAY_MAX_JSON_VALUES)", "body") from None
    except TooDeep as e:
        raise Rejected(400, "malformed", f"{e.reason} (FIXLOOP_GATEWAY_MAX_JSON_DEPTH)", "body") from None
    except IngestError as e:
        raise Rejected(400, "malformed", e.reason, "body") from None


def parse_signals(body: bytes | bytearray, ref: str, source: Source | None, settings: GatewaySettings) -> IngestResult:
    """The signals of one document, parsed exactly as ``fixloop ingest`` does (``fixloop.app.ingest.parse_document``),
    within ``settings``' limits. 400 for malformed or too deeply nested JSON or a body that is not ``source``'s
    format (naming the field that format is recognised by), 413 for too many JSON values (``body``) or elements of
    a finding list (naming the list, e.g. ``Results``), 422 for a document of the format with invalid values
    (naming the first offending field)."""
    doc = decode_body(body, settings)
    try:
        return parse_document(
            doc, ref=ref, received_at=datetime.now(UTC), source=source, max_elements=settings.max_elements
        )
    except TooMany as e:
        raise Rejected(413, "too_large", f"{e.reason} (FIXLOOP_GATEWAY_MAX_ELEMENTS)", e.field) from None
    except IngestError as e:
        # parse_document raises ``from None``; what it caught is still the context (PEP 415)
        cause = e.__context__
        if isinstance(cause, ValidationError):
            first = cause.errors(include_url=False)[0]
            raise Rejected(422, "invalid", e.reason, json_path(first.get("loc", ()))) from None
        if isinstance(cause, ParseError):
            raise Rejected(422, "invalid", e.reason, "body") from None
        named = FORMAT_FIELDS.get(source) if source is not None and isinstance(doc, dict) else None
        raise Rejected(400, "malformed", e.reason, named or "body") from None
