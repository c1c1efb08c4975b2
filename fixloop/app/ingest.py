"""Turn one document (a scanner report or a webhook body) into signals: decode, detect the source,
parse. Used by ``fixloop ingest`` and by the gateway (``fixloop.app.gateway``).

Errors are ``IngestError`` with one line that names the document and the reason: unreadable,
too large, empty, malformed or truncated JSON, nested too deep, too many values or elements, unknown format, a
field of the wrong type.

Bounded cost (the gateway's limits, issue 14). A document is decoded once, with orjson, and its cost is bounded
before and after that parse:
  * before: ``value_bound(data)``, C-speed byte counts (``bytes.count``), is an upper bound of the number of JSON
    values (every value but the root follows a ``,`` or opens a container: values <= commas + ``{`` + ``[`` + 1);
    only when it is over the limit is the exact structural count taken (``count_values``: the same counts with
    string literals removed by one C-speed ``re.sub``, so commas and brackets inside strings do not count).
    ``TooMany`` (field ``body``) when even that is over ``max_values``: nothing was parsed.
  * after: the nesting depth (``TooDeep``; orjson itself refuses beyond 1,024) and, per format, the exact number
    of elements of each list a parser turns into findings (``ELEMENT_LISTS``: Trivy ``Results`` and their
    ``Vulnerabilities``, Alertmanager ``alerts``, Grype ``matches``, ...): ``TooMany`` naming the list when one
    is over ``max_elements``, before any pydantic model is built.
What the parse holds is then bounded by the body and ``max_values``: orjson's objects cost at most about 120
bytes per value plus four bytes per byte of string (a string with one astral character is stored as UCS-4).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import orjson
from pydantic import ValidationError

from fixloop.core.models import Signal, Source
from fixloop.core.parsing import ParseContext, ParseError, clean, validation_message
from fixloop.integrations import grype, inspection, osv, pip_audit, snyk, trivy
from fixloop.integrations.alertmanager import webhook as alertmanager_webhook
from fixloop.integrations.datadog import webhook as datadog_webhook
from fixloop.integrations.gitlab import security_report as gitlab_report

# Detection order matters only where formats could overlap: the more specific shapes come first.
PARSERS: dict[Source, ModuleType] = {
    Source.TRIVY: trivy,
    Source.GRYPE: grype,
    Source.SNYK: snyk,
    Source.GITLAB: gitlab_report,
    Source.OSV: osv,
    Source.PIP_AUDIT: pip_audit,
    Source.ALERTMANAGER: alertmanager_webhook,
    Source.DATADOG: datadog_webhook,
    Source.FIXLOOP: inspection,
}

DEFAULT_MAX_BYTES = 128 * 1024 * 1024
MAX_DEPTH = 64  # containers nested in containers; real reports and hooks nest fewer than 10
MAX_VALUES = 1_000_000  # JSON values of one document (a 30 MiB real scanner report holds about as many)
MAX_ELEMENTS = 20_000  # elements of one finding list of one document (ELEMENT_LISTS)

# The lists each format's parser turns into signals, as paths (``[]``: every element of a list; the bare ``[]``
# path is a top-level array). Their exact lengths are checked against ``max_elements`` after the JSON parse and
# before the format's pydantic models are built. Field names: the formats' own (see each integrations module).
ELEMENT_LISTS: dict[Source, tuple[str, ...]] = {
    Source.TRIVY: (
        "[]",
        "[].Vulnerabilities",
        "[].Misconfigurations",
        "[].Packages",
        "Results",
        "Results[].Vulnerabilities",
        "Results[].Misconfigurations",
        "Results[].Packages",
        "Resources",
        "Resources[].Results",
        "Resources[].Results[].Vulnerabilities",
        "Resources[].Results[].Misconfigurations",
        "Vulnerabilities",
        "Vulnerabilities[].Results",
        "Vulnerabilities[].Results[].Vulnerabilities",
        "Misconfigurations",
        "Misconfigurations[].Results",
        "Misconfigurations[].Results[].Misconfigurations",
    ),
    Source.GRYPE: ("matches",),
    Source.SNYK: ("[]", "[].vulnerabilities", "vulnerabilities"),
    Source.GITLAB: ("vulnerabilities", "remediations"),
    Source.OSV: (
        "results",
        "results[].packages",
        "results[].packages[].vulnerabilities",
        "results[].packages[].groups",
    ),
    Source.PIP_AUDIT: ("[]", "[].vulns", "dependencies", "dependencies[].vulns"),
    Source.ALERTMANAGER: ("alerts",),
    Source.DATADOG: (),
    Source.FIXLOOP: ("drift", "drift[].versions", "skipped"),
}


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


class TooDeep(IngestError):
    """A document nested deeper than the depth limit (``limit``: containers in containers)."""

    def __init__(self, ref: str, limit: int) -> None:
        super().__init__(ref, f"JSON nested deeper than {limit} levels")
        self.limit = limit


class TooMany(IngestError):
    """A document with more JSON values, or more elements in a finding list, than a limit: ``field`` is ``body``
    (all values) or the list's path (``Results[].Vulnerabilities``), ``count`` what was counted (at least)."""

    def __init__(self, ref: str, field: str, count: int, limit: int, what: str) -> None:
        super().__init__(ref, f"{count} {what} in {field}, over the limit of {limit}")
        self.field = field
        self.count = count
        self.limit = limit


