"""What every input parser shares: the parse context, and the normalisations of severity, ecosystem,
versions, timestamps and untrusted text.

Parsers live in ``integrations/<source>``; each turns one already-decoded JSON document into signals
through a ``ParseContext``, which also collects the warnings (records that are not findings, entries a
scanner skipped) so that nothing is dropped without a word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from fixloop.core.models import SHORT_MAX, Severity, Signal, utc


class WireModel(BaseModel):
    """Base of every vendor wire model: fields fixloop does not read are ignored (vendors add fields all the time)."""

    model_config = ConfigDict(extra="ignore")


class ParseError(ValueError):
    """The document is of a known format but cannot be read as it (the message names the field)."""


@dataclass
class ParseContext:
    """Per-document state handed to a parser.

    ref: where the document came from (a file path or ``delivery:<id>``); each signal's ``raw_ref``
      is ``<ref>#<JSON pointer>``.
    received_at: when fixloop got the document; the fallback ``observed_at`` when the format has no time.
    """

    ref: str
    received_at: datetime
    signals: list[Signal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0
    _seen: set[str] = field(default_factory=set)

    def pointer(self, *path: str | int) -> str:
        """``<ref>#<JSON pointer>`` (RFC 6901) of the record at ``path``; no path is the whole document."""
        if not path:
            return self.ref + "#"
        return (
            self.ref
            + "#/"
            + "/".join(str(p) if isinstance(p, int) else p.replace("~", "~0").replace("/", "~1") for p in path)
        )

    def emit(self, signal: Signal) -> None:
        """Keep ``signal`` unless one with the same fingerprint was already emitted from this document
        (the same finding listed twice, e.g. once per dependency path, is one signal)."""
        if signal.fingerprint in self._seen:
            self.duplicates += 1
            return
        self._seen.add(signal.fingerprint)
        self.signals.append(signal)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def validation_message(err: ValidationError) -> str:
    """One line naming the first offending field of a pydantic ``ValidationError``."""
    first = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(document)"
    more = err.error_count() - 1
    tail = f" (and {more} more)" if more > 0 else ""
    return f"field {clean(loc, 200)}: {first.get('msg', 'invalid')}{tail}"


# ---------------------------------------------------------------- text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean(value: object, limit: int | None = SHORT_MAX) -> str:
    """Untrusted text made safe to carry: control characters folded to a space, trimmed, and cut to
    ``limit`` characters (a cut ends with an ellipsis; None: not cut)."""
    s = value if isinstance(value, str) else str(value)
    if (limit is None or len(s) <= limit) and s.isprintable():  # the common case: nothing to fold or cut
        return s.strip()
    if _CONTROL.search(s):
        s = _CONTROL.sub(" ", s)
    s = s.strip()
    if limit is not None and len(s) > limit:
        s = s[: limit - 1].rstrip() + "\u2026"
    return s


def opt(value: object, limit: int | None = None) -> str | None:
    """``clean(value, limit)``, or None for None / empty. Without ``limit`` nothing is cut: a signal's field is cut
    to its bound by ``Signal`` itself, which counts the cut in ``Signal.truncated``."""
    if value is None:
        return None
    if type(value) is str and (limit is None or len(value) <= limit) and value.isprintable():  # clean()'s fast path
        return value.strip() or None
    return clean(value, limit) or None


def title(value: object, limit: int | None = None) -> str:
    """``clean(value, limit)``, never empty. A signal's title is not cut here: ``Signal`` cuts it to ``TITLE_MAX``
    and counts the cut; a work item's title is cut by its caller (``limit=TITLE_MAX``)."""
    return clean(value, limit) or "(untitled)"


# ---------------------------------------------------------------- severity

_SEVERITY_WORDS = {
    "critical": Severity.CRITICAL,
    "crit": Severity.CRITICAL,
    "high": Severity.HIGH,
    "error": Severity.HIGH,
    "important": Severity.HIGH,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "warning": Severity.MEDIUM,
    "warn": Severity.MEDIUM,
    "low": Severity.LOW,
    "minor": Severity.LOW,
    "negligible": Severity.INFO,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "none": Severity.INFO,
    "unknown": Severity.UNKNOWN,
    "undefined": Severity.UNKNOWN,
}
_SEVERITY_WORDS.update({k.upper(): v for k, v in list(_SEVERITY_WORDS.items())})
_SEVERITY_WORDS.update({k.capitalize(): v for k, v in list(_SEVERITY_WORDS.items())})


