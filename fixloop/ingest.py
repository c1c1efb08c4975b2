"""Turn one document (a scanner report or a webhook body) into signals: decode, detect the source,
parse. Used by ``fixloop ingest`` and, later, by the gateway.

Errors are ``IngestError`` with one line that names the document and the reason: unreadable,
too large, empty, malformed or truncated JSON, unknown format, a field of the wrong type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import orjson
from pydantic import ValidationError

from fixloop.models import Signal, Source
from fixloop.parsing import ParseContext, ParseError, clean, validation_message
from integrations import alertmanager, grype, osv, pip_audit, snyk, trivy
from integrations.datadog import webhook as datadog_webhook
from integrations.gitlab import security_report as gitlab_report

# Detection order matters only where formats could overlap: the more specific shapes come first.
PARSERS: dict[Source, ModuleType] = {
    Source.TRIVY: trivy,
    Source.GRYPE: grype,
    Source.SNYK: snyk,
    Source.GITLAB: gitlab_report,
    Source.OSV: osv,
    Source.PIP_AUDIT: pip_audit,
    Source.ALERTMANAGER: alertmanager,
    Source.DATADOG: datadog_webhook,
}

DEFAULT_MAX_BYTES = 128 * 1024 * 1024


class IngestError(Exception):
    """A document that gave no signals; ``str()`` is one line: ``<ref>: <reason>``."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"{ref}: {reason}")
        self.ref = ref
        self.reason = reason


@dataclass
class IngestResult:
    ref: str
    source: Source | None
    signals: list[Signal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0


def detect(doc: object) -> Source | None:
    """The source whose format ``doc`` (decoded JSON) has, or None."""
    for source, parser in PARSERS.items():
        if parser.matches(doc):
            return source
    return None


def decode(data: bytes, ref: str) -> object:
    """Decode JSON bytes (UTF-8, an optional BOM), raising ``IngestError`` for empty or malformed input."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise IngestError(ref, "empty document")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        what = "truncated JSON" if e.pos >= len(data.rstrip()) else "malformed JSON"
        raise IngestError(ref, f"{what}: {clean(e.msg, 200)} at line {e.lineno} column {e.colno}") from None


def parse_document(
    doc: object,
    *,
    ref: str,
    received_at: datetime,
    source: Source | None = None,
) -> IngestResult:
    """Signals of one decoded document. ``source`` forces the parser; otherwise it is detected."""
    if source is None:
        source = detect(doc)
        if source is None:
            if isinstance(doc, list) and not doc:
                return IngestResult(ref=ref, source=None, warnings=[f"{ref}: empty array: no findings"])
            raise IngestError(ref, f"unknown format: {_describe(doc)} is not a document of {_known()}")
    elif not PARSERS[source].matches(doc):
        seen = detect(doc)
        raise IngestError(
            ref,
            f"not a {source.value} document" + (f" (it looks like {seen.value})" if seen else f": {_describe(doc)}"),
        )
    ctx = ParseContext(ref=ref, received_at=received_at)
    try:
        PARSERS[source].parse(doc, ctx)
    except ValidationError as e:
        raise IngestError(ref, f"not a valid {source.value} document: {validation_message(e)}") from None
    except ParseError as e:
        raise IngestError(ref, f"not a valid {source.value} document: {e}") from None
    return IngestResult(ref=ref, source=source, signals=ctx.signals, warnings=ctx.warnings, duplicates=ctx.duplicates)


def ingest_file(
    path: str | os.PathLike[str], *, source: Source | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> IngestResult:
    """Read, decode and parse one file. ``observed_at`` falls back to the file's modification time.
    Raises ``IngestError`` (never another exception for bad input)."""
    p = Path(path)
    ref = str(p)
    try:
        st = p.stat()
        if p.is_dir():
            raise IngestError(ref, "is a directory, not a report")
        if st.st_size > max_bytes:
            raise IngestError(
                ref, f"file is {_size(st.st_size)}, over the {_size(max_bytes)} limit (FIXLOOP_INGEST_MAX_BYTES)"
            )
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise IngestError(ref, f"cannot read: {e.strerror or e}") from None
    if len(data) > max_bytes:  # grew while we looked
        raise IngestError(ref, f"file is over the {_size(max_bytes)} limit (FIXLOOP_INGEST_MAX_BYTES)")
    received_at = datetime.fromtimestamp(st.st_mtime, tz=UTC)
    return parse_document(decode(data, ref), ref=ref, received_at=received_at, source=source)


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} bytes"


def _known() -> str:
    return ", ".join(s.value for s in PARSERS)


def _describe(doc: object) -> str:
    if isinstance(doc, dict):
        keys = [clean(k, 40) for k in list(doc)[:8]]
        more = ", ..." if len(doc) > 8 else ""
        return f"an object with keys {', '.join(keys) or '(none)'}{more}"
    if isinstance(doc, list):
        return f"an array of {len(doc)} {type(doc[0]).__name__ if doc else 'item'}s"
    return f"a JSON {type(doc).__name__}"