def value_bound(data: bytes | bytearray) -> int:
    """An upper bound of the number of JSON values in ``data`` (keys not counted): ``,`` + ``{`` + ``[`` + 1,
    C-speed byte counts. Never under the exact number for valid JSON (every value but the root is an element or
    member after the first, so after a comma, or a container's first, so after a ``{`` or ``[``)."""
    return data.count(b",") + data.count(b"{") + data.count(b"[") + 1


# a JSON string literal (RFC 8259 section 7), unrolled so that sre runs its tight loop over plain characters
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def count_values(data: bytes | bytearray) -> int:
    """``value_bound`` of ``data`` with its string literals removed (one ``re.sub``; a copy of at most the size of
    ``data``): exact for the structure, still never under the number of values."""
    return value_bound(_STRING.sub(b"", data))


def nesting_depth_over(doc: object, limit: int) -> bool:
    """Whether decoded JSON ``doc`` has containers nested deeper than ``limit`` (``[]`` is depth 1, ``[[]]`` 2);
    iterative, stops at the first container too deep."""
    if not isinstance(doc, (dict, list)):
        return False
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:  # type: ignore[attr-defined]
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def decode(data: bytes | bytearray, ref: str, *, max_depth: int = MAX_DEPTH, max_values: int | None = None) -> object:
    """Decode JSON bytes (UTF-8, an optional BOM) with orjson, raising ``IngestError`` for empty or malformed
    input, ``TooMany`` (before parsing) for more than ``max_values`` JSON values (None: no limit) and ``TooDeep``
    for containers nested deeper than ``max_depth``."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data or data.isspace():  # (no copy of the body, unlike strip())
        raise IngestError(ref, "empty document")
    bound = value_bound(data)
    if max_values is not None and bound > max_values and (exact := count_values(data)) > max_values:
        raise TooMany(ref, "body", exact, max_values, "JSON values")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        if "depth" in e.msg or "ecursion" in e.msg:  # orjson's own limit (1,024 levels)
            raise TooDeep(ref, max_depth) from None
        what = "truncated JSON" if e.pos >= len(data.rstrip()) else "malformed JSON"
        raise IngestError(ref, f"{what}: {clean(e.msg, 200)} at line {e.lineno} column {e.colno}") from None
    # fewer containers than the limit cannot nest deeper than it: small documents skip the walk
    if data.count(b"{") + data.count(b"[") > max_depth and nesting_depth_over(doc, max_depth):
        raise TooDeep(ref, max_depth)
    return doc


def _lists_at(doc: object, path: str) -> list[list]:
    """The lists at ``path`` (``a[].b``: key ``a``, every element, key ``b``; ``[]``: the top-level array)."""
    found: list[object] = [doc]
    steps = path.replace("[]", ".[]").strip(".").split(".")
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if step == "[]":
            found = [x for v in found if isinstance(v, list) for x in v] if not last else found
        else:
            found = [v[step] for v in found if isinstance(v, dict) and step in v]
    return [v for v in found if isinstance(v, list)]


def check_elements(doc: object, source: Source, ref: str, max_elements: int) -> None:
    """``TooMany`` naming the first of ``source``'s ``ELEMENT_LISTS`` whose elements (summed over every list at
    that path) are more than ``max_elements``; exact counts of the decoded document, before pydantic."""
    for path in ELEMENT_LISTS[source]:
        if path == "[]" and not isinstance(doc, list):
            continue
        total = sum(len(v) for v in _lists_at(doc, path))
        if total > max_elements:
            raise TooMany(ref, path, total, max_elements, "elements")


def parse_document(
    doc: object,
    *,
    ref: str,
    received_at: datetime,
    source: Source | None = None,
    max_elements: int | None = None,
) -> IngestResult:
    """Signals of one decoded document. ``source`` forces the parser; otherwise it is detected. ``max_elements``:
    ``check_elements`` before the format's parser runs (None: no limit)."""
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
    if max_elements is not None:
        check_elements(doc, source, ref, max_elements)
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