def severity(word: object) -> Severity:
    """Normalise a vendor severity word (``CRITICAL``, ``High``, ``Negligible``, ``MODERATE``, ...)."""
    if word is None:
        return Severity.UNKNOWN
    found = _SEVERITY_WORDS.get(word) if isinstance(word, str) else None  # exact spelling: the common case
    return found or _SEVERITY_WORDS.get(str(word).strip().lower(), Severity.UNKNOWN)


def severity_from_score(score: float | None) -> Severity:
    """CVSS v3 qualitative rating of a base score (FIRST CVSS v3.1 specification, section 5)."""
    if score is None:
        return Severity.UNKNOWN
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    if score > 0.0:
        return Severity.LOW
    return Severity.INFO


@lru_cache(maxsize=4096)
def cvss_vector_score(vector: str) -> float | None:
    """Base score of a CVSS v3.x or v4 vector string, None if it does not parse."""
    try:
        if vector.startswith("CVSS:4"):
            from cvss import CVSS4

            return float(CVSS4(vector).base_score)
        if vector.startswith("CVSS:3"):
            from cvss import CVSS3

            return float(CVSS3(vector).scores()[0])
        from cvss import CVSS2

        return float(CVSS2(vector).scores()[0])
    except Exception:  # the cvss library raises its own assorted errors on a bad vector
        return None


# ---------------------------------------------------------------- ecosystems and versions

# Scanner package types -> our ecosystem names (purl types where one exists).
_ECOSYSTEMS = {
    # OS package managers, and the distributions that use them (Trivy's Result.Type is the distro)
    "apk": "apk",
    "alpine": "apk",
    "wolfi": "apk",
    "chainguard": "apk",
    "deb": "deb",
    "debian": "deb",
    "ubuntu": "deb",
    "dpkg": "deb",
    "rpm": "rpm",
    "redhat": "rpm",
    "centos": "rpm",
    "amazon": "rpm",
    "oracle": "rpm",
    "photon": "rpm",
    "alma": "rpm",
    "almalinux": "rpm",
    "rocky": "rpm",
    "fedora": "rpm",
    "suse": "rpm",
    "opensuse": "rpm",
    "opensuse-leap": "rpm",
    "opensuse.leap": "rpm",
    "opensuse.tumbleweed": "rpm",
    "sles": "rpm",
    "suse linux enterprise server": "rpm",
    "cbl-mariner": "rpm",
    "azurelinux": "rpm",
    # language ecosystems
    "npm": "npm",
    "yarn": "npm",
    "pnpm": "npm",
    "node-pkg": "npm",
    "javascript": "npm",
    "bun": "npm",
    "pip": "pypi",
    "pipenv": "pypi",
    "poetry": "pypi",
    "python": "pypi",
    "python-pkg": "pypi",
    "pypi": "pypi",
    "uv": "pypi",
    "conda-pkg": "conda",
    "gomod": "go",
    "gobinary": "go",
    "go": "go",
    "go-module": "go",
    "golang": "go",
    "gomodules": "go",
    "golangdep": "go",
    "govendor": "go",
    "jar": "maven",
    "pom": "maven",
    "gradle": "maven",
    "maven": "maven",
    "java-archive": "maven",
    "sbt": "maven",
    "nuget": "nuget",
    "dotnet-core": "nuget",
    "dotnet-deps": "nuget",
    "packages-props": "nuget",
    "bundler": "gem",
    "gemspec": "gem",
    "gem": "gem",
    "rubygems": "gem",
    "composer": "composer",
    "packagist": "composer",
    "php": "composer",
    "composer-vendor": "composer",
    "cargo": "cargo",
    "rust-binary": "cargo",
    "rust-crate": "cargo",
    "crates.io": "cargo",
    "cocoapods": "cocoapods",
    "swift": "swift",
    "hex": "hex",
    "pub": "pub",
    "conan": "conan",
    "binary": "generic",
    "generic": "generic",
}


def ecosystem(kind: object) -> str | None:
    """Our ecosystem name for a scanner's package type / distro family / OSV ecosystem, or None.
    Unknown names pass through lower-cased (``Signal`` bounds them), so nothing is silently relabelled."""
    if not kind:
        return None
    key = str(kind).strip().lower()
    return _ECOSYSTEMS.get(key) or _ECOSYSTEMS.get(key.split(":", 1)[0]) or opt(key)


def ecosystem_from_purl(purl: str | None) -> str | None:
    """The ecosystem of a package URL (``pkg:<type>/...``, purl-spec), or None."""
    if not purl or not purl.startswith("pkg:"):
        return None
    kind = purl[4:].split("/", 1)[0]
    return ecosystem(kind)


def _univers_class(eco: str | None):  # noqa: ANN202 - univers has no public base type to name here
    from univers import versions as v

    return {
        "npm": v.SemverVersion,
        "go": v.GolangVersion,
        "maven": v.MavenVersion,
        "nuget": v.NugetVersion,
        "gem": v.RubygemsVersion,
        "composer": v.ComposerVersion,
        "cargo": v.SemverVersion,
        "deb": v.DebianVersion,
        "rpm": v.RpmVersion,
        "apk": v.AlpineLinuxVersion,
    }.get(eco or "")


_UNCOMPARABLE = object()


@lru_cache(maxsize=16384)
def version_key(eco: str | None, version: str) -> object:
    """A comparable form of ``version`` under ``eco``'s rules (``packaging`` for PyPI, univers for the
    others), or ``_UNCOMPARABLE``. Cached: the same versions recur across the findings of a report."""
    try:
        if eco == "pypi":
            from packaging.version import Version

            return Version(version)
        cls = _univers_class(eco)
        return _UNCOMPARABLE if cls is None else cls(version)
    except Exception:  # packaging and univers raise assorted errors for versions outside their grammar
        return _UNCOMPARABLE


def _qualifier(version: str) -> str:
    """The trailing ``-qualifier`` of a Maven-style version (``30.0-jre`` -> ``jre``), else ""."""
    head, sep, tail = version.rpartition("-")
    return tail.lower() if sep and head and tail and not tail[0].isdigit() else ""


_CONSTRAINT_OP = re.compile(r"^(?:~>|\^|>=|=>|==|>|=|~=|~)\s*")


def split_versions(value: str | Iterable[str] | None) -> list[str]:
    """Fixed versions as a list: Trivy joins several with ", " in one string, and for Ruby writes them as
    constraints (``~> 5.2.4.3, >= 6.0.3.1``): the operator is dropped, the version kept."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = _CONSTRAINT_OP.sub("", part.strip())
            if part and part not in out:
                out.append(clean(part, None))  # Signal bounds fixed_versions (and counts what it cuts)
    return out


# One token of version characters starting with a digit (a leading ``v``: Go, Composer): PEP 440's ``!`` and ``+``,
# Debian's ``:`` and ``~``, Alpine's ``_p``, RPM's ``^``. Not a state word, a placeholder or a constraint.
_VERSION_TOKEN = re.compile(r"[vV]?[0-9][0-9A-Za-z.+~:_!^-]*")
INVALID_FIX = "invalid-fix-version"  # fix_status: versions listed, none a version of the ecosystem
NO_FIX_ABOVE = "no-fix-above-installed"  # fix_status: valid versions listed, none above the installed one


def valid_version(eco: str | None, version: str) -> bool:
    """Whether ``version`` can be a fixed version under ``eco``: one token of version characters starting with a
    digit (``v1.2`` too), and, for an ecosystem whose grammar fixloop knows (PyPI's PEP 440 with ``packaging``;
    univers' npm, Go, Maven, NuGet, RubyGems, Composer, Cargo, Debian, RPM and Alpine), one that grammar parses.
    Grype's placeholder ``fix_1``, a state word (``wont-fix``), a text (``1.0 or later``) are not; univers alone
    takes any string as a Maven or RPM version, hence the token check first."""
    if len(version) > SHORT_MAX or not _VERSION_TOKEN.fullmatch(version):
        return False
    if eco == "pypi" or _univers_class(eco) is not None:
        return version_key(eco, version) is not _UNCOMPARABLE
    return True


def lowest_fix(eco: str | None, installed: str | None, candidates: list[str]) -> str | None:
    """The lowest valid candidate version above ``installed``, compared by the ecosystem's own rules
    (univers: PEP 440, semver, Maven, Debian, RPM, APK, ...). A candidate that is not a valid version of the
    ecosystem (``valid_version``) is never the answer. Where the installed version carries a Maven-style qualifier
    (``29.0-jre``), candidates of the same line are preferred (``30.0-jre``, not ``30.0-android``). Falls back to
    the first valid candidate when versions cannot be compared, and takes a single valid candidate as the scanner
    gives it; None when there is no valid candidate, or none of several is above ``installed``."""
    candidates = [c for c in candidates if valid_version(eco, c)]
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    pool = candidates
    if installed:
        q = _qualifier(installed)
        same = [c for c in candidates if _qualifier(c) == q]
        if q and same:
            pool = same
    keys = [version_key(eco, c) for c in pool]
    floor = version_key(eco, installed) if installed else None
    if floor is _UNCOMPARABLE or any(k is _UNCOMPARABLE for k in keys):
        return pool[0]
    above = [(k, c) for k, c in zip(keys, pool, strict=True) if floor is None or k > floor]
    if not above:
        return None
    return min(above, key=lambda kc: kc[0])[1]


def resolve_fix(
    eco: str | None, installed: str | None, listed: list[str], status: str | None
) -> tuple[str | None, str | None]:
    """``(fixed_version, fix_status)`` of a finding whose scanner lists the fixed versions ``listed`` and says
    ``status`` (its own word, or None): ``lowest_fix`` and ``status``. When versions are listed but none is taken,
    the status names why: ``invalid-fix-version`` (none is a valid version of ``eco``: Grype's placeholder
    ``fix_1``) or ``no-fix-above-installed``; the finding stays a finding without a fix (a risk digest, never a bump
    to a non-version) and says so."""
    fixed = lowest_fix(eco, installed, listed)
    if fixed is None and listed:
        return None, NO_FIX_ABOVE if any(valid_version(eco, v) for v in listed) else INVALID_FIX
    return fixed, status


def highest_version(eco: str | None, versions: list[str]) -> str | None:
    """The highest of ``versions`` by the ecosystem's rules (the version that fixes every advisory when each
    one names its own lowest fix); the last one listed when they cannot be compared."""
    if not versions:
        return None
    keys = [version_key(eco, v) for v in versions]
    if any(k is _UNCOMPARABLE for k in keys):
        return versions[-1]
    return max(zip(keys, versions, strict=True), key=lambda kv: kv[0])[1]


# ---------------------------------------------------------------- time


def epoch_ms(value: object) -> datetime | None:
    """A Datadog-style epoch-milliseconds value (number or numeric string) as UTC, or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        ms = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


_DATETIME = TypeAdapter(datetime)


def timestamp(value: str | None) -> datetime | None:
    """An RFC 3339 text timestamp as an aware datetime; None when absent or unparseable (a report's
    own time is optional: the caller falls back to the time it received the document)."""
    if not value:
        return None
    try:
        return aware(_DATETIME.validate_python(value))
    except ValidationError:
        return None


def aware(dt: datetime | None) -> datetime | None:
    """A parsed timestamp made timezone-aware, or None for None and for Go's zero time (year 1)."""
    if dt is None or dt.year <= 1:
        return None
    return utc(dt)


def yaml_mapping(text: str, what: str = "fixloop.yaml") -> Mapping[str, Any]:
    """The YAML mapping of ``text`` (ruamel's safe loader; an empty document is ``{}``). Raises ``ValueError``
    naming ``what`` for text that is not YAML or whose document is not a mapping."""
    from ruamel.yaml import YAML  # imported where it is needed: the parsers' start-up does not pay for it

    try:
        doc = YAML(typ="safe", pure=True).load(text) or {}
    except Exception as e:  # ruamel's YAMLError family
        raise ValueError(f"{what}: not valid YAML ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"{what}: not a mapping")
    return doc


def package_name(ecosystem: str | None, package: str | None) -> str:
    """The name that identifies a package within its ecosystem: PEP 503's normalised form for PyPI, the name as
    given otherwise ("" for None)."""
    name = package or ""
    return canonicalize_name(name) if ecosystem == "pypi" and name else name
